"""The probe evaluator (docs/probes.md): the internal-lookahead probes of probes.py fit on
the validation split and scored on the test split."""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

from lookahead_jax import evals, sharding
from lookahead_jax import probes as probes_lib
from lookahead_jax import report as report_lib
from lookahead_jax.data import pipeline
from lookahead_jax.settings import Settings


def probe_report(params, settings: Settings,
                 mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """The probes (probes.probe_metrics) fit on validation and scored on test.

  Each split gives its first probes.eval_batches * eval.batch_size rows. Returns the
  arrays as lists (future_nll, future_accuracy [1 + layers, K-1], lens_nll [L+1],
  induction [L, h], ...), `figures` (probes.named), the offsets, layers, splits and rows.
  """
  ev, pr = settings.eval, settings.probes
  kwargs = dict(settings.pipeline, global_batch_size=ev.batch_size * pr.eval_batches)
  fit, score = (pipeline.global_batch(
      next(pipeline.make_ordered_iterator(settings.data.name, split, **kwargs)),
      sharding.batch_sharding(mesh)) for split in (ev.validation_split, ev.test_split))
  fn = jax.jit(functools.partial(probes_lib.probe_metrics, config=settings.model, probes=pr))
  out = jax.device_get(fn(params, fit, score, jax.random.key(ev.seed)))
  return dict({k: np.asarray(v).tolist() for k, v in out.items()},
              figures=probes_lib.named(out, pr), offsets=list(pr.offsets),
              layers=list(pr.layers), splits=[ev.validation_split, ev.test_split],
              rows=int(fit["inputs"].shape[0]))


class Evaluator(evals.Base):
  """`probe_report`, when probes.enabled."""

  name = "probes"
  columns = (evals.Column("future_gain", "future-token probe gain", "+.4f"),
             evals.Column("icl_score", "ICL score", "+.4f"),
             evals.Column("induction_max", "induction (best head)", ".3f"))

  def applies(self, context: evals.Context) -> bool:
    return context.settings.probes is not None

  def evaluate(self, params, context: evals.Context) -> dict[str, Any]:
    return probe_report(params, context.settings, context.mesh)

  def table(self, figures: dict[str, Any], report: dict[str, Any]) -> str:
    del report
    return report_lib.probes_table(figures)

  def plots(self, figures: dict[str, Any], report: dict[str, Any], out) -> None:
    report_lib.probe_plots(figures, report["dataset"], out)

  def run_figures(self, figures: dict[str, Any], report: dict[str, Any],
                  best_rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """probes.named's figures of the evaluation (compare's probe columns)."""
    del report, best_rows
    return {c.key: figures["figures"][c.key] for c in self.columns}
