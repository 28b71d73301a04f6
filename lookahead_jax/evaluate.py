"""The evaluation suite: does explicit lookahead, beyond sharpening, make the model assign
higher probability to held-out text?

For every lookahead setting of the grid (kind, width B, horizon H), one pass over the
validation split and one over the test split compute, for every token and for every
(scheme, temperature tau, mixture, weight lam) of the grid at once, the gain of the
lookahead's mixture and of its horizon-1 control's (lookahead.control_paths):

    gain(q_H) = log p~_H(x_{t+1}) - log p(x_{t+1}),   gain(q_1) likewise,

(q is sparse, so each grid point costs O(K) per token; lookahead.Amplified). For each
(setting, scheme, mixture) each side gets the (tau, lam) with its largest mean gain on
validation, on the tokens the testbed marks as needing lookahead (all tokens where it
marks none: `chosen_on`), and the test split reports both gains and the
lookahead-specific gain

    G = gain(q_H) - gain(q_1)

overall, on the marked tokens and on the rest, each with a paired 95% bootstrap interval
over the test rows (stats.py), per mark group (path_star: the goal's depth) with an
interval over the marked tokens, and the share of tokens where looking ahead beats
sharpening. The headline row is the best by validation G among the settings that look
ahead (H > 1; a horizon-1 row is its own control) and gets a per-token histogram of
g = log p~_H - log p~_1. A testbed with a task evaluator (evals/: tsp's decoded tours
against nearest neighbour; path_star's first step by goal depth, the decoders' paths and
the verifier strength) adds its figures and table. A model trained with masks
(objective.kind="spectrum") also gets its test pseudo-NLL and bidirectional next-token
readout NLL (evals/masked.py); the suite itself reads its causal mode. With
probes.enabled, the internal-lookahead probes (evals/probes.py) fit on validation and
scored on test.

Outputs in `workdir/eval/` (report.py): report.json, G_vs_horizon.png, G_vs_width.png,
token_G_hist.png (and probes.png); the tables are printed.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from ml_collections import ConfigDict
from tqdm import tqdm

from lookahead_jax import evals, monitor, report, sharding, stats
from lookahead_jax import lookahead as lookahead_lib
from lookahead_jax import metrics as metrics_lib
from lookahead_jax import model as model_lib
from lookahead_jax import state as state_lib
from lookahead_jax.config import Settings
from lookahead_jax.data import pipeline
from lookahead_jax.evals import masked as masked_eval
from lookahead_jax.evals import probes as probes_eval

PARTS = report.PARTS


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


def settings_grid(ev: ConfigDict) -> list[tuple[str, int, int]]:
  """(kind, width, horizon) of every lookahead the grid evaluates."""
  return list(itertools.product(ev.kinds, ev.widths, ev.horizons))


# ----------------------------------------------------------------------------- one batch


def grid_gains(log_p, found: lookahead_lib.Paths, targets, grid: Grid):
  """Per-token gain over p at every grid point: [schemes, mixtures, taus, lams, b, T]."""
  log_p_y = lookahead_lib.token_log_prob(log_p, targets)
  taus, lams = jnp.asarray(grid.temperatures), jnp.asarray(grid.lams)
  per_scheme = []
  for scheme in grid.schemes:
    per_mixture = []
    for mixture in grid.mixtures:
      def at_tau(tau, scheme=scheme, mixture=mixture):
        amp = lookahead_lib.amplify(found, tau, scheme)
        # lax.map over lam: one [b, T, V] loglinear normaliser alive at a time.
        return jax.lax.map(
            lambda lam: lookahead_lib.mix_at(amp, log_p, targets, lam, mixture) - log_p_y, lams)
      per_mixture.append(jax.lax.map(at_tau, taus))
    per_scheme.append(jnp.stack(per_mixture))
  return jnp.stack(per_scheme)


def batch_sums(params, batch, rng, beta, pick, *, config: model_lib.Config,
               lookahead: lookahead_lib.Lookahead, grid: Grid) -> dict[str, jax.Array]:
  """Sums over one batch for every grid point, for the lookahead and its control.

  batch: the pipeline's arrays [b, T]. pick: [2, schemes, mixtures, 2] int32 (tau, lam)
  indices per side (lookahead, control) whose per-row and per-token gains are returned
  (the validation choice; zeros on validation). Returns, with the 3 parts (all, marked,
  unmarked tokens): nll [3], tokens [3], gain and helps [2, S, M, taus, lams, 3] (gain
  over p summed, tokens where p~ > p counted), row_gain [2, S, M, b, 3] and row_tokens
  [b, 3] (per-row sums at `pick`, for the bootstrap), token_G [S, M, b, T] (per-token
  log p~_H - log p~_1 at `pick`, 0 on padding).
  """
  logits, found, control = lookahead_lib.teacher_forced_paths(
      params, batch["inputs"], batch["positions"], batch["segment_ids"], rng, beta,
      config=config, lookahead=lookahead)
  log_p = jax.nn.log_softmax(logits)
  targets = batch["targets"]
  gains = jnp.stack([grid_gains(log_p, found, targets, grid),
                     grid_gains(log_p, control, targets, grid)])  # [2, S, M, taus, lams, b, T]
  w = batch["weights"]
  mark = batch["needs_lookahead"].astype(w.dtype)
  parts = jnp.stack([w, w * mark, w * (1.0 - mark)])  # [3, b, T]
  s, m = len(grid.schemes), len(grid.mixtures)
  side, si, mi = jnp.arange(2)[:, None, None], jnp.arange(s)[:, None], jnp.arange(m)[None, :]
  chosen = gains[side, si, mi, pick[..., 0], pick[..., 1]]  # [2, S, M, b, T]
  return dict(
      nll=-jnp.einsum("bn,pbn->p", lookahead_lib.token_log_prob(log_p, targets), parts),
      tokens=parts.sum((1, 2)),
      gain=jnp.einsum("xsmtlbn,pbn->xsmtlp", gains, parts),
      helps=jnp.einsum("xsmtlbn,pbn->xsmtlp", (gains > 0).astype(w.dtype), parts),
      row_gain=jnp.einsum("xsmbn,pbn->xsmbp", chosen, parts),
      row_tokens=jnp.einsum("pbn->bp", parts),
      token_G=(chosen[0] - chosen[1]) * w,
  )


# ----------------------------------------------------------------------------- passes


def _pass(step, params, batches, rng, beta, pick, mesh, progress, groups) -> dict[str, Any]:
  """Sums of `step` over a split's batches (host float64), per-row sums and per-token G
  with each token's mark group (`groups(targets, marks)`, pipeline.mark_groups)."""
  sums: dict[str, Any] = {}
  rows, row_tokens, token_g, marks = [], [], [], []
  for i, batch in enumerate(batches):
    arrays = pipeline.global_batch(batch, sharding.batch_sharding(mesh))
    out = step(params, arrays, jax.random.fold_in(rng, i), beta, pick)
    for key in ("nll", "tokens", "gain", "helps"):
      sums[key] = sums.get(key, 0.0) + np.asarray(out[key], np.float64)
    rows.append(np.moveaxis(sharding.gather(jnp.moveaxis(out["row_gain"], 3, 0)), 0, 3))
    row_tokens.append(sharding.gather(out["row_tokens"]))
    keep = sharding.gather(arrays["weights"]) > 0
    token_g.append(np.moveaxis(sharding.gather(jnp.moveaxis(out["token_G"], 2, 0)), 0,
                               2)[..., keep])
    marks.append(groups(sharding.gather(arrays["targets"]),
                        sharding.gather(arrays["needs_lookahead"]))[keep])
    progress.update(1)
  row_tokens = np.concatenate(row_tokens).astype(np.float64)  # [R, 3]
  real = row_tokens[:, 0] > 0  # rows of padding only carry no token
  sums["row_tokens"] = row_tokens[real]
  sums["row_gain"] = np.concatenate(rows, axis=3).astype(np.float64)[:, :, :, real]
  sums["token_G"] = np.concatenate(token_g, axis=-1)
  sums["mark"] = np.concatenate(marks)
  return sums


