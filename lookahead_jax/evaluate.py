"""The evaluation suite: does explicit lookahead make the model assign higher probability
to held-out text?

For every lookahead setting of the grid (kind, width B, horizon H), one pass over the
validation split and one over the test split compute, for every token and for every
(scheme, temperature tau, mixture, weight lam) of the grid at once,

    gain = log p~(x_{t+1}) - log p(x_{t+1})

(q is sparse, so each grid point costs O(K) per token; lookahead.Amplified). For each
(setting, scheme, mixture) the (tau, lam) with the largest mean gain on validation is
chosen, and the test split reports the gain at that choice: overall, on tokens the
testbed marks as needing lookahead and on the rest, with the fraction of tokens the
lookahead helps. The best row (chosen on validation) gets a per-token gain histogram.
On the tsp testbed, the model also decodes the tours of test instances greedily and by
beam search: tour validity and optimality gap, beside the nearest-neighbour heuristic.

Outputs in `workdir/eval/`: report.json, gain_vs_horizon.png, gain_vs_width.png,
token_gain_hist.png; the table is printed.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils
from ml_collections import ConfigDict
from tqdm import tqdm

from lookahead_jax import decoding
from lookahead_jax import lookahead as lookahead_lib
from lookahead_jax import model as model_lib
from lookahead_jax import sharding
from lookahead_jax import train as train_lib
from lookahead_jax.data import builders, pipeline, tsp

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file backend)

PARTS = ("all", "marked", "unmarked")  # tokens the testbed marks as needing lookahead


@dataclasses.dataclass(frozen=True)
class Grid:
  """The grid points every lookahead setting is evaluated at (static: shapes and loops)."""

  schemes: tuple[str, ...]
  mixtures: tuple[str, ...]
  temperatures: tuple[float, ...]
  lams: tuple[float, ...]

  @classmethod
  def from_config(cls, ev: ConfigDict) -> Grid:
    return cls(tuple(ev.schemes), tuple(ev.mixtures), tuple(float(t) for t in ev.temperatures),
               tuple(float(x) for x in ev.lams))


def settings(ev: ConfigDict) -> list[tuple[str, int, int]]:
  """(kind, width, horizon) of every lookahead the grid evaluates."""
  return list(itertools.product(ev.kinds, ev.widths, ev.horizons))


# ----------------------------------------------------------------------------- one batch


def grid_gains(log_p, paths: lookahead_lib.Paths, targets, grid: Grid):
  """Per-token gain at every grid point: [schemes, mixtures, taus, lams, b, T]."""
  log_p_y = lookahead_lib.token_log_prob(log_p, targets)
  taus, lams = jnp.asarray(grid.temperatures), jnp.asarray(grid.lams)
  per_scheme = []
  for scheme in grid.schemes:
    per_mixture = []
    for mixture in grid.mixtures:
      def at_tau(tau, scheme=scheme, mixture=mixture):
        amp = lookahead_lib.amplify(paths, tau, scheme)
        # lax.map over lam: one [b, T, V] loglinear normaliser alive at a time.
        return jax.lax.map(
            lambda lam: lookahead_lib.mix_at(amp, log_p, targets, lam, mixture) - log_p_y, lams)
      per_mixture.append(jax.lax.map(at_tau, taus))
    per_scheme.append(jnp.stack(per_mixture))
  return jnp.stack(per_scheme)


def batch_sums(params, batch, rng, beta, pick, *, config: model_lib.Config,
               lookahead: lookahead_lib.Lookahead, grid: Grid) -> dict[str, jax.Array]:
  """Sums over one batch for every grid point.

  batch: the pipeline's arrays [b, T]. pick: [schemes, mixtures, 2] int32 (tau, lam) indices
  whose per-token gains are returned (the validation choice; zeros on validation).
  Returns nll [3], tokens [3], gain [S, M, taus, lams, 3], helps [S, M, taus, lams, 3]
  (the 3 parts: all, marked, unmarked tokens) and token_gain [S, M, b, T] at `pick`.
  """
  logits, paths = lookahead_lib.paths(params, batch["inputs"], batch["positions"],
                                      batch["segment_ids"], rng, beta, config=config,
                                      lookahead=lookahead)
  log_p = jax.nn.log_softmax(logits)
  gains = grid_gains(log_p, paths, batch["targets"], grid)  # [S, M, taus, lams, b, T]
  w = batch["weights"]
  mark = batch["needs_lookahead"].astype(w.dtype)
  parts = jnp.stack([w, w * mark, w * (1.0 - mark)])  # [3, b, T]
  s, m = len(grid.schemes), len(grid.mixtures)
  chosen = gains[jnp.arange(s)[:, None], jnp.arange(m)[None, :], pick[..., 0], pick[..., 1]]
  return dict(
      nll=-jnp.einsum("bn,pbn->p", lookahead_lib.token_log_prob(log_p, batch["targets"]), parts),
      tokens=parts.sum((1, 2)),
      gain=jnp.einsum("smtlbn,pbn->smtlp", gains, parts),
      helps=jnp.einsum("smtlbn,pbn->smtlp", (gains > 0).astype(w.dtype), parts),
      token_gain=chosen * w,
  )


# ----------------------------------------------------------------------------- passes


def _pass(step, params, batches, rng, beta, pick, mesh, progress) -> dict[str, Any]:
  """Sums of `step` over a split's batches (host float64) and the picked per-token gains."""
  sums: dict[str, np.ndarray] = {}
  token_gains, marks = [], []
  for i, batch in enumerate(batches):
    arrays = pipeline.global_batch(batch, sharding.batch_sharding(mesh))
    out = step(params, arrays, jax.random.fold_in(rng, i), beta, pick)
    for key in ("nll", "tokens", "gain", "helps"):
      sums[key] = sums.get(key, 0.0) + np.asarray(out[key], np.float64)
    gained = multihost_utils.process_allgather(out["token_gain"], tiled=True)
    keep = np.asarray(multihost_utils.process_allgather(arrays["weights"], tiled=True)) > 0
    token_gains.append(np.asarray(gained)[..., keep])  # [S, M, tokens]
    marks.append(np.asarray(
        multihost_utils.process_allgather(arrays["needs_lookahead"], tiled=True))[keep])
    progress.update(1)
  sums["token_gain"] = np.concatenate(token_gains, axis=-1)
  sums["mark"] = np.concatenate(marks)
  return sums


