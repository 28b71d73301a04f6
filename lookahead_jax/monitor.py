"""Monitoring during training: does explicit lookahead keep helping the model?

Every `stunting.monitor_every` steps, on fixed held-out batches, the lookahead-specific
gain G = gain(q_H) - gain(q_1) of the stunting lookahead and of a dev lookahead that
stunting never uses (docs/design.md section 3), and the teacher-forced accuracy on the marked
tokens, split by mark group (path_star: the goal's depth). If the dev lookahead's G, after
it had been clearly positive, stops being positive, the model may have learned to do the
lookahead itself: a warning says so.
With probes.enabled, the same batches feed the internal-lookahead probes (probes.py):
fit on the first half of the batches, scored on the second.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from lookahead_jax import lookahead as lookahead_lib
from lookahead_jax import model as model_lib
from lookahead_jax import probes as probes_lib
from lookahead_jax import sharding
from lookahead_jax import stunting as stunting_lib
from lookahead_jax.config import Settings
from lookahead_jax.data import pipeline

Array = jax.Array
TRAJECTORY_KEYS = ("G_stunting", "G_dev", "G_stunting_marked", "G_dev_marked", "G_dev_lo",
                   "G_dev_hi", "accuracy_marked", "future_gain")
GROUP_KEYS = ("accuracy_marked_", "G_dev_marked_", "G_stunting_marked_")  # + a mark group


def held_out_gains(params, batch, rng, *, config: model_lib.Config,
                   lookaheads: dict[str, lookahead_lib.Lookahead],
                   stunting: stunting_lib.Stunting, groups: tuple[int, ...] = ()
                   ) -> dict[str, Array]:
  """The lookahead-specific gain G on a held-out batch, for each monitoring lookahead.

  batch: the pipeline's arrays [b, T] and mark_group int32 [b, T] (pipeline.mark_groups).
  lookaheads: {name: Lookahead}, e.g. {"stunting": ..., "dev": ...}; q, its horizon-1
  control and the mixtures are read with the stunting settings (tau, scheme, lam).
  groups: the mark groups to split by (static; path_star: goal depths). Returns per name:
  G_<name> (all tokens), G_<name>_marked (tokens the testbed marks as needing lookahead;
  NaN without any) and G_<name>_marked_<g> per group, gain_<name> (the mixture over p,
  sharpening included), helps_<name> (fraction of tokens where p~_H > p~_1), and for the
  interval of G on the headline part (the marked tokens with groups, else all):
  sum_<name>, squares_<name> (of per-token g) and count; and accuracy_marked(_<g>), the
  teacher-forced accuracy on the marked tokens (per group).
  """
  logits, cache = model_lib.forward(params, batch["inputs"], batch["positions"], config=config,
                                    segment_ids=batch["segment_ids"])
  log_p = jax.nn.log_softmax(logits)
  targets, w = batch["targets"], batch["weights"]
  marked = w * (batch["mark_group"] > 0)
  by_group = {g: w * (batch["mark_group"] == g) for g in groups}
  part = marked if groups else w

  def mean(x, weights):
    total = weights.sum()
    return jnp.where(total > 0, (x * weights).sum() / jnp.maximum(total, 1e-9), jnp.nan)

  right = (jnp.argmax(logits, -1) == targets).astype(w.dtype)
  out: dict[str, Any] = {"accuracy_marked": mean(right, marked), "count": part.sum()}
  out.update({f"accuracy_marked_{g}": mean(right, m) for g, m in by_group.items()})
  log_p_y = lookahead_lib.token_log_prob(log_p, targets)
  for i, (name, la) in enumerate(sorted(lookaheads.items())):
    key = jax.random.fold_in(rng, i)
    found = lookahead_lib.paths_from_pass(params, logits, cache, batch["positions"],
                                          batch["segment_ids"], key, stunting.beta, w > 0,
                                          config=config, lookahead=la)
    control = lookahead_lib.control_paths(logits, found.valid, key, stunting.beta, lookahead=la)
    mixed = {}
    for side, p in (("H", found), ("1", control)):
      amp = lookahead_lib.amplify(p, stunting.temperature, stunting.scheme)
      mixed[side] = lookahead_lib.mix_at(amp, log_p, targets, stunting.lam, stunting.mixture)
    g = mixed["H"] - mixed["1"]
    out[f"G_{name}"], out[f"helps_{name}"] = lookahead_lib.gain(mixed["1"], mixed["H"], w)
    out[f"G_{name}_marked"] = mean(g, marked)
    out.update({f"G_{name}_marked_{k}": mean(g, m) for k, m in by_group.items()})
    out[f"gain_{name}"] = lookahead_lib.gain(log_p_y, mixed["H"], w)[0]
    out[f"sum_{name}"], out[f"squares_{name}"] = (g * part).sum(), (g * g * part).sum()
  return out


def interval(total: float, squares: float, count: float) -> tuple[float, float, float]:
  """(mean, lo, hi): the normal 95% interval of a mean from its sum, sum of squares and
  count (NaN without a token)."""
  if count <= 0:
    return math.nan, math.nan, math.nan
  mean = total / count
  se = math.sqrt(max(squares / count - mean * mean, 0.0) / max(count - 1, 1))
  return mean, mean - 1.96 * se, mean + 1.96 * se


class Monitor:
  """The lookahead-specific gain G on fixed held-out batches, stunting and dev lookahead.

  Every `stunting.monitor_every` steps, at the stunting settings' tau and lam (it says
  which when it starts). G of the dev lookahead is read on the marked tokens (all tokens
  where the testbed marks none), with its 95% interval over those tokens. Once that
  interval has been above 0, a warning follows when G has not been positive for
  `stunting.monitor_patience` evaluations in a row (the model may have internalized the
  lookahead that stunting is meant to keep it from learning); before, it says once that
  lookahead has not helped yet. With probes, also the probes' figures (probes.named) as
  monitor_<name>.
  """

  def __init__(self, config: ml_collections.ConfigDict, settings: Settings,
               mesh: jax.sharding.Mesh):
    st = config.stunting
    self.every, self.patience, self.streak, self.last = st.monitor_every, st.monitor_patience, 0, {}
    self.helped, self.said_not_yet = False, False
    if not self.every:
      return
    lookaheads = {"stunting": settings.monitor_lookahead, "dev": settings.dev_lookahead}
    batch_sharding = sharding.batch_sharding(mesh)
    host = list(itertools.islice(
        pipeline.make_ordered_iterator(config.data.name, config.data.val_split, **settings.data),
        st.monitor_batches))
    for b in host:
      b["mark_group"] = pipeline.mark_groups(config.data.name, settings.tokenizer,
                                             b["targets"], b["needs_lookahead"])
    groups = tuple(sorted({int(g) for b in host for g in np.unique(b["mark_group"]) if g > 0}))
    self.part = "marked" if groups else "all"
    self.batches = [pipeline.global_batch(b, batch_sharding) for b in host]
    self.fn = jax.jit(functools.partial(held_out_gains, config=settings.model,
                                        lookaheads=lookaheads, stunting=settings.stunting,
                                        groups=groups))
    self.rng = jax.random.key(config.seed + 1)
    s, mon, dev = settings.stunting, settings.monitor_lookahead, settings.dev_lookahead
    logging.info("monitor: G every %d steps on %d held-out batches (%s tokens) at tau %g, lam "
                 "%g (%s, %s) for the stunting lookahead %s B=%d H=%d and the dev lookahead "
                 "%s B=%d H=%d", self.every, len(host), self.part, s.temperature, s.lam,
                 s.scheme, s.mixture, mon.kind, mon.width, mon.horizon, dev.kind, dev.width,
                 dev.horizon)
    self.probes = settings.probes
    if self.probes is not None:
      half = len(host) // 2
      join = lambda part: {k: np.concatenate([b[k] for b in part]) for k in part[0]
                           if k != "mark_group"}
      self.probe_batches = [pipeline.global_batch(join(part), batch_sharding)
                            for part in (host[:half], host[half:])]
      self.probe_fn = jax.jit(functools.partial(probes_lib.probe_metrics, config=settings.model,
                                                probes=self.probes))

  def __call__(self, step: int, params) -> dict[str, float]:
    """G and the gains at this step, means over the batches ({} when not a monitoring step)."""
    if not self.every or step % self.every:
      return {}
    outs = jax.device_get([self.fn(params, b, jax.random.fold_in(self.rng, i))
                           for i, b in enumerate(self.batches)])
    total = {k: sum(float(o[k]) for o in outs) for k in outs[0]
             if k.startswith(("sum_", "squares_")) or k == "count"}
    values = {f"monitor_{k}": [float(o[k]) for o in outs] for k in outs[0] if k not in total}
    gains = {k: float(np.nanmean(v)) if not np.isnan(v).all() else math.nan
             for k, v in values.items()}
    for name in ("stunting", "dev"):
      _, lo, hi = interval(total[f"sum_{name}"], total[f"squares_{name}"], total["count"])
      gains[f"monitor_G_{name}_lo"], gains[f"monitor_G_{name}_hi"] = lo, hi
    if self.probes is not None:
      out = self.probe_fn(params, *self.probe_batches, self.rng)
      gains.update({f"monitor_{k}": v for k, v in probes_lib.named(jax.device_get(out),
                                                                    self.probes).items()})
    self._warn(step, gains)
    self.last = dict(gains, step=step)
    return gains

  def _warn(self, step: int, gains: dict[str, float]) -> None:
    key = "monitor_G_dev_marked" if self.part == "marked" else "monitor_G_dev"
    now = gains[key]
    if gains["monitor_G_dev_lo"] > 0:
      self.helped = True
    if not self.helped:
      if not self.said_not_yet:
        logging.info("step %d: the dev lookahead has not helped yet (G %+.4f nats/token on %s "
                     "tokens, 95%% interval [%+.4f, %+.4f])", step, now, self.part,
                     gains["monitor_G_dev_lo"], gains["monitor_G_dev_hi"])
        self.said_not_yet = True
      return
    self.streak = 0 if now > 0 else self.streak + 1
    if self.streak == self.patience:
      logging.warning("step %d: the dev lookahead's lookahead-specific gain G on %s tokens was "
                      "clearly positive earlier and has not been positive for %d evaluations "
                      "in a row (now %+.4f nats/token): the model may have internalized the "
                      "lookahead", step, self.part, self.streak, now)


def trajectory(log: list[dict[str, float]]) -> dict[str, list[float | None]]:
  """The monitor's G over a run's training, from its metrics log (metrics.read).

  {"step": [...]} and one list per TRAJECTORY_KEYS entry and per logged GROUP_KEYS entry
  (None where a monitoring batch had no marked token, and for the probe's future_gain
  when the probes were off); empty lists when the run was not monitored (or not trained
  here).
  """
  records = [r for r in log if "monitor_G_dev" in r]
  out: dict[str, list] = {"step": [r["step"] for r in records]}
  grouped = sorted({k[len("monitor_"):] for r in records for k in r
                    if k.startswith(tuple("monitor_" + g for g in GROUP_KEYS))})
  for key in TRAJECTORY_KEYS + tuple(grouped):
    out[key] = [r.get(f"monitor_{key}") for r in records]
  return out
