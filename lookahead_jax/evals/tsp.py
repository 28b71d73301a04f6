"""The tsp evaluator: tours decoded by the model against the heuristics and the optimum.

On the first `eval.task_instances` test instances of each city count n (eval.test_split's
`{split}_n{n}` splits, so every count gets as many): the prompt is [EOD] + the city
triples + the separator, and the next n tokens are read as the tour. Methods:

  greedy              the model's most probable next city, step by step
  beam                beam search of width max(eval.widths), its most probable tour
  amplified           sampling from the mixture of the model and its beam lookahead
                      (lookahead.*: kind, width, horizon, temperature, lam, scheme,
                      mixture), the sampler of evals/generation.py
  mcts                MCTS as the planner (mcts.py; lookahead.* as kind "mcts": K = its
                      width children a node, a tree H-1 deep, its simulations, policy and
                      reward): at every step the city q_MCTS weighs most, the search's own
                      move (lam 1, no draw); at the default budget as many model calls a
                      step as beam lookahead's
  nearest_neighbour,
  farthest_insertion,
  random_insertion    the heuristics of data/tsp_tours.py, no model

Per n and method: the share of valid tours, the mean optimality gap of the valid ones
against the exact optimum (Held-Karp, the dataset's tour) with a 95% bootstrap interval
over instances, and the share that is optimal.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lookahead_jax import decoding, evals, report, stats
from lookahead_jax import lookahead as lookahead_lib
from lookahead_jax.data import builders, registry, tsp, tsp_tours
from lookahead_jax.settings import Settings

NAME = tsp.NAME
MODEL_METHODS = ("greedy", "beam", "amplified", "mcts")
METHODS = MODEL_METHODS + tuple(tsp_tours.HEURISTICS)


def instances(settings: Settings) -> dict[int, tuple[np.ndarray, np.ndarray]]:
  """{n: (coords int32 [k, n, 2], optimal tours int32 [k, n])}: the first
  eval.task_instances test instances of each city count."""
  options, ev = settings.data.options, settings.eval
  out = {}
  for n in tsp.Tsp.make_config(**options).levels:
    records = builders.data_source(NAME, f"{ev.test_split}_n{n}", settings.data.data_dir,
                                   **options)
    k = min(ev.task_instances, len(records))
    rows = records.__getitems__(list(range(k)))
    out[n] = (np.stack([r["coords"] for r in rows]), np.stack([r["tour"] for r in rows]))
  return out


def model_tours(params, coords: np.ndarray, settings: Settings) -> dict[str, np.ndarray]:
  """{method: tokens int32 [k, n]} the model's continuations of the instances' prompts."""
  tok, model_cfg = settings.tokenizer, settings.model
  n = coords.shape[1]
  prompts, _ = tok.examples(coords, None)
  prompts = jnp.asarray(np.concatenate([np.full((len(coords), 1), tok.eod_id), prompts], 1))
  rng = jax.random.key(settings.eval.seed)
  mix = settings.mixture
  greedy = decoding.generate(params, prompts, rng, config=model_cfg, max_new_tokens=n)
  beams = decoding.beam_search(params, prompts, config=model_cfg,
                               beam_size=max(settings.eval.widths), max_new_tokens=n)
  amplified = lookahead_lib.sample_amplified(
      params, prompts, rng, None, mix.temperature, mix.lam, mix.beta, config=model_cfg,
      lookahead=settings.lookahead, max_new_tokens=n, scheme=mix.scheme, mixture=mix.mixture,
      pad_id=tok.pad_id)
  searched = lookahead_lib.sample_amplified(
      params, prompts, rng, None, 1.0, 1.0, mix.beta, config=model_cfg,
      lookahead=settings.lookahead.as_kind("mcts"), max_new_tokens=n, pad_id=tok.pad_id,
      greedy=True)
  return {"greedy": np.asarray(greedy), "beam": np.asarray(beams.sequences[:, 0]),
          "amplified": np.asarray(amplified), "mcts": np.asarray(searched)}


def gaps(coords: np.ndarray, optimal: np.ndarray, tours: np.ndarray) -> np.ndarray:
  """float64 [k]: optimality gap of each tour int [k, n]; NaN where it is not a tour."""
  n = coords.shape[1]
  valid = (np.sort(tours, axis=1) == np.arange(n)).all(axis=1)
  safe = np.where(valid[:, None], tours, optimal)
  gap = tsp_tours.lengths(coords, safe) / tsp_tours.lengths(coords, optimal) - 1.0
  gap = np.where(np.abs(gap) <= 1e-9, 0.0, gap)
  return np.where(valid, gap, np.nan)


def summary(gap: np.ndarray, resamples: int, seed: int) -> dict[str, Any]:
  """valid share, mean gap of the valid tours with its 95% bootstrap interval, optimal
  share (of the valid ones) and the instance count."""
  valid = np.isfinite(gap)
  row = dict(instances=len(gap), valid=float(valid.mean()), gap=float("nan"),
             gap_interval=[float("nan")] * 2, optimal=0.0)
  if valid.any():
    g = gap[valid]
    lo, hi = stats.bootstrap_ratio(g, np.ones_like(g),
                                   stats.resample_counts(len(g), resamples, seed))
    row.update(gap=float(g.mean()), gap_interval=[float(lo), float(hi)],
               optimal=float((g == 0.0).mean()))
  return row


def tour_figures(params, settings: Settings) -> dict[str, Any]:
  """{method: {n: summary}} for every method of METHODS."""
  ev, tok = settings.eval, settings.tokenizer
  out: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in METHODS}
  for n, (coords, optimal) in instances(settings).items():
    found = {m: t - tok.city_id(0) for m, t in model_tours(params, coords, settings).items()}
    found.update({m: fn(coords) for m, fn in tsp_tours.HEURISTICS.items()})
    for method, tours in found.items():
      out[method][n] = summary(gaps(coords, optimal, tours), ev.bootstrap, ev.seed)
  return out


def table(tours: dict[str, Any]) -> str:
  """Mean optimality gap [95% interval] per city count and method, with the valid share
  of the model's tours."""
  headers = ["cities"] + [m for m in tours]
  rows = []
  for n in sorted(next(iter(tours.values()))):
    cells = [str(n)]
    for method, levels in tours.items():
      r = levels[n]
      cell = f"{r['gap']:.2%} [{r['gap_interval'][0]:.2%}, {r['gap_interval'][1]:.2%}]"
      cells.append(cell + (f" v{r['valid']:.2f}" if method in MODEL_METHODS else ""))
    rows.append(cells)
  return report.table(headers, rows, title="TSP tours on the test split: mean optimality gap "
                      "of the valid tours [95% bootstrap interval] (v: valid share)")