def _mean(sums, key):
  """Per-token means [..., 3] of a summed grid quantity (nan where a part has no token)."""
  with np.errstate(invalid="ignore", divide="ignore"):
    return sums[key] / sums["tokens"]


def run(config: ConfigDict, workdir: str, params=None,
        lookaheads: list[tuple[str, int, int]] | None = None) -> dict[str, Any]:
  """Evaluates the workdir's newest checkpoint (or `params`, or fresh ones) over the grid.

  lookaheads: the (kind, width, horizon) settings to evaluate; None: every combination of
  eval.kinds, eval.widths and eval.horizons.
  Writes workdir/eval/report.json and the plots, prints the table, returns the report.
  """
  ev = config.eval
  mesh = train_lib.make_mesh(config)
  model_cfg = train_lib.model_config(config)
  tokenizer = train_lib.tokenizer_for(config)
  grid = Grid.from_config(ev)
  runs = lookaheads or settings(ev)
  for kind, width, horizon in runs:
    lookahead_lib.Lookahead(kind=kind, width=width, horizon=horizon).check(model_cfg)
  source = "fresh parameters"
  if params is None:
    params = train_lib.restore_params(config, workdir, mesh)
    source = "the newest checkpoint in " + workdir
  if params is None and config.pretrained:
    params, source = train_lib.pretrained_params(config), config.pretrained
  if params is None:
    logging.warning("No checkpoint in %s: evaluating freshly initialised parameters.", workdir)
    params = model_lib.init(model_cfg, jax.random.key(config.seed))
    source = "fresh parameters"

  def batches(split):
    kwargs = dict(train_lib.data_kwargs(config), global_batch_size=ev.batch_size)
    its = pipeline.make_eval_iterator(config.data.name, split, **kwargs)
    return its if ev.max_batches == 0 else itertools.islice(its, ev.max_batches)

  counts = {split: sum(1 for _ in batches(split)) for split in (ev.validation_split,
                                                                 ev.test_split)}
  progress = tqdm(total=len(runs) * sum(counts.values()), desc="eval", unit="batch",
                  disable=jax.process_index() != 0, dynamic_ncols=True)
  rng = jax.random.key(ev.seed)
  rows, hist, grids = [], {}, []
  start = time.time()
  naive = {}
  for kind, width, horizon in runs:
    la = lookahead_lib.Lookahead(kind=kind, width=width, horizon=horizon,
                                 length_penalty=config.lookahead.length_penalty,
                                 chunk=config.lookahead.chunk, eos_id=tokenizer.eod_id)
    step = jax.jit(functools.partial(batch_sums, config=model_cfg, lookahead=la, grid=grid))
    no_pick = jnp.zeros((len(grid.schemes), len(grid.mixtures), 2), jnp.int32)
    val = _pass(step, params, batches(ev.validation_split), rng, config.lookahead.beta, no_pick,
                mesh, progress)
    val_gain = _mean(val, "gain")[..., 0]  # [S, M, taus, lams]
    flat = val_gain.reshape(val_gain.shape[:2] + (-1,))
    best = np.stack(np.unravel_index(np.nanargmax(flat, axis=-1), val_gain.shape[2:]), -1)
    test = _pass(step, params, batches(ev.test_split), rng, config.lookahead.beta,
                 jnp.asarray(best, jnp.int32), mesh, progress)
    test_nll = _mean(test, "nll")
    naive = dict(validation_nll=float(val["nll"][0] / val["tokens"][0]),
                 test_nll=float(test_nll[0]), test_nll_marked=float(test_nll[1]),
                 test_nll_unmarked=float(test_nll[2]))
    test_gain, test_helps = _mean(test, "gain"), _mean(test, "helps")
    for (si, scheme), (mi, mixture) in itertools.product(enumerate(grid.schemes),
                                                         enumerate(grid.mixtures)):
      ti, li = best[si, mi]
      at = (si, mi, ti, li)
      row = dict(kind=kind, width=width, horizon=horizon, scheme=scheme, mixture=mixture,
                 temperature=grid.temperatures[ti], lam=grid.lams[li],
                 validation_gain=float(val_gain[at]),
                 test_gain=float(test_gain[at][0]), test_helps=float(test_helps[at][0]),
                 test_gain_marked=float(test_gain[at][1]),
                 test_gain_unmarked=float(test_gain[at][2]),
                 test_nll_amplified=naive["test_nll"] - float(test_gain[at][0]))
      rows.append(row)
      hist[len(rows) - 1] = test["token_gain"][si, mi]
    grids.append(dict(kind=kind, width=width, horizon=horizon,
                      validation_gain=np.round(val_gain, 6).tolist()))
  progress.close()
  best_row = max(range(len(rows)), key=lambda i: rows[i]["validation_gain"])
  report = dict(
      params=source, dataset=config.data.name, splits=[ev.validation_split, ev.test_split],
      batches=counts, tokens=dict(test=float(test["tokens"][0]),
                                  test_marked=float(test["tokens"][1])),
      naive=dict(naive, test_perplexity=float(np.exp(naive["test_nll"]))),
      grid=dataclasses.asdict(grid), rows=rows, best=rows[best_row],
      validation_grids=grids,  # mean validation gain [scheme][mixture][tau][lam] per setting
      seconds=round(time.time() - start, 1))
  if config.data.name == "tsp":
    report["tsp"] = tsp_tours(params, config, model_cfg, ev.test_split, ev.tsp_instances,
                              max(ev.widths))
  if jax.process_index() == 0:
    out = epath.Path(workdir) / "eval"  # also gs://bucket/dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    plot(report, hist[best_row], test["mark"], out)
    print(table(report))
    if "tsp" in report:
      print(tsp_table(report["tsp"]))
    print(f"Report and plots: {out}")
  return report


