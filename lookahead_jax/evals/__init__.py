"""Evaluators: one module each, one `Evaluator` class per module, built by name from the
config's `eval.evaluators` and run in one loop (evaluate.run), as big_vision's are.

  gain.py       the gain grid: G = gain(q_H) - gain(q_1) of every lookahead setting (its
                figures are the report's top level; the others' sit under their name)
  masked.py     a masked model's pseudo-NLL and bidirectional readout NLL
  path_star.py  path_star's first step by goal depth, goals reached, verifier strength
  tsp.py        tsp's decoded tours against the heuristics and the optimum
  probes.py     the internal-lookahead probes

An evaluator declares (the protocol `Evaluator` below):

  name               the report's key of its figures (and the module's name).
  columns            compare's columns of its figures (`Column`), each saying whether
                     compare pairs it with the baseline (a `<key>_vs_baseline` column).
  headline           compare's printed columns (keys) when this evaluator's testbed runs,
                     or None (report.HEADLINE).
  applies(context)   whether it runs for this config (testbed, objective, probes).
  evaluate(params, context) -> figures   (JSON-able; context.report holds the figures of
                     the evaluators before it: the gain grid's headline row drives
                     amplified decoding).
  table(figures, report) -> str | None   what the report prints.
  plots(figures, report, out)            its PNGs in `out`.
  run_figures(figures, report, best_rows) -> {key: value}   compare's figures of one run
                     (`best_rows`: the gain grid's best row of the stunting and of the
                     dev lookahead).
  paired(mode_runs, base_runs, resamples, seed) -> {key: value}   figures of a mode
                     against the baseline across runs (path_star: paired by test graph).
  compile_ahead(ahead, context, params)  queues its compiles while the run trains.

`Base` gives the optional ones (no table, plots, pairing or compiles). A new evaluator is
one new module with its `Evaluator` and its name in `eval.evaluators`: a module of this
package, or any importable module ("my_package.my_eval"; tests/toy_evaluator.py).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from typing import TYPE_CHECKING, Any, Protocol

import jax

if TYPE_CHECKING:  # settings.py builds the evaluators to check eval.evaluators
  from lookahead_jax.settings import Settings


@dataclasses.dataclass(frozen=True)
class Column:
  """One column of compare's table: a run figure's key (its interval sits in key + "_ci"),
  its header and format; `paired`: compare adds `<key>_vs_baseline`, the mode's figure
  minus the baseline's of the same seed, averaged over seeds."""

  key: str
  header: str
  fmt: str
  paired: bool = False

  def as_tuple(self) -> tuple[str, str, str]:
    return self.key, self.header, self.fmt

  def vs_baseline(self) -> Column:
    return Column(f"{self.key}_vs_baseline", f"{self.header} vs none",
                  self.fmt if self.fmt.startswith("+") else "+" + self.fmt)


@dataclasses.dataclass
class Context:
  """What every evaluator reads.

  settings:        what `settings.validate` derived from the run's config.
  mesh:            the devices' mesh; workdir: the run's directory (its metrics log).
  lookaheads:      the (kind, width, horizon) the gain grid evaluates; None: the grid of
                   eval.kinds x eval.widths x eval.horizons (compare: its two lookaheads).
  report:          the figures so far (evaluate.run adds each evaluator's).
  """

  settings: Settings
  mesh: jax.sharding.Mesh
  workdir: str
  lookaheads: list[tuple[str, int, int]] | None = None
  report: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def headline(self) -> dict[str, Any] | None:
    """The gain grid's headline row when it looks ahead (H > 1), else None."""
    best = self.report.get("best")
    return best if best is not None and best["horizon"] > 1 else None


class Evaluator(Protocol):
  name: str
  columns: tuple[Column, ...]
  headline: tuple[str, ...] | None

  def applies(self, context: Context) -> bool: ...

  def evaluate(self, params, context: Context) -> dict[str, Any]: ...

  def table(self, figures: dict[str, Any], report: dict[str, Any]) -> str | None: ...

  def plots(self, figures: dict[str, Any], report: dict[str, Any], out) -> None: ...

  def run_figures(self, figures: dict[str, Any], report: dict[str, Any],
                  best_rows: dict[str, dict[str, Any]]) -> dict[str, Any]: ...

  def paired(self, mode_runs: list[dict[str, Any]], base_runs: list[dict[str, Any]],
             resamples: int, seed: int) -> dict[str, Any]: ...

  def compile_ahead(self, ahead, context: Context, params) -> None: ...


class Base:
  """The optional parts of the protocol: no table, no plots, no pairing, no compiles."""

  headline: tuple[str, ...] | None = None

  def table(self, figures: dict[str, Any], report: dict[str, Any]) -> str | None:
    del figures, report
    return None

  def plots(self, figures: dict[str, Any], report: dict[str, Any], out) -> None:
    del figures, report, out

  def paired(self, mode_runs: list[dict[str, Any]], base_runs: list[dict[str, Any]],
             resamples: int, seed: int) -> dict[str, Any]:
    del mode_runs, base_runs, resamples, seed
    return {}

  def compile_ahead(self, ahead, context: Context, params) -> None:
    del ahead, context, params


def module_name(name: str) -> str:
  """The module of an evaluator's name: this package's module of that name, else the name
  as a module path (an evaluator of your own, importable from sys.path)."""
  own = f"{__name__}.{name}"
  return own if importlib.util.find_spec(own) is not None else name


def build(names) -> list[Evaluator]:
  """The evaluators of `eval.evaluators`, in order: each module's `Evaluator()`."""
  return [importlib.import_module(module_name(name)).Evaluator() for name in names]
