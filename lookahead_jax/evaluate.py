"""The evaluation suite (`lookahead-jax eval`, and `train` with eval.at_end): the
evaluators of `eval.evaluators` (evals/), run in one loop on the command's parameters.

The gain grid (evals/gain.py) runs first and its figures are the report's top level;
every other evaluator that applies (a testbed's task, a masked model, the probes) adds its
figures under its name, its table and its plots. Outputs in `workdir/eval/`:
report.json, the evaluators' plots (and G_trajectory.png for a monitored run); the tables
are printed.
"""

from __future__ import annotations

from typing import Any

import jax
from etils import epath
from ml_collections import ConfigDict

from lookahead_jax import aot, evals, monitor, report
from lookahead_jax import lookahead as lookahead_lib
from lookahead_jax import metrics as metrics_lib
from lookahead_jax import settings as settings_lib
from lookahead_jax import state as state_lib
from lookahead_jax.settings import Settings


def _applying(context: evals.Context) -> list[evals.Evaluator]:
  return [e for e in evals.build(context.settings.eval.evaluators) if e.applies(context)]


def run(settings: Settings, workdir: str, params=None,
        lookaheads: list[tuple[str, int, int]] | None = None) -> dict[str, Any]:
  """Evaluates the command's parameters (state.load_params, or `params`).

  lookaheads: the (kind, width, horizon) settings of the gain grid; None: every
  combination of eval.kinds, eval.widths and eval.horizons.
  Writes workdir/eval/report.json and the plots, prints the tables, returns the report.
  """
  mesh = state_lib.make_mesh(settings.mesh)
  for kind, width, horizon in lookaheads or ():
    lookahead_lib.Lookahead(kind=kind, width=width, horizon=horizon).check(settings.model)
  source = "the given parameters"
  if params is None:
    params, source = state_lib.load_params(settings, workdir, mesh)
  context = evals.Context(settings, mesh, workdir, lookaheads, {"params": source})
  evaluators = _applying(context)
  for evaluator in evaluators:
    figures = evaluator.evaluate(params, context)
    if evaluator.name == "gain":
      context.report.update(figures)
    else:
      context.report[evaluator.name] = figures
  out = context.report
  if jax.process_index() == 0:
    folder = epath.Path(workdir) / "eval"
    report.write_json(folder / "report.json", out)
    trajectory = monitor.trajectory(metrics_lib.read(workdir))
    if trajectory["step"]:
      report.trajectory_plot({"this run": trajectory}, folder)
    for evaluator in evaluators:
      figures = figures_of(evaluator, out)
      evaluator.plots(figures, out, folder)
      text = evaluator.table(figures, out)
      if text:
        print(text)
    print(f"Report and plots: {folder}")
  return out


def figures_of(evaluator: evals.Evaluator, report_: dict[str, Any]) -> dict[str, Any] | None:
  """An evaluator's figures in a report: the top level for the gain grid, else under its
  name (None when it did not run)."""
  return report_ if evaluator.name == "gain" else report_.get(evaluator.name)


def compile_ahead(ahead: aot.Ahead, settings: Settings, params) -> None:
  """Queues on `ahead` (into the persistent compilation cache, aot.Ahead.warm) the compiles
  `run` makes for parameters shaped like `params`: each evaluator's that applies."""
  if not aot.caching():
    return
  context = evals.Context(settings, state_lib.make_mesh(settings.mesh), "")
  for evaluator in _applying(context):
    evaluator.compile_ahead(ahead, context, params)


def command(workdir: str, config: ConfigDict) -> None:
  """`lookahead-jax eval`: the evaluation suite on the workdir's parameters."""
  run(settings_lib.prepare_and_validate(config), workdir)
