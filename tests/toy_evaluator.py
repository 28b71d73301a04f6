"""An evaluator of its own, outside the package: one file, and its name in
eval.evaluators (test_evaluate.py runs it through evaluate.run and compare.tabulate)."""

from typing import Any

import jax
import numpy as np

from lookahead_jax import evals


class Evaluator(evals.Base):
  """The parameters' global norm, and the headline row's G on all test tokens."""

  name = "toy"
  columns = (evals.Column("param_norm", "parameter norm", ".3f", paired=True),)

  def applies(self, context: evals.Context) -> bool:
    return context.settings.objective.kind == "next_token"  # any condition on the run

  def evaluate(self, params, context: evals.Context) -> dict[str, Any]:
    norm = float(np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(params))))
    return {"param_norm": norm, "headline_G": context.report["best"]["test"]["all"]["G"]}

  def table(self, figures: dict[str, Any], report: dict[str, Any]) -> str:
    return f"toy: parameter norm {figures['param_norm']:.3f} on {report['dataset']}"

  def run_figures(self, figures: dict[str, Any], report: dict[str, Any],
                  best_rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"param_norm": figures["param_norm"]}
