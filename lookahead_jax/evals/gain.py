"""The gain grid, the evaluator every evaluation runs first: does explicit lookahead,
beyond sharpening, make the model assign higher probability to held-out text?

For every lookahead setting (kind, width B, horizon H) one pass over the validation split
and one over the test split run the lookahead at the scored anchors only (the tokens
the loss weighs: on path_star the answers) and cache, per scored token, what the
mixtures need (fit.TokenCache): p at the target and at the paths' first tokens, and the
paths' scores; the control family's cache (p's top-k for k up to the largest width
evaluated) comes with it. Then, per (scheme, mixture) and per part of the tokens (all,
marked as needing lookahead, unmarked), each side gets its own tau and lam fitted on
that part's validation tokens by a bounded continuous optimiser (fit.py): the lookahead
q_H, and the best horizon-1 sharpening of the family q_1 (any top-k, tau and lam). The
test split reports

    gain(q_H) = log p~_H(x_{t+1}) - log p(x_{t+1}),   gain(q_1) likewise,
    G = gain(q_H) - gain(q_1)

on each part with that part's fits, with paired 95% bootstrap intervals that resample
test rows (stats.row_interval), per mark group (path_star: the goal's depth) with the
marked fits and the same row resamples, and the share of tokens where looking ahead
beats sharpening. The headline row is the best by validation G among the settings that
look ahead (H > 1; a horizon-1 row is its own control) and gets a per-token histogram
of g = log p~_H - log p~_1 (token_G_hist.png), beside G_vs_horizon.png and
G_vs_width.png. A masked model (objective.kind="spectrum") is read in its causal mode.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from lookahead_jax import aot, evals, fit, sharding, stats
from lookahead_jax import lookahead as lookahead_lib
from lookahead_jax import metrics as metrics_lib
from lookahead_jax import model as model_lib
from lookahead_jax import report as report_lib
from lookahead_jax.data import pipeline
from lookahead_jax.settings import Eval, Settings

PARTS = report_lib.PARTS
LOOKAHEAD = "lookahead"  # the name of the evaluated lookahead in its fit.Split


def settings_grid(ev: Eval) -> list[tuple[str, int, int]]:
  """(kind, width, horizon) of every lookahead the grid evaluates."""
  return list(itertools.product(ev.kinds, ev.widths, ev.horizons))


def control_width(ev: Eval, vocab_size: int) -> int:
  """The control family's largest top-k: the largest width evaluated (at most V)."""
  return min(max(ev.widths), vocab_size)


# ----------------------------------------------------------------------------- one batch


def batch_cache(params, batch, rng, beta, *, config: model_lib.Config,
                lookahead: lookahead_lib.Lookahead, control_width: int, loglinear: bool
                ) -> dict[str, Any]:
  """The teacher-forced pass and the lookahead at the batch's scored anchors.

  batch: the pipeline's arrays [b, T]. Returns {"caches": {LOOKAHEAD: TokenCache [b, T,
  ...] of the lookahead's paths}, "control": of p's top `control_width` tokens (with the
  loglinear normaliser, which fit.host_split shares)}; both with the lookahead's valid
  anchors (an anchor without a lookahead mixes to p on both sides).
  """
  logits, cache = model_lib.forward(params, batch["inputs"], batch["positions"], config=config,
                                    segment_ids=batch["segment_ids"])
  found = lookahead_lib.paths_from_pass(params, logits, cache, batch["positions"],
                                        batch["segment_ids"], rng, beta, batch["weights"] > 0,
                                        batch["inputs"], config=config, lookahead=lookahead)
  log_p = jax.nn.log_softmax(logits)
  score, first = jax.lax.top_k(log_p, control_width)
  control = lookahead_lib.Paths(first=first.astype(jnp.int32), score=score, valid=found.valid)
  targets = batch["targets"]
  return dict(caches={LOOKAHEAD: fit.pass_cache(log_p, found, targets, False)},
              control=fit.pass_cache(log_p, control, targets, loglinear))


def batch_step(model_cfg: model_lib.Config, ev: Eval, la: lookahead_lib.Lookahead
               ) -> Callable:
  """`batch_cache` jitted for one lookahead of the grid `ev` (the control's largest top-k,
  the loglinear normaliser when the grid has that mixture)."""
  return jax.jit(functools.partial(batch_cache, config=model_cfg, lookahead=la,
                                   control_width=control_width(ev, model_cfg.vocab_size),
                                   loglinear="loglinear" in ev.mixtures))