# ----------------------------------------------------------------------------- tsp tours


def tsp_tours(params, config: ConfigDict, model_cfg: model_lib.Config, split: str,
              limit: int, beam_size: int) -> dict[str, Any]:
  """Tours of the split's first `limit` instances decoded by the model, per city count.

  The prompt is a document's start, [EOD] + coordinates + separator; the next n tokens
  are read as the tour. Returns {method: {n: {valid, gap, optimal, instances}}} for the
  methods greedy, beam (width `beam_size`) and nearest_neighbour (no model).
  """
  options = config.data.options.to_dict()
  tok = builders.default_tokenizer("tsp", **options)
  records = builders.data_source("tsp", split, config.data.data_dir, **options)
  by_size: dict[int, list[dict[str, Any]]] = {}
  for i in range(min(limit, len(records))):
    by_size.setdefault(int(records[i]["num_cities"]), []).append(records[i])
  out: dict[str, dict[int, dict[str, float]]] = {m: {} for m in ("greedy", "beam",
                                                                  "nearest_neighbour")}
  for n, group in sorted(by_size.items()):
    prompts = jnp.asarray([[tok.eod_id] + tok.encode_instance(r["coords"]) for r in group])
    greedy = decoding.generate(params, prompts, jax.random.key(0), config=model_cfg,
                               max_new_tokens=n)
    beams = decoding.beam_search(params, prompts, config=model_cfg, beam_size=beam_size,
                                 max_new_tokens=n)
    tours = {"greedy": [tok.decode_tour(t) for t in np.asarray(greedy)],
             "beam": [tok.decode_tour(t) for t in np.asarray(beams.sequences[:, 0])],
             "nearest_neighbour": [tsp.greedy_tour(r["coords"]) for r in group]}
    for method, found in tours.items():
      valid = [t is not None and tsp.is_valid_tour(t, n) for t in found]
      gaps = [tsp.optimality_gap(r["coords"], t, r["tour"])
              for r, t, ok in zip(group, found, valid) if ok]
      out[method][n] = dict(instances=len(group), valid=float(np.mean(valid)),
                            gap=float(np.mean(gaps)) if gaps else float("nan"),
                            optimal=float(np.mean([g == 0.0 for g in gaps])) if gaps else 0.0)
  return out


