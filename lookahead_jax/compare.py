"""Stunting experiments side by side: `lookahead-jax compare --configs=... --workdir=DIR`.

Each config (`path.py:mode`, or `path.py` for every mode in the file's EXPERIMENTS) is
trained with `--seeds` seeds (config.seed, +1, ...) in DIR/<mode>/seed_<s> (resuming like
`train`, so a finished run is not trained again), then evaluated with its stunting
lookahead and with its dev lookahead (the evaluation suite restricted to those two;
tau and lam chosen on validation for the lookahead and its horizon-1 control, gains on
test). One table and two plots compare the modes:

  naive test NLL; for masked models (objective.kind="spectrum") the pseudo-NLL and the
  bidirectional next-token readout NLL; the lookahead-specific gain G = gain(q_H) -
  gain(q_1) of the stunting and of the dev lookahead, over all tokens and on the tokens
  the testbed marks as needing lookahead; gain(q_H) and gain(q_1) of the stunting
  lookahead; the share of toward tokens during training and the updates v1_update
  skipped; on tsp, the validity and the optimality gap of greedy and beam decoding; on
  path_star, G per goal depth, the teacher-forced first-step accuracy per goal depth,
  beam decoding's first step and the share of plain and amplified samples that reach a
  depth-2 goal, walk and end-of-path accuracy and the verifier strength; the
  training cost (median step time over the baseline's, the run with mode "none"); G over
  training (the monitor); with probes, the future-token probe gain, the ICL score and
  the best induction score of the evaluation, and the probe gain over training.

With one seed, intervals are the evaluation's bootstrap over test rows; with several,
mean and 95% t-interval over seeds, and the `vs none` columns (G of the stunting
lookahead, G of the dev lookahead on marked tokens, test NLL) are differences to the
baseline paired by seed (on path_star also G of the dev lookahead and the first-step
accuracy at depth 2). Writes DIR/compare.json, DIR/compare.md, DIR/compare.png and
DIR/G_trajectory.png (and DIR/accuracy_trajectory.png, DIR/probe_trajectory.png). Each
run's figures are also kept in DIR/<mode>/seed_<s>/compare_run.json with its config: a
run finished under the same config is neither trained nor evaluated again, so extending a
comparison with seeds or modes costs only the new runs.
"""

from __future__ import annotations

import ast
import copy
import json
import math
import os
import statistics
from collections.abc import Sequence
from typing import Any

import jax
from absl import logging
from etils import epath
from ml_collections import ConfigDict

from lookahead_jax import checkpoint, evals, evaluate, monitor, report, stats, train
from lookahead_jax import config as config_lib
from lookahead_jax import metrics as metrics_lib
from lookahead_jax.config import ConfigError, Settings, prepare_and_validate

BASELINE = "none"
PROBE_METRICS = ("future_gain", "icl_score", "induction_max")  # probes.named's figures
RUN_FILE = "compare_run.json"  # a run's figures and the config they were measured with


def load(spec: str) -> list[tuple[str, ConfigDict]]:
  """(name, config) of a spec `path.py:arg` (one run) or `path.py` (its EXPERIMENTS)."""
  path, _, arg = spec.partition(":")
  try:
    module = config_lib.load_file(path)
  except ConfigError as e:
    raise ConfigError(f"--configs: {e}") from None
  args = [arg] if arg else list(getattr(module, "EXPERIMENTS", ()))
  if not args:
    raise ConfigError(f"--configs: {path} has no EXPERIMENTS; name a run as {path}:ARG")
  return [(a, module.get_config(a)) for a in args]


def _override(config: ConfigDict, assignments: Sequence[str]) -> None:
  """Applies KEY=VALUE assignments (values parsed as Python literals, else strings)."""
  for assignment in assignments:
    key, sep, text = assignment.partition("=")
    if not sep:
      raise ConfigError(f"--set={assignment!r}: write KEY=VALUE, e.g. train.steps=100")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    try:
      config.update_from_flattened_dict({key: value})
    except (KeyError, AttributeError, TypeError) as e:
      raise ConfigError(f"--set={assignment!r}: {e}") from None


def _step_time(log: list[dict[str, Any]]) -> float | None:
  """Median logged step time of a run, without the first log (it includes compilation)."""
  times = [r["step_time"] for r in log if r.get("step_time")]
  return statistics.median(times[1:] or times) if times else None