def _mean(sums, key):
  """Per-token means [..., 3] of a summed grid quantity (nan where a part has no token)."""
  with np.errstate(invalid="ignore", divide="ignore"):
    return sums[key] / sums["tokens"]


def _test_parts(test, si, mi, weights) -> dict[str, dict[str, Any]]:
  """Per part: gain(q_H), gain(q_1), G with paired 95% bootstrap intervals over rows."""
  out = {}
  for p, part in enumerate(PARTS):
    n = test["row_tokens"][:, p]
    g_h, g_1 = test["row_gain"][0, si, mi, :, p], test["row_gain"][1, si, mi, :, p]
    total = n.sum()
    values = np.stack([g_h, g_1, g_h - g_1])  # [3, R]
    lo, hi = stats.bootstrap_ratio(values, n, weights)
    mean = values.sum(-1) / total if total else np.full(3, np.nan)
    out[part] = {name: float(mean[k]) for k, name in enumerate(("gain", "control", "G"))}
    out[part].update({f"{name}_ci": [float(lo[k]), float(hi[k])]
                      for k, name in enumerate(("gain", "control", "G"))})
  return out


def group_gains(token_g: np.ndarray, groups: np.ndarray, resamples: int, seed: int
                ) -> dict[str, dict[str, Any]]:
  """G per mark group (path_star: goal depth) with a 95% bootstrap interval over tokens.

  token_g, groups: [n] the per-token g of a row and each token's group (0: unmarked,
  left out). A marked token is one example's choice (one per example on path_star), so
  tokens are the resampled unit. {group: {G, G_ci, tokens}}; {} without marks.
  """
  out = {}
  for g in sorted(set(groups[groups > 0].tolist())):
    values = token_g[groups == g].astype(np.float64)
    weights = stats.resample_counts(len(values), resamples, seed)
    lo, hi = stats.bootstrap_ratio(values, np.ones_like(values), weights)
    out[str(g)] = dict(G=float(values.mean()), G_ci=[float(lo), float(hi)], tokens=len(values))
  return out


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