def tsp_table(tours) -> str:
  lines = ["TSP tours on the test split: valid fraction, mean optimality gap of valid tours, "
           "optimal fraction", f"{'cities':>8} " + " ".join(
               f"{m + ' ' + k:>26}" for m in tours for k in ("valid/gap/opt",))]
  for n in sorted(next(iter(tours.values()))):
    cells = [f"{t[n]['valid']:>8.2f} {t[n]['gap']:>8.3f} {t[n]['optimal']:>8.2f}"
             for t in tours.values()]
    lines.append(f"{n:>8} " + " ".join(f"{c:>26}" for c in cells))
  return "\n".join(lines)


# ----------------------------------------------------------------------------- report


def table(report) -> str:
  """The report as a fixed-width text table, one row per (setting, scheme, mixture)."""
  head = ("kind", "B", "H", "scheme", "mixture", "tau", "lam", "val gain", "test gain",
          "helps", "marked", "unmarked", "test NLL")
  naive = report["naive"]
  marked = (f"; marked {naive['test_nll_marked']:.4f}, unmarked {naive['test_nll_unmarked']:.4f}"
            if report["tokens"]["test_marked"] else "")
  lines = [f"Lookahead evaluation of {report['params']} on {report['dataset']}: naive test NLL "
           f"{naive['test_nll']:.4f} (perplexity {naive['test_perplexity']:.3f}{marked}), "
           f"{report['tokens']['test']:.0f} test tokens ({report['tokens']['test_marked']:.0f} "
           "marked as needing lookahead). Gains in nats/token; tau, lam chosen on validation.",
           " ".join(f"{h:>9}" for h in head)]
  for r in report["rows"]:
    cells = (r["kind"], r["width"], r["horizon"], r["scheme"], r["mixture"], r["temperature"],
             r["lam"], r["validation_gain"], r["test_gain"], r["test_helps"],
             r["test_gain_marked"], r["test_gain_unmarked"], r["test_nll_amplified"])
    lines.append(" ".join(f"{c:>9.4f}" if isinstance(c, float) else f"{c:>9}" for c in cells))
  b = report["best"]
  lines.append(f"Best on validation: {b['kind']} B={b['width']} H={b['horizon']} {b['scheme']} "
               f"{b['mixture']} tau={b['temperature']} lam={b['lam']}: test gain "
               f"{b['test_gain']:+.4f} nats/token, helps {b['test_helps']:.1%} of tokens.")
  return "\n".join(lines)