def _toward(log: list[dict[str, Any]]) -> float | None:
  """Mean logged share of toward tokens over a run's training (None: no stunting), read
  from its log, so a run finished earlier counts as one trained now does."""
  shares = [r["toward"] for r in log if "toward" in r]
  return statistics.fmean(shares) if shares else None


def _best(rep: dict[str, Any], kind: str, width: int, horizon: int) -> dict[str, Any]:
  """The row of a lookahead setting with the best validation G."""
  rows = [r for r in rep["rows"] if (r["kind"], r["width"], r["horizon"]) ==
          (kind, width, horizon)]
  return max(rows, key=lambda r: r["validation_G"])


def _config_key(config: ConfigDict) -> Any:
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _saved_figures(config: ConfigDict, workdir: str) -> dict[str, Any] | None:
  """The figures of `workdir/RUN_FILE` when they were measured with this config on its
  final checkpoint; else None (the run is trained, or resumed, and evaluated)."""
  path = epath.Path(workdir) / RUN_FILE
  if not path.exists() or checkpoint.kept_steps(workdir)[-1:] != [config.train.steps]:
    return None
  try:
    saved = json.loads(path.read_text())
  except ValueError:  # a write cut short
    return None
  return saved["figures"] if saved.get("config") == _config_key(config) else None


def run_one(config: ConfigDict, settings: Settings, workdir: str) -> dict[str, Any]:
  """Trains and evaluates one run (one mode, one seed); returns its figures, which it
  keeps in workdir/RUN_FILE (`_saved_figures` reads them back instead of redoing both)."""
  saved = _saved_figures(config, workdir)
  if saved is not None:
    logging.info("%s: figures of the finished run read from %s", workdir, RUN_FILE)
    return saved
  summary = train.run(config, settings, workdir)
  stunt, dev = settings.monitor_lookahead, settings.dev_lookahead
  setups = [(stunt.kind, stunt.width, stunt.horizon), (dev.kind, dev.width, dev.horizon)]
  rep = evaluate.run(config, settings, workdir, lookaheads=list(dict.fromkeys(setups)))
  log = metrics_lib.read(workdir)  # the run's log, read once
  out = {"test_nll": rep["naive"]["test_nll"], "toward": _toward(log),
         "skipped": float(summary["skipped_total"]), "step_time": _step_time(log),
         "trajectory": monitor.trajectory(log)}
  best_rows = {"stunting": _best(rep, *setups[0]), "dev": _best(rep, *setups[1])}
  task = evals.task(config.data.name)
  if task is not None:  # the testbed's own figures
    out.update(task.columns(rep[task.NAME], best_rows))
  for key in ("pll_nll", "readout_nll"):  # masked models (masked.py)
    if key in rep.get("masked", {}):
      out[key], out[key + "_ci"] = rep["masked"][key], rep["masked"][key + "_ci"]
  out.update({k: rep["probes"]["figures"][k] for k in PROBE_METRICS if "probes" in rep})
  for label, row in best_rows.items():
    test = row["test"]
    for suffix, part in (("", "all"), ("_marked", "marked")):
      out[f"G_{label}{suffix}"] = test[part]["G"]
      out[f"G_{label}{suffix}_ci"] = test[part]["G_ci"]
    if label == "stunting":
      out["gain_stunting"], out["gain_stunting_ci"] = test["all"]["gain"], test["all"]["gain_ci"]
      out["control_stunting"] = test["all"]["control"]
      out["control_stunting_ci"] = test["all"]["control_ci"]
  if jax.process_index() == 0:
    report.write_json(epath.Path(workdir) / RUN_FILE, {"config": _config_key(config),
                                                       "figures": out})
  return json.loads(json.dumps(out))  # the same types as when read back


