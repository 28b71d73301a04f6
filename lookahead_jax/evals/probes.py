"""The probe evaluator (docs/probes.md): the internal-lookahead probes of probes.py fit on
the validation split and scored on the test split."""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from ml_collections import ConfigDict

from lookahead_jax import probes as probes_lib
from lookahead_jax import sharding
from lookahead_jax.data import pipeline
from lookahead_jax.settings import Settings


def probe_report(params, config: ConfigDict, settings: Settings,
                 mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """The probes (probes.probe_metrics) fit on validation and scored on test.

  Each split gives its first probes.eval_batches * eval.batch_size rows. Returns the
  arrays as lists (future_nll, future_accuracy [1 + layers, K-1], lens_nll [L+1],
  induction [L, h], ...), `figures` (probes.named), the offsets, layers, splits and rows.
  """
  ev, pr = config.eval, settings.probes
  kwargs = dict(settings.data, global_batch_size=ev.batch_size * config.probes.eval_batches)
  fit, score = (pipeline.global_batch(
      next(pipeline.make_ordered_iterator(config.data.name, split, **kwargs)),
      sharding.batch_sharding(mesh)) for split in (ev.validation_split, ev.test_split))
  fn = jax.jit(functools.partial(probes_lib.probe_metrics, config=settings.model, probes=pr))
  out = jax.device_get(fn(params, fit, score, jax.random.key(ev.seed)))
  return dict({k: np.asarray(v).tolist() for k, v in out.items()},
              figures=probes_lib.named(out, pr), offsets=list(pr.offsets),
              layers=list(pr.layers), splits=[ev.validation_split, ev.test_split],
              rows=int(fit["inputs"].shape[0]))
