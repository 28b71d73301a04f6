"""Evaluators, one module each: the gain grid (evaluate.py, which runs the others), the
testbeds' task evaluators (`TASKS`, chosen by the config's dataset), masked models
(masked.py), probes (probes.py), and the generation report (generation.py, its own
command).

A task evaluator module has NAME (its testbed's), COLUMNS (compare's columns: key,
header, format), `evaluate(params, config, settings, headline) -> figures`,
`table(figures, headline) -> str` and `columns(figures, best_rows) -> compare figures`;
optionally HEADLINE, the keys of compare's printed columns (else report.HEADLINE), and
`compile_ahead(ahead, config, settings, params)`, which queues its compiles on an
aot.Ahead while the run trains (evaluate.compile_ahead).
"""

from __future__ import annotations

from types import ModuleType

from lookahead_jax.data import registry
from lookahead_jax.evals import path_star, tsp

TASKS: dict[str, ModuleType] = {m.NAME: m for m in (tsp, path_star)}


def task(dataset: str) -> ModuleType | None:
  """The task evaluator of a dataset's testbed, None when it has none."""
  return TASKS.get(registry.base_name(dataset))
