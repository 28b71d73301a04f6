"""The masked-model evaluator (docs/masked.md): a model trained with masks
(objective.kind="spectrum") gets its test pseudo-NLL and its bidirectional next-token
readout NLL; the gain grid itself reads its causal mode."""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from lookahead_jax import evals, sharding, stats
from lookahead_jax import masked as masked_lib
from lookahead_jax.data import pipeline
from lookahead_jax.evals import gain
from lookahead_jax.settings import Settings


def masked_nll(params, settings: Settings, batches, mesh, bootstrap: int, seed: int
               ) -> dict[str, Any]:
  """A masked model's test pseudo-NLL (each token hidden in turn) and its bidirectional
  next-token readout NLL (every future token hidden), nats/token, each with a 95%
  bootstrap interval over rows; and the seconds it took (the row is re-encoded once per
  position for each)."""
  step = jax.jit(functools.partial(masked_lib.held_out_sums, config=settings.model,
                                   mask_id=settings.objective.mask_id))
  start, sums = time.time(), {}
  for batch in tqdm(list(batches), desc="pll", unit="batch", disable=jax.process_index() != 0):
    out = step(params, pipeline.global_batch(batch, sharding.batch_sharding(mesh)))
    for key, value in out.items():
      sums.setdefault(key, []).append(sharding.gather(value).astype(np.float64))
  sums = {k: np.concatenate(v) for k, v in sums.items()}
  weights = stats.resample_counts(len(sums["pll_tokens"]), bootstrap, seed)
  out = {"seconds": round(time.time() - start, 1)}
  for key in ("pll_nll", "readout_nll"):
    counts = sums[key.replace("nll", "tokens")]
    lo, hi = stats.bootstrap_ratio(sums[key], counts, weights)
    out[key], out[key + "_ci"] = float(sums[key].sum() / counts.sum()), [float(lo), float(hi)]
  return out


class Evaluator(evals.Base):
  """`masked_nll` on the test split, for a model trained with masks."""

  name = "masked"
  columns = (evals.Column("pll_nll", "pseudo-NLL", ".4f"),
             evals.Column("readout_nll", "readout NLL (bidir.)", ".4f"))

  def applies(self, context: evals.Context) -> bool:
    return context.settings.objective.kind == "spectrum"

  def evaluate(self, params, context: evals.Context) -> dict[str, Any]:
    ev = context.settings.eval
    return masked_nll(params, context.settings,
                      gain.eval_batches(context.settings, ev.test_split),
                      context.mesh, ev.bootstrap, ev.seed)

  def run_figures(self, figures: dict[str, Any], report: dict[str, Any],
                  best_rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    del report, best_rows
    return {k: figures[k] for key in ("pll_nll", "readout_nll") if key in figures
            for k in (key, key + "_ci")}