def _savefig(fig, out: str | os.PathLike, name: str) -> None:
  with (epath.Path(out) / name).open("wb") as f:  # also gs://bucket/dir
    fig.savefig(f, format="png", dpi=120)


def plot(report, token_gain, mark, out: str | os.PathLike) -> None:
  """gain_vs_horizon.png, gain_vs_width.png and token_gain_hist.png in `out`."""
  rows = report["rows"]
  best = report["best"]
  chosen = [r for r in rows if (r["scheme"], r["mixture"]) == (best["scheme"], best["mixture"])]
  for x_key, line_key, name in (("horizon", "width", "gain_vs_horizon"),
                                ("width", "horizon", "gain_vs_width")):
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, style in (("beam", "-o"), ("smc", "--s")):
      for value in sorted({r[line_key] for r in chosen if r["kind"] == kind}):
        pts = sorted((r[x_key], r["test_gain"]) for r in chosen
                     if r["kind"] == kind and r[line_key] == value)
        ax.plot(*zip(*pts), style, label=f"{kind} {line_key[0].upper()}={value}")
    ax.axhline(0.0, color="gray", lw=0.8)
    ax.set_xticks(sorted({r[x_key] for r in chosen}))  # the grid's values, no fractions
    ax.set_xlabel(x_key)
    ax.set_ylabel("test lookahead gain (nats/token)")
    ax.set_title(f"{report['dataset']}: {best['scheme']}, {best['mixture']} mixture")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _savefig(fig, out, name + ".png")
    plt.close(fig)
  fig, ax = plt.subplots(figsize=(6, 4))
  bins = np.linspace(np.percentile(token_gain, 0.5), np.percentile(token_gain, 99.5), 60)
  if mark.any():
    ax.hist(token_gain[~mark], bins=bins, alpha=0.6, label="other tokens", density=True)
    ax.hist(token_gain[mark], bins=bins, alpha=0.6, label="needs lookahead", density=True)
    ax.legend()
  else:
    ax.hist(token_gain, bins=bins, density=True)
  ax.axvline(0.0, color="gray", lw=0.8)
  ax.set_xlabel("per-token gain log p~ - log p (nats)")
  ax.set_ylabel("density")
  ax.set_title(f"best: {best['kind']} B={best['width']} H={best['horizon']}, test split")
  fig.tight_layout()
  _savefig(fig, out, "token_gain_hist.png")
  plt.close(fig)