def run(config: ConfigDict, settings: Settings, workdir: str, params=None,
        lookaheads: list[tuple[str, int, int]] | None = None) -> dict[str, Any]:
  """Evaluates the command's parameters (state.load_params, or `params`) over the grid.

  lookaheads: the (kind, width, horizon) settings to evaluate; None: every combination of
  eval.kinds, eval.widths and eval.horizons.
  Writes workdir/eval/report.json and the plots, prints the table, returns the report.
  """
  ev = config.eval
  mesh = state_lib.make_mesh(config)
  model_cfg = settings.model
  grid = Grid.from_config(ev)
  runs = lookaheads or settings_grid(ev)
  for kind, width, horizon in runs:
    lookahead_lib.Lookahead(kind=kind, width=width, horizon=horizon).check(model_cfg)
  source = "the given parameters"
  if params is None:
    params, source = state_lib.load_params(config, settings, workdir, mesh)

  def batches(split):
    kwargs = dict(settings.data, global_batch_size=ev.batch_size)
    its = pipeline.make_ordered_iterator(config.data.name, split, **kwargs)
    return its if ev.max_batches == 0 else itertools.islice(its, ev.max_batches)

  counts = {split: sum(1 for _ in batches(split)) for split in (ev.validation_split,
                                                                 ev.test_split)}
  progress = tqdm(total=len(runs) * sum(counts.values()), desc="eval", unit="batch",
                  disable=jax.process_index() != 0, dynamic_ncols=True)
  groups = functools.partial(pipeline.mark_groups, config.data.name, settings.tokenizer)
  rng = jax.random.key(ev.seed)
  rows, hist, grids, weights = [], {}, [], None
  start = time.time()
  naive, test = {}, {}
  for kind, width, horizon in runs:
    la = dataclasses.replace(settings.lookahead, kind=kind, width=width, horizon=horizon)
    step = jax.jit(functools.partial(batch_sums, config=model_cfg, lookahead=la, grid=grid))
    no_pick = jnp.zeros((2, len(grid.schemes), len(grid.mixtures), 2), jnp.int32)
    val = _pass(step, params, batches(ev.validation_split), rng, config.lookahead.beta, no_pick,
                mesh, progress, groups)
    # tau and lam are chosen on the tokens the headline is about: the marked ones, if any.
    chosen_on = 1 if val["tokens"][1] > 0 else 0
    val_gain = _mean(val, "gain")[..., chosen_on]  # [2, S, M, taus, lams]
    flat = val_gain.reshape(val_gain.shape[:3] + (-1,))
    best = np.stack(np.unravel_index(first_best(flat), val_gain.shape[3:]), -1)
    test = _pass(step, params, batches(ev.test_split), rng, config.lookahead.beta,
                 jnp.asarray(best, jnp.int32), mesh, progress, groups)
    if weights is None:  # the same resamples of the test rows for every setting: paired
      weights = stats.resample_counts(len(test["row_tokens"]), ev.bootstrap, ev.seed)
    test_nll = _mean(test, "nll")
    naive = dict(validation_nll=float(val["nll"][0] / val["tokens"][0]),
                 test_nll=float(test_nll[0]), test_nll_marked=float(test_nll[1]),
                 test_nll_unmarked=float(test_nll[2]))
    for (si, scheme), (mi, mixture) in itertools.product(enumerate(grid.schemes),
                                                         enumerate(grid.mixtures)):
      (ti, li), (tc, lc) = best[0, si, mi], best[1, si, mi]
      parts = _test_parts(test, si, mi, weights)
      row = dict(kind=kind, width=width, horizon=horizon, scheme=scheme, mixture=mixture,
                 temperature=grid.temperatures[ti], lam=grid.lams[li],
                 control_temperature=grid.temperatures[tc], control_lam=grid.lams[lc],
                 chosen_on=PARTS[chosen_on],
                 validation_gain=float(val_gain[0, si, mi, ti, li]),
                 validation_control=float(val_gain[1, si, mi, tc, lc]),
                 test=parts, test_nll_amplified=naive["test_nll"] - parts["all"]["gain"],
                 test_groups=group_gains(test["token_G"][si, mi], test["mark"], ev.bootstrap,
                                         ev.seed))
      part = test["mark"] > 0 if chosen_on else slice(None)
      row["test_helps"] = float(np.mean(test["token_G"][si, mi][part] > 0))
      row["validation_G"] = row["validation_gain"] - row["validation_control"]
      rows.append(row)
      hist[len(rows) - 1] = test["token_G"][si, mi]
    grids.append(dict(kind=kind, width=width, horizon=horizon,
                      validation_gain=np.round(val_gain, 6).tolist()))
  progress.close()
  best_row = headline_row(rows)
  out = dict(
      params=source, dataset=config.data.name, splits=[ev.validation_split, ev.test_split],
      batches=counts, tokens=dict(test=float(test["tokens"][0]),
                                  test_marked=float(test["tokens"][1]),
                                  test_rows=int(len(test["row_tokens"]))),
      naive=dict(naive, test_perplexity=float(np.exp(naive["test_nll"]))),
      grid=dataclasses.asdict(grid), bootstrap=ev.bootstrap, rows=rows, best=rows[best_row],
      # mean validation gain [side][scheme][mixture][tau][lam] per setting (side 0: q_H,
      # side 1: its control q_1), on the part of the tokens named by each row's chosen_on
      validation_grids=grids,
      seconds=round(time.time() - start, 1))
  if settings.objective.kind == "spectrum":
    out["masked"] = masked_eval.masked_nll(params, settings, batches(ev.test_split), mesh,
                                           ev.bootstrap, ev.seed)
  tables = []
  task = evals.task(config.data.name)
  if task is not None:  # the testbed's own figures, keyed by its name
    best = out["best"]
    out[task.NAME] = task.evaluate(params, config, settings,
                                   best if best["horizon"] > 1 else None)
    tables.append(task.table(out[task.NAME], best))
  if settings.probes is not None:
    out["probes"] = probes_eval.probe_report(params, config, settings, mesh)
  if jax.process_index() == 0:
    report.write_eval(out, hist[best_row], test["mark"], epath.Path(workdir) / "eval",
                      monitor.trajectory(metrics_lib.read(workdir)), tables)
  return out