def eval_batches(settings: Settings, split: str) -> Iterator[dict]:
  """The host batches of a split, in order (eval.batch_size rows; eval.max_batches)."""
  ev = settings.eval
  its = pipeline.make_ordered_iterator(settings.data.name, split,
                                       **dict(settings.pipeline, global_batch_size=ev.batch_size))
  return its if ev.max_batches == 0 else itertools.islice(its, ev.max_batches)


# ----------------------------------------------------------------------------- passes


def split_pass(step, params, batches, rng, beta, mesh, progress, groups) -> fit.Split:
  """The scored tokens of a split's batches under one lookahead, on the host (fit.Split):
  their caches, the row each sits in (numbered over the split) and its mark group
  (`groups(targets, marks)`, pipeline.mark_groups)."""
  outs, keeps = [], []
  for i, batch in enumerate(batches):
    arrays = pipeline.global_batch(batch, sharding.batch_sharding(mesh))
    out = jax.tree.map(sharding.gather, step(params, arrays, jax.random.fold_in(rng, i), beta))
    out["group"] = groups(sharding.gather(arrays["targets"]),
                          sharding.gather(arrays["needs_lookahead"]))
    outs.append(out)
    keeps.append(sharding.gather(arrays["weights"]) > 0)
    progress.update(1)
  return fit.host_split(outs, keeps)


def compact_rows(rows: np.ndarray) -> tuple[np.ndarray, int]:
  """Row numbers renumbered 0..R-1 over the rows that hold a scored token, and R."""
  unique, inverse = np.unique(rows, return_inverse=True)
  return inverse, len(unique)


def _interval(values: np.ndarray, rows: np.ndarray, weights: np.ndarray) -> list[Any]:
  mean, lo, hi = stats.row_interval(values, rows, weights)
  return [(float(m), [float(a), float(b)]) for m, a, b in zip(mean, lo, hi)]


def scored_row(fits: dict[str, dict[str, Any]], test: fit.Split, rows: np.ndarray,
               weights: np.ndarray) -> dict[str, Any]:
  """The test figures of one (setting, scheme, mixture) from its parts' fits: per part
  gain(q_H), gain(q_1) and G with paired row intervals, and each side's fit."""
  out = {}
  for part in PARTS:
    f = fits[part]
    keep = test.part(part)
    tokens = int(keep.sum())
    if not tokens or np.isnan(f["H"].nll):
      nan = [float("nan")] * 2
      out[part] = dict(gain=float("nan"), control=float("nan"), G=float("nan"), gain_ci=nan,
                       control_ci=nan, G_ci=nan, tokens=tokens, fit_H=f["H"].asdict(),
                       fit_1=f["control"].asdict())
      continue
    g_h, g_1 = f["gain_H"][keep], f["gain_1"][keep]
    (gain, gain_ci), (control, control_ci), (g, g_ci) = _interval(
        np.stack([g_h, g_1, g_h - g_1]), rows[keep], weights)
    out[part] = dict(gain=gain, control=control, G=g, gain_ci=gain_ci, control_ci=control_ci,
                     G_ci=g_ci, tokens=tokens, fit_H=f["H"].asdict(),
                     fit_1=f["control"].asdict())
  return out


def group_gains(token_g: np.ndarray, groups: np.ndarray, rows: np.ndarray, weights: np.ndarray
                ) -> dict[str, dict[str, Any]]:
  """G per mark group (path_star: goal depth) with a 95% interval that resamples rows.

  token_g, groups, rows: [n] the per-token g, each token's group (0: unmarked, left out)
  and its row (0..R-1); weights: the test rows' resamples, the same for every figure.
  {group: {G, G_ci, tokens}}; {} without marks.
  """
  out = {}
  for g in sorted(set(groups[groups > 0].tolist())):
    keep = groups == g
    [(value, ci)] = _interval(token_g[keep][None], rows[keep], weights)
    out[str(g)] = dict(G=value, G_ci=ci, tokens=int(keep.sum()))
  return out