def _mean_gap(tours: dict[str, Any], method: str) -> float | None:
  """Mean optimality gap of a decoding method over the city counts (valid tours only)."""
  levels = tours.get(method)
  if not levels:
    return None
  gaps_ = [(row["gap"], row["instances"] * row["valid"]) for row in levels.values()
           if row["valid"] > 0]
  weight = sum(w for _, w in gaps_)
  return sum(g * w for g, w in gaps_) / weight if weight else float("nan")


class Evaluator(evals.Base):
  """The tours of the module docstring, on a tsp run."""

  name = NAME
  columns = (evals.Column("tsp_greedy_gap", "tsp greedy gap", ".3f"),
             evals.Column("tsp_beam_gap", "tsp beam gap", ".3f"))

  def applies(self, context: evals.Context) -> bool:
    return registry.base_name(context.settings.data.name) == NAME

  def evaluate(self, params, context: evals.Context) -> dict[str, Any]:
    return tour_figures(params, context.settings)

  def table(self, figures: dict[str, Any], report_: dict[str, Any]) -> str:
    del report_
    return table(figures)

  def run_figures(self, figures: dict[str, Any], report_: dict[str, Any],
                  best_rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The mean gap of greedy and beam tours."""
    del report_, best_rows
    return {"tsp_greedy_gap": _mean_gap(figures, "greedy"),
            "tsp_beam_gap": _mean_gap(figures, "beam")}