def _aggregate(mode: str, runs: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
  """One row of the table: a mode's figures `keys` over its seeds (mean and t-interval)."""
  row: dict[str, Any] = {"mode": mode, "seeds": len(runs)}
  for key in keys:
    values = [r.get(key) for r in runs]
    if all(v is None for v in values):
      continue
    if len(runs) == 1:
      row[key] = values[0]
      if runs[0].get(key + "_ci"):
        row[key + "_ci"] = runs[0][key + "_ci"]
      continue
    mean, lo, hi = stats.t_interval(values)
    row[key], row[key + "_ci"] = mean, [lo, hi]
    row[key + "_per_seed"] = values
  return row


def _mean_trajectory(runs: list[dict[str, Any]]) -> dict[str, list]:
  """The seeds' G trajectories step by step (steps every seed logged): the mean, and the
  95% t-interval over seeds in key + "_ci" ([lo, hi] per step; None with one seed)."""
  steps = sorted(set.intersection(*(set(r["trajectory"]["step"]) for r in runs)))
  out: dict[str, list] = {"step": steps}
  for key in sorted({k for r in runs for k in r["trajectory"]} - {"step"}):
    per = [dict(zip(r["trajectory"]["step"], r["trajectory"].get(key, [])))
           for r in runs]
    means, cis = [], []
    for s in steps:
      values = [p[s] for p in per if p.get(s) is not None and not math.isnan(p[s])]
      if len(values) >= 2:
        mean, lo, hi = stats.t_interval(values)
        means.append(mean)
        cis.append([lo, hi])
      else:
        means.append(values[0] if values else None)
        cis.append(None)
    out[key], out[key + "_ci"] = means, cis
  return out


def run(specs: str, workdir: str, assignments: Sequence[str] = (),
        seeds: int = 1) -> list[dict[str, Any]]:
  """Trains and evaluates every run of `specs` (comma-separated) with `seeds` seeds each;
  writes the comparison and returns its rows."""
  runs = [item for spec in specs.split(",") if spec for item in load(spec)]
  if not runs:
    raise ConfigError("--configs: give at least one config (path.py or path.py:ARG)")
  if seeds < 1:
    raise ConfigError(f"--seeds={seeds}: give at least 1")
  jobs = []  # every config is checked before anything trains
  for name, config in runs:
    _override(config, assignments)
    for i in range(seeds):
      seeded = copy.deepcopy(config)
      seeded.seed = config.seed + i
      jobs.append((name, seeded, prepare_and_validate(seeded)))
  results: dict[str, list[dict[str, Any]]] = {}
  for name, config, settings in jobs:
    out = run_one(config, settings, os.path.join(workdir, name, f"seed_{config.seed}"))
    results.setdefault(name, []).append(out)
  base = results.get(BASELINE, next(iter(results.values())))
  for per_seed in results.values():
    for r, b in zip(per_seed, base):
      r["cost"] = r["step_time"] / b["step_time"] if r["step_time"] and b["step_time"] else None
      paired = BASELINE in results
      for key, of in (("G_vs_baseline", "G_stunting"), ("nll_vs_baseline", "test_nll"),
                      ("G_dev_marked_vs_baseline", "G_dev_marked"),
                      ("G_dev_d2_vs_baseline", "G_dev_d2"),
                      ("first_d2_vs_baseline", "first_d2")):
        mine, theirs = r.get(of), b.get(of)
        r[key] = mine - theirs if paired and mine is not None and theirs is not None else None
  task = evals.task(runs[0][1].data.name)
  columns = report.compare_columns(task.COLUMNS if task else ())
  keys = [key for key, _, _ in columns if key not in ("mode", "seeds")]
  rows = [_aggregate(name, per_seed, keys) for name, per_seed in results.items()]
  trajectories = {name: _mean_trajectory(per_seed) for name, per_seed in results.items()}
  if jax.process_index() == 0:
    dataset = runs[0][1].data.name
    note = ("one seed, 95% bootstrap intervals over test rows" if seeds == 1 else
            f"mean and 95% t-interval over {seeds} seeds; G vs none paired by seed")
    text = report.compare_markdown(rows, dataset, note, columns)
    out = epath.Path(workdir)
    report.write_json(out / "compare.json", {"dataset": dataset, "specs": specs, "seeds": seeds,
                                             "rows": rows, "trajectories": trajectories,
                                             "runs": results})
    report.write_text(out / "compare.md", text + "\n")
    report.compare_plots(rows, trajectories, dataset, out)
    print(text)
    print(f"Comparison: {workdir}/compare.md, compare.json, compare.png, G_trajectory.png"
          + (", probe_trajectory.png" if report.has_series(trajectories, "future_gain")
             else ""))
  return rows
