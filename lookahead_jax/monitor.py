"""Monitoring during training: does explicit lookahead keep helping the model?

Every `stunting.monitor_every` steps, on fixed held-out batches, the lookahead-specific
gain G = gain(q_H) - gain(q_1) of the stunting lookahead and of a dev lookahead that
stunting never uses (DESIGN.md section 3). If the dev lookahead's G stops being
positive, the model may have learned to do the lookahead itself: a warning says so.
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
from etils import epath

from lookahead_jax import lookahead as lookahead_lib
from lookahead_jax import metrics as metrics_lib
from lookahead_jax import model as model_lib
from lookahead_jax import probes as probes_lib
from lookahead_jax import sharding
from lookahead_jax import stunting as stunting_lib
from lookahead_jax.config import Settings
from lookahead_jax.data import pipeline

Array = jax.Array
TRAJECTORY_KEYS = ("G_stunting", "G_dev", "G_stunting_marked", "G_dev_marked", "future_gain")


def held_out_gains(params, batch, rng, *, config: model_lib.Config,
                   lookaheads: dict[str, lookahead_lib.Lookahead],
                   stunting: stunting_lib.Stunting) -> dict[str, Array]:
  """The lookahead-specific gain G on a held-out batch, for each monitoring lookahead.

  lookaheads: {name: Lookahead}, e.g. {"stunting": ..., "dev": ...}; q, its horizon-1
  control and the mixtures are read with the stunting settings (tau, scheme, lam). Returns
  per name: G_<name> (all tokens), G_<name>_marked (tokens the testbed marks as needing
  lookahead; NaN without any), gain_<name> (the mixture over p, sharpening included) and
  helps_<name> (fraction of tokens where p~_H > p~_1).
  """
  logits, cache = model_lib.forward(params, batch["inputs"], batch["positions"], config=config,
                                    segment_ids=batch["segment_ids"])
  log_p = jax.nn.log_softmax(logits)
  targets, w = batch["targets"], batch["weights"]
  marked = w * batch["needs_lookahead"].astype(w.dtype)
  log_p_y = lookahead_lib.token_log_prob(log_p, targets)
  out: dict[str, Any] = {}
  for i, (name, la) in enumerate(sorted(lookaheads.items())):
    key = jax.random.fold_in(rng, i)
    found = lookahead_lib.paths_from_pass(params, logits, cache, batch["positions"],
                                          batch["segment_ids"], key, stunting.beta,
                                          config=config, lookahead=la)
    control = lookahead_lib.control_paths(logits, found.valid, key, stunting.beta, lookahead=la)
    mixed = {}
    for side, p in (("H", found), ("1", control)):
      amp = lookahead_lib.amplify(p, stunting.temperature, stunting.scheme)
      mixed[side] = lookahead_lib.mix_at(amp, log_p, targets, stunting.lam, stunting.mixture)
    out[f"G_{name}"], out[f"helps_{name}"] = lookahead_lib.gain(mixed["1"], mixed["H"], w)
    g_marked = lookahead_lib.gain(mixed["1"], mixed["H"], marked)[0]
    out[f"G_{name}_marked"] = jnp.where(marked.sum() > 0, g_marked, jnp.nan)
    out[f"gain_{name}"] = lookahead_lib.gain(log_p_y, mixed["H"], w)[0]
  return out


class Monitor:
  """The lookahead-specific gain G on fixed held-out batches, stunting and dev lookahead.

  Every `stunting.monitor_every` steps; warns once the dev lookahead's G has not been
  positive for `stunting.monitor_patience` evaluations in a row (the model may have
  internalized the lookahead that stunting is meant to keep it from learning). With
  probes, also the probes' figures (probes.named) as monitor_<name>.
  """

  def __init__(self, config: ml_collections.ConfigDict, settings: Settings,
               mesh: jax.sharding.Mesh):
    st = config.stunting
    self.every, self.patience, self.streak, self.last = st.monitor_every, st.monitor_patience, 0, {}
    if not self.every:
      return
    lookaheads = {"stunting": settings.monitor, "dev": settings.dev_lookahead}
    batch_sharding = sharding.batch_sharding(mesh)
    host = list(itertools.islice(
        pipeline.make_ordered_iterator(config.data.name, config.data.val_split, **settings.data),
        st.monitor_batches))
    self.batches = [pipeline.global_batch(b, batch_sharding) for b in host]
    self.fn = jax.jit(functools.partial(held_out_gains, config=settings.model,
                                        lookaheads=lookaheads, stunting=settings.stunting))
    self.rng = jax.random.key(config.seed + 1)
    self.probes = settings.probes
    if self.probes is not None:
      half = len(host) // 2
      join = lambda part: {k: np.concatenate([b[k] for b in part]) for k in part[0]}
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
    values = {f"monitor_{k}": [float(o[k]) for o in outs] for k in outs[0]}
    gains = {k: float(np.nanmean(v)) if not np.isnan(v).all() else math.nan
             for k, v in values.items()}
    if self.probes is not None:
      out = self.probe_fn(params, *self.probe_batches, self.rng)
      gains.update({f"monitor_{k}": v for k, v in probes_lib.named(jax.device_get(out),
                                                                    self.probes).items()})
    self.streak = 0 if gains["monitor_G_dev"] > 0 else self.streak + 1
    if self.streak == self.patience:
      logging.warning("step %d: the dev lookahead's lookahead-specific gain G has not been "
                      "positive for %d evaluations in a row (now %+.4f nats/token): the model "
                      "may have internalized the lookahead", step, self.streak,
                      gains["monitor_G_dev"])
    self.last = dict(gains, step=step)
    return gains


def trajectory(workdir: str) -> dict[str, list[float | None]]:
  """The monitor's G over a run's training, from its metrics log.

  {"step": [...]} and one list per TRAJECTORY_KEYS entry (None where a monitoring batch
  had no marked token, and for the probe's future_gain when the probes were off); empty
  lists when the run was not monitored (or not trained here).
  """
  logged = (epath.Path(workdir) / metrics_lib.JSONL).exists()
  records = [r for r in metrics_lib.read(workdir) if "monitor_G_dev" in r] if logged else []
  out: dict[str, list] = {"step": [r["step"] for r in records]}
  for key in TRAJECTORY_KEYS:
    out[key] = [r.get(f"monitor_{key}") for r in records]
  return out