def monitor_summary(log: list[dict[str, Any]], settings: Settings, part: str
                    ) -> dict[str, Any] | None:
  """The training monitor's last dev G on `part` ("marked" or "all"), with its lookahead
  named, for the line that says why it differs from the evaluation's; None unmonitored."""
  records = [r for r in log if "monitor_G_dev" in r]
  if not records:
    return None
  key = "monitor_G_dev" + ("_marked" if part == "marked" else "")
  last = records[-1]
  dev = settings.dev_lookahead
  return dict(step=last["step"], G=last.get(key), G_ci=[last.get(key + "_lo"),
                                                        last.get(key + "_hi")],
              lookahead=dev.describe(settings.mixture.beta))


def headline_row(rows: list[dict[str, Any]]) -> int:
  """Index of the headline row: the best by validation G among the rows that look ahead
  (H > 1); a horizon-1 row is its own control (G = 0), so it heads only a grid of them."""
  ahead = [i for i, r in enumerate(rows) if r["horizon"] > 1] or list(range(len(rows)))
  return ahead[int(first_best(np.array([rows[i]["validation_G"] for i in ahead])))]


TIE = 1e-6  # nats/token: validation gains closer than this to the best tie


def first_best(values: np.ndarray) -> np.ndarray:
  """Index along the last axis of the first value within TIE of the largest (NaN never).

  Gains that differ by float noise alone (the "sum" and "max" schemes when every path's
  first token is distinct; the same run sharded over other devices) tie, and the first
  setting in the grid's order wins, so the choice does not depend on the device layout.
  """
  top = np.nanmax(values, axis=-1, keepdims=True)
  return np.argmax(values >= top - TIE, axis=-1)


class Evaluator(evals.Base):
  """The gain grid (the module docstring). Its figures are the report's top level: params,
  dataset, splits, batches, tokens, naive, control_family, bootstrap, rows, best, seconds,
  monitor."""

  name = "gain"
  columns = (
      evals.Column("test_nll", "test NLL", ".4f", paired=True),
      evals.Column("G_stunting", "G (stunting la.)", "+.4f", paired=True),
      evals.Column("G_dev", "G (dev la.)", "+.4f"),
      evals.Column("G_stunting_marked", "G marked (stunting)", "+.4f"),
      evals.Column("G_dev_marked", "G marked (dev)", "+.4f", paired=True),
      evals.Column("gain_stunting", "gain q_H (stunting)", "+.4f"),
      evals.Column("control_stunting", "gain q_1 (stunting)", "+.4f"))

  def __init__(self):
    self._token_g = self._groups = None  # the headline's per-token g and mark groups: plots

  def applies(self, context: evals.Context) -> bool:
    del context
    return True

  def evaluate(self, params, context: evals.Context) -> dict[str, Any]:
    """Every lookahead of context.lookaheads (None: the config's grid) on the validation
    and test splits; the rows, the headline (`best`) and the monitor's last dev G."""
    settings, mesh = context.settings, context.mesh
    ev, model_cfg = settings.eval, settings.model
    runs = context.lookaheads or settings_grid(ev)
    batches = functools.partial(eval_batches, settings)
    counts = {split: sum(1 for _ in batches(split)) for split in (ev.validation_split,
                                                                   ev.test_split)}
    progress = tqdm(total=len(runs) * sum(counts.values()), desc="eval", unit="batch",
                    disable=jax.process_index() != 0, dynamic_ncols=True)
    groups = functools.partial(pipeline.mark_groups, settings.data.name, settings.tokenizer)
    rng = jax.random.key(ev.seed)
    widths = range(1, control_width(ev, model_cfg.vocab_size) + 1)
    rows, hist = [], {}
    start = time.time()
    for kind, width, horizon in runs:
      la = settings.lookahead.as_kind(kind, width=width, horizon=horizon)
      step = batch_step(model_cfg, ev, la)
      val = split_pass(step, params, batches(ev.validation_split), rng, settings.mixture.beta,
                       mesh, progress, groups)
      test = split_pass(step, params, batches(ev.test_split), rng, settings.mixture.beta,
                        mesh, progress, groups)
      test_rows, n_rows = compact_rows(test.row)
      # the same resamples of the test rows for every figure and setting: paired
      weights = stats.resample_counts(n_rows, ev.bootstrap, ev.seed)
      # the headline's tokens: the marked ones, if the testbed marks any
      headline = "marked" if val.part("marked").any() else "all"
      for scheme, mixture in itertools.product(ev.schemes, ev.mixtures):
        fits = fit.fit_parts(val, test, PARTS, name=LOOKAHEAD, scheme=scheme, mixture=mixture,
                             control_widths=widths)
        parts = scored_row(fits, test, test_rows, weights)
        # per token g, each token with the fits of its own part (marked or unmarked)
        marked = test.part("marked")
        token_g = np.where(marked, fits["marked"]["gain_H"] - fits["marked"]["gain_1"],
                           fits["unmarked"]["gain_H"] - fits["unmarked"]["gain_1"])
        side, control = fits[headline]["H"], fits[headline]["control"]
        head = test.part(headline)
        row = dict(kind=kind, width=width, horizon=horizon, lookahead=la.describe(),
                   scheme=scheme, mixture=mixture,
                   temperature=side.temperature, lam=side.lam, on_bound=list(side.on_bound),
                   control_width=control.width, control_temperature=control.temperature,
                   control_lam=control.lam, control_on_bound=list(control.on_bound),
                   chosen_on=headline, validation_gain=side.gain,
                   validation_control=control.gain, validation_G=side.gain - control.gain,
                   test=parts, test_nll_amplified=-float(np.mean(
                       test.control.log_p_y[:test.n] + fits["all"]["gain_H"])),
                   test_groups=group_gains(token_g, test.group, test_rows, weights),
                   test_helps=float(np.mean(token_g[head] > 0)) if head.any()
                   else float("nan"),
                   test_marked_g=np.round(token_g[marked], 5).tolist())
        rows.append(row)
        hist[len(rows) - 1] = token_g
    progress.close()
    best_row = headline_row(rows)
    self._token_g, self._groups = hist[best_row], test.group
    log_p_y = test.control.log_p_y[:test.n].astype(np.float64)
    nll = {part: float(-log_p_y[test.part(part)].mean()) if test.part(part).any()
           else float("nan") for part in PARTS}
    naive = dict(validation_nll=float(-val.control.log_p_y[:val.n].mean()),
                 test_nll=nll["all"], test_nll_marked=nll["marked"],
                 test_nll_unmarked=nll["unmarked"], test_perplexity=float(np.exp(nll["all"])))
    return dict(
        dataset=settings.data.name, splits=[ev.validation_split, ev.test_split],
        batches=counts, tokens=dict(test=test.n, test_marked=int(test.part("marked").sum()),
                                    test_rows=n_rows),
        naive=naive, control_family=f"top-k of p, k = 1..{widths[-1]}",
        bootstrap=ev.bootstrap, rows=rows, best=rows[best_row],
        seconds=round(time.time() - start, 1),
        monitor=monitor_summary(metrics_lib.read(context.workdir), settings, headline))

  def table(self, figures: dict[str, Any], report: dict[str, Any]) -> str:
    del figures
    return report_lib.eval_table(report)

  def plots(self, figures: dict[str, Any], report: dict[str, Any], out) -> None:
    del figures
    report_lib.eval_plots(report, self._token_g, self._groups, out)

  def run_figures(self, figures: dict[str, Any], report: dict[str, Any],
                  best_rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The test NLL, and G (all and marked tokens) of the stunting and the dev lookahead's
    best rows, with the stunting lookahead's two gains."""
    del figures
    out = {"test_nll": report["naive"]["test_nll"],
           "test_rows": report.get("tokens", {}).get("test_rows")}
    for label, row in best_rows.items():
      test = row["test"]
      for suffix, part in (("", "all"), ("_marked", "marked")):
        out[f"G_{label}{suffix}"] = test[part]["G"]
        out[f"G_{label}{suffix}_ci"] = test[part]["G_ci"]
      if label == "stunting":
        out["gain_stunting"], out["gain_stunting_ci"] = (test["all"]["gain"],
                                                         test["all"]["gain_ci"])
        out["control_stunting"] = test["all"]["control"]
        out["control_stunting_ci"] = test["all"]["control_ci"]
    return out

  def compile_ahead(self, ahead: aot.Ahead, context: evals.Context, params) -> None:
    """Queues each grid setting's batch pass (aot.Ahead.warm)."""
    settings = context.settings
    ev, model_cfg = settings.eval, settings.model
    batch = pipeline.global_batch(
        next(iter(eval_batches(settings, ev.validation_split))),
        sharding.batch_sharding(context.mesh))
    for kind, width, horizon in settings_grid(ev):
      la = settings.lookahead.as_kind(kind, width=width, horizon=horizon)
      ahead.warm(batch_step(model_cfg, ev, la), params,
                 aot.abstract(batch), jax.random.fold_in(jax.random.key(ev.seed), 0),
                 settings.mixture.beta)
