"""Stunting experiments side by side: `lookahead-jax compare --configs=... --workdir=DIR`.

Each config (`path.py:mode`, or `path.py` for every mode in the file's EXPERIMENTS) is
trained with `--seeds` seeds (config.seed, +1, ...) in DIR/<mode>/seed_<s> (resuming like
`train`, so a finished run is not trained again), then evaluated with its stunting
lookahead and with its dev lookahead (the evaluation suite restricted to those two;
tau and lam fitted on validation for the lookahead and its horizon-1 control, gains on
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
accuracy at depth 2). Every interval in the table states the n behind it: "n=3 seeds", or
"n=2 of 3 seeds" when a figure is missing in some seeds (the t-interval is over the seeds
that have it), or "n=1000 rows" for one seed's bootstrap over test rows (graphs, for the
per-depth figures).

Where a mode and the baseline share the test graphs (path_star: the same testbed, data
options and test split, and the per-graph report of evals/path_star.py), their differences
at goal depth 2 also get a bootstrap over test graphs paired across runs (seed i of the
mode against seed i of the baseline, the same resampled graphs for every seed and both
modes; stats.paired_bootstrap_diff): `first_d2_paired` (teacher-forced first-step
accuracy) and `G_d2_paired` (G of each run's headline row on the depth-2 first steps).

Writes DIR/compare.json, DIR/compare.md, DIR/compare.png and DIR/G_trajectory.png (and
DIR/accuracy_trajectory.png, DIR/probe_trajectory.png).

Run records. A finished run's record is RECORDS/<mode>/seed_<s>/ (`--records=RECORDS`;
without it, the run's own workdir): RUN_FILE (its figures, with the config and the code
version that made them) and what made them (RECORD_FILES: the resolved config, the code
version, the metrics log, the evaluation report); no checkpoints. A run with a record of
the same config is neither trained nor evaluated again, whatever code version made it, so
a comparison grows over sessions and machines: records are committed under results/,
each job (one mode and seed, on any machine) adds its own, and `compare` over them trains
only the runs that have none. The table's "code version" column shows each run's
version (metrics.write_version records the training's in version.json; a resumed run
lists each); when runs of different code versions meet in one table, compare prints a
warning and the table says so. A run preempted (SIGTERM) before its last step is not
evaluated and leaves no record; compare stops there and the same command resumes it.
Delete a record to measure its run again (it is
evaluated again from its checkpoint where the workdir still has one). With --records the
tables and plots are written to RECORDS, beside the records they are built from.
"""

from __future__ import annotations

import ast
import copy
import csv
import io
import json
import math
import os
import statistics
from collections.abc import Sequence
from typing import Any

import jax
from absl import flags, logging
from etils import epath
from ml_collections import ConfigDict

from lookahead_jax import aot, checkpoint, evals, evaluate, monitor, report, stats, train
from lookahead_jax import config as config_lib
from lookahead_jax import metrics as metrics_lib
from lookahead_jax.config import ConfigError
from lookahead_jax.settings import Settings, prepare_and_validate

# `lookahead-jax compare`'s flags (`command`'s parameters of these names)
flags.DEFINE_string(
    "configs", None, "compare: comma-separated configs, path.py:ARG for one run or path.py for "
    "every run in the file's EXPERIMENTS.")
flags.DEFINE_integer("seeds", 1, "compare: seeds per run (config.seed, +1, ...).")
flags.DEFINE_string(
    "records", "", "compare: the runs' records (committed, e.g. results/path_star): a run "
    "with one is not trained again; the table and plots are written there.")
flags.DEFINE_bool(
    "records_only", False, "compare: tabulate the runs that have a record and train none "
    "(the others are named and left out), e.g. while a comparison's runs are still going.")

BASELINE = "none"
RUN_FILE = "compare_run.json"  # a run's figures, the config and code version that made them
# What made a record's figures, copied from the run's workdir beside RUN_FILE.
RECORD_FILES = ("config.json", metrics_lib.VERSION, metrics_lib.JSONL, "eval/report.json")
VERSION_COLUMN = ("version", "code version", "s")
# The training's figures (run_one) and the cost, after the evaluators' columns.
TRAINING_COLUMNS = (
    evals.Column("toward", "toward", ".1%"), evals.Column("balanced", "balanced steps", ".1%"),
    evals.Column("skipped", "skipped", ".0f"), evals.Column("cost", "step time / baseline", ".2f"))


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
  try:
    return [(a, module.get_config(a)) for a in args]
  except (AttributeError, KeyError) as e:  # a key the locked schema does not have
    raise config_lib.renamed_key_error(e) or e from None


def _override(config: ConfigDict, assignments: Sequence[str]) -> None:
  """Applies KEY=VALUE assignments, the command line's --config.KEY=VALUE (values parsed as
  Python literals, else strings)."""
  for assignment in assignments:
    key, sep, text = assignment.partition("=")
    if not sep:
      raise ConfigError(f"--config.{assignment}: write --config.KEY=VALUE, e.g. "
                        "--config.train.steps=100")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    try:
      config.update_from_flattened_dict({key: value})
    except (KeyError, AttributeError, TypeError) as e:
      raise config_lib.renamed_key_error(e) or ConfigError(
          f"--config.{assignment}: {e}") from None


def _step_time(log: list[dict[str, Any]]) -> float | None:
  """Median logged step time of a run, without the first log (it includes compilation)."""
  times = [r["step_time"] for r in log if r.get("step_time")]
  return statistics.median(times[1:] or times) if times else None


def _logged_mean(log: list[dict[str, Any]], key: str) -> float | None:
  """Mean of `key` over a run's logged steps (None where the run never logs it: toward,
  the share of toward tokens, outside the lookahead modes; balanced_step, the share of
  balanced steps, outside v3_balance), read from its log, so a run finished earlier
  counts as one trained now does."""
  values = [r[key] for r in log if key in r]
  return statistics.fmean(values) if values else None


def _best(rep: dict[str, Any], kind: str, width: int, horizon: int) -> dict[str, Any]:
  """The row of a lookahead setting with the best validation G."""
  rows = [r for r in rep["rows"] if (r["kind"], r["width"], r["horizon"]) ==
          (kind, width, horizon)]
  return max(rows, key=lambda r: r["validation_G"])


def _config_key(resolved: dict[str, Any]) -> dict[str, Any]:
  """What a record is matched on: the resolved config (config_lib.resolved), less where the
  prepared data is cached."""
  key = json.loads(json.dumps(resolved, sort_keys=True))
  key["data"].pop("data_dir", None)
  return key


def _same_config(made_with: Any, current: Any, default: Any) -> bool:
  """Whether a record's config is the current one: equal wherever the record has a key,
  and where it has none (a key added to the code after it was made) the current value is
  that key's default (base_config's), which keeps the older code's behaviour."""
  if not isinstance(current, dict) or not isinstance(made_with, dict):
    return made_with == current
  default = default if isinstance(default, dict) else {}
  if set(made_with) - set(current):
    return False  # a key the code no longer has
  return all(_same_config(made_with[k], v, default.get(k)) if k in made_with
             else k in default and v == default[k] for k, v in current.items())


def _renamed(made_with: dict[str, Any]) -> dict[str, Any]:
  """A record's config with the keys renamed since it was made under their new names
  (config_lib.RENAMED); the record on disk is left as it is."""
  out = copy.deepcopy(made_with)
  for old, new in config_lib.RENAMED.items():
    (old_section, old_key), (new_section, new_key) = old.split("."), new.split(".")
    if old_key in out.get(old_section, {}):
      out.setdefault(new_section, {})[new_key] = out[old_section].pop(old_key)
  return out


def _finished(steps: int, workdir: str) -> bool:
  """Whether the run's newest checkpoint is its last step, `steps` (nothing left to train)."""
  return checkpoint.kept_steps(workdir)[-1:] == [steps]


def read_record(resolved: dict[str, Any], record: str) -> dict[str, Any] | None:
  """The figures of the run's record (record/RUN_FILE) when it was made with the config
  `resolved` (config_lib.resolved; keys added since at their defaults: _same_config; keys
  renamed since under their new names: _renamed), by whatever code version (the figures
  carry it); else None (no record, one cut short, or one of another config: the run is
  trained, or resumed, and evaluated)."""
  path = epath.Path(record) / RUN_FILE
  if not path.exists():
    return None
  try:
    saved = json.loads(path.read_text())
  except ValueError:
    return None
  made_with = _renamed(saved.get("config") or {})
  made_with.get("data", {}).pop("data_dir", None)  # as _config_key leaves it out
  default = config_lib.resolved(config_lib.base_config())
  if not _same_config(made_with, _config_key(resolved), _config_key(default)):
    logging.warning("%s: a record of another config; this run is measured again", record)
    return None
  if saved.get("version") != metrics_lib.code_version():
    logging.info("%s: figures of code version %s, used as they are (marked in the table)",
                 record, metrics_lib.version_label(saved.get("version")))
  return saved["figures"]


def write_record(resolved: dict[str, Any], workdir: str, record: str,
                 figures: dict[str, Any]) -> None:
  """Writes the run's record: RECORD_FILES copied from `workdir` (when the record lies
  elsewhere), then RUN_FILE, which marks the record complete (report.write_json)."""
  source, target = epath.Path(workdir), epath.Path(record)
  if source.resolve() != target.resolve():
    for name in RECORD_FILES:
      if (source / name).exists():
        report.write_text(target / name, (source / name).read_text())
  report.write_json(target / RUN_FILE, {"config": _config_key(resolved),
                                        "version": metrics_lib.code_version(),
                                        "figures": figures})


class Preempted(Exception):
  """A run stopped before its last step (SIGTERM): the comparison stops with it."""


def run_one(settings: Settings, workdir: str, record: str) -> dict[str, Any]:
  """Trains (or resumes) and evaluates one run (one mode, one seed) in `workdir`, writes
  its record to `record` (which may be the workdir) and returns its figures; a run
  preempted before its last step raises Preempted and leaves no record."""
  if not _finished(settings.train.steps, workdir):  # training starts or resumes: record its code
    metrics_lib.write_version(workdir, enabled=jax.process_index() == 0)
  with aot.Ahead() as ahead:  # the monitor's passes compile beside the training loop
    summary = train.run(settings, workdir, ahead)
  if summary["preempted"]:  # stopped (SIGTERM) before its last step: no figures, no record
    raise Preempted(f"{workdir}: preempted at step {summary['step']} of "
                    f"{summary['steps']}; the same command resumes it")
  stunt, dev = settings.monitor_lookahead, settings.dev_lookahead
  setups = [(stunt.kind, stunt.width, stunt.horizon), (dev.kind, dev.width, dev.horizon)]
  rep = evaluate.run(settings, workdir, lookaheads=list(dict.fromkeys(setups)))
  log = metrics_lib.read(workdir)  # the run's log, read once
  out = {"seed": settings.seed, "toward": _logged_mean(log, "toward"),
         "balanced": _logged_mean(log, "balanced_step"),
         "skipped": float(summary["skipped_total"]), "step_time": _step_time(log),
         "trajectory": monitor.trajectory(log),
         "version": {"train": metrics_lib.read_version(workdir),
                     "eval": metrics_lib.code_version()}}
  best_rows = {"stunting": _best(rep, *setups[0]), "dev": _best(rep, *setups[1])}
  for evaluator in evals.build(settings.eval.evaluators):  # those that ran
    figures = evaluate.figures_of(evaluator, rep)
    if figures is not None:
      out.update(evaluator.run_figures(figures, rep, best_rows))
  out = json.loads(json.dumps(out))  # the same types as when read back from the record
  if jax.process_index() == 0:
    write_record(settings.resolved, workdir, record, out)
  return out


def _has_value(v: Any) -> bool:
  return v is not None and not (isinstance(v, float) and not math.isfinite(v))


def _aggregate(mode: str, runs: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
  """One row of the table: a mode's figures `keys` over its seeds (mean and t-interval),
  each interval with the n behind it in key + "_n": "3 seeds", "2 of 3 seeds" when some
  seeds lack the figure (the t-interval leaves them out), or for one seed the rows its
  bootstrap resamples ("1000 rows"; a figure's own key + "_n" where it has one)."""
  row: dict[str, Any] = {"mode": mode, "seeds": len(runs)}
  for key in keys:
    values = [r.get(key) for r in runs]
    if all(v is None for v in values):
      continue
    if len(runs) == 1:
      row[key] = values[0]
      if runs[0].get(key + "_ci"):
        row[key + "_ci"] = runs[0][key + "_ci"]
        n = runs[0].get(key + "_n") or (
            f"{runs[0]['test_rows']} rows" if runs[0].get("test_rows") else None)
        if n:
          row[key + "_n"] = n
      continue
    mean, lo, hi = stats.t_interval(values)
    have = sum(map(_has_value, values))
    row[key], row[key + "_ci"] = mean, [lo, hi]
    row[key + "_n"] = f"{have} seeds" if have == len(runs) else f"{have} of {len(runs)} seeds"
    row[key + "_per_seed"] = values
  return row


def _version_of(run: dict[str, Any]) -> str:
  """A run's code version as text: the training's, then the evaluation's when other."""
  version = run.get("version") or {}
  train, evaluated = version.get("train"), version.get("eval")
  last = {k: v for k, v in train.items() if k != "earlier"} if train else None
  label = metrics_lib.version_label(train)
  if evaluated is not None and last != evaluated:
    label += f" (eval {metrics_lib.version_label(evaluated)})"
  return label


def _versions(results: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, str], str]:
  """(mode -> its runs' code versions as text, a warning: "" when every run was trained
  and evaluated with one code version)."""
  labels = {name: ", ".join(dict.fromkeys(_version_of(r) for r in runs))
            for name, runs in results.items()}
  seen = set()
  for runs in results.values():
    for r in runs:
      version = r.get("version") or {}
      for part in ("train", "eval"):
        seen.add(json.dumps(version.get(part), sort_keys=True))
  if len(seen) <= 1:
    return labels, ""
  unrecorded = json.dumps(None) in seen
  warning = ("figures from different code versions meet in this table"
             + (" (\"?\": a run whose code version was not recorded)" if unrecorded else "")
             + ": " + "; ".join(f"{name} {label}" for name, label in labels.items()))
  return labels, warning


def _markdown(rows: list[dict[str, Any]], dataset: str, note: str,
              columns: Sequence[tuple[str, str, str]]) -> str:
  """The comparison as a markdown table (columns without any value are left out), each
  interval followed by the n behind it."""
  columns = [c for c in columns if any(r.get(c[0]) is not None for r in rows)]

  def text(r: dict[str, Any], key: str, fmt: str) -> str:
    out = report.cell(r.get(key), fmt)
    if r.get(key + "_ci"):
      out += f" {report.cell(r[key + '_ci'], fmt)}"
      if r.get(key + "_n"):
        out += f" n={r[key + '_n']}"
    return out

  body = [[text(r, k, f) for k, _, f in columns] for r in rows]
  title = (f"Stunting comparison on {dataset}: G = gain(q_H) - gain(q_1) in nats/token on the "
           f"test split, each side's tau and lam fitted on validation (fit.py); {note}")
  return report.table([h for _, h, _ in columns], body, style="markdown", title=title)


def _csv(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
  """Every figure of the comparison as CSV: per column its value, and where it has one,
  its interval (_lo, _hi) and the n behind it; one line per mode."""
  header, lines = [], []
  for key, _, _ in columns:
    header.append(key)
    if any(r.get(key + "_ci") for r in rows):
      header += [key + "_lo", key + "_hi", key + "_n"]
  for r in rows:
    cells = {key: r.get(key) for key in header}
    for key, _, _ in columns:
      if r.get(key + "_ci"):
        cells[key + "_lo"], cells[key + "_hi"] = r[key + "_ci"]
    lines.append(["" if cells[k] is None else cells[k] for k in header])
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerows([header, *lines])
  return buffer.getvalue()


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


def run(specs: str, workdir: str, assignments: Sequence[str] = (), seeds: int = 1,
        records: str = "", records_only: bool = False) -> list[dict[str, Any]]:
  """Trains and evaluates every run of `specs` (comma-separated) with `seeds` seeds each,
  in workdir/<mode>/seed_<s>, except the runs with a record (records/<mode>/seed_<s>;
  records "": the workdirs); writes the comparison (to `records`, else `workdir`) and
  returns its rows. records_only: the runs without a record are left out, none trains."""
  runs = [item for spec in specs.split(",") if spec for item in load(spec)]
  if not runs:
    raise ConfigError("--configs: give at least one config (path.py or path.py:ARG)")
  if seeds < 1:
    raise ConfigError(f"--seeds={seeds}: give at least 1")
  jobs = []  # (name, config, its run's directory, the figures of its record or None)
  for name, config in runs:
    _override(config, assignments)
    for i in range(seeds):
      seeded = copy.deepcopy(config)
      seeded.seed = config.seed + i
      run_dir = os.path.join(name, f"seed_{seeded.seed}")
      jobs.append((name, seeded, run_dir,
                   read_record(config_lib.resolved(seeded),
                               os.path.join(records or workdir, run_dir))))
  if records_only:
    missing = [run_dir for _, _, run_dir, saved in jobs if saved is None]
    if missing:
      print(f"No record, left out: {', '.join(missing)}")
    jobs = [job for job in jobs if job[3] is not None]
    if not jobs:
      raise ConfigError(f"--records_only: no run of --configs has a record in "
                        f"{records or workdir}")
  # every run without a record is checked (and its data prepared) before any trains
  settings = {run_dir: prepare_and_validate(config)
              for _, config, run_dir, saved in jobs if saved is None}
  results: dict[str, list[dict[str, Any]]] = {}
  for name, config, run_dir, saved in jobs:
    out = saved if saved is not None else run_one(
        settings[run_dir], os.path.join(workdir, run_dir),
        os.path.join(records or workdir, run_dir))
    out["seed"] = config.seed
    results.setdefault(name, []).append(out)
  first = runs[0][1]
  return tabulate(results, records or workdir, first.data.name, specs,
                  resamples=first.eval.bootstrap, seed=first.eval.seed)


def command(workdir: str, configs: str | None, overrides: Sequence[str], seeds: int,
            records: str, records_only: bool) -> None:
  """`lookahead-jax compare`: `run`; a run preempted before its last step stops the
  comparison with a line (like a preempted train: saved, and the same command resumes)."""
  try:
    run(configs or "", workdir, overrides, seeds, records, records_only)
  except Preempted as stopped:
    print(f"compare stopped: {stopped}")


def columns_of(evaluators: Sequence[evals.Evaluator],
               rows: Sequence[dict[str, Any]] | None = None) -> list[evals.Column]:
  """The comparison's columns: mode, seeds, code version; each evaluator's (with `rows`:
  those of the evaluators with a figure in some row), each followed by the `vs none`
  columns of those compare pairs with the baseline; the training's (toward, balanced,
  skipped); the cost."""
  columns = [evals.Column("mode", "mode", "s"), evals.Column("seeds", "seeds", "d"),
             evals.Column(*VERSION_COLUMN)]
  for evaluator in evaluators:
    own = [*evaluator.columns, *(c.vs_baseline() for c in evaluator.columns if c.paired)]
    if rows is None or any(r.get(c.key) is not None for c in own for r in rows):
      columns += own
  return columns + list(TRAINING_COLUMNS)


def tabulate(results: dict[str, list[dict[str, Any]]], workdir: str, dataset: str,
             specs: str = "", resamples: int = 1000, seed: int = 0,
             evaluators: Sequence[evals.Evaluator] | None = None) -> list[dict[str, Any]]:
  """The comparison of runs' figures (mode -> one figures dict per seed, as run_one
  returns them, with "seed"): the differences to the baseline paired by seed (each
  evaluator's paired columns) and across runs (Evaluator.paired: path_star's by graph),
  one row per mode, the code versions; writes compare.json, compare.md and the plots to
  `workdir` (process 0) and returns the rows. evaluators: whose columns (None: the
  schema's eval.evaluators)."""
  if evaluators is None:
    evaluators = evals.build(config_lib.defaults("eval").evaluators)
  base_name = BASELINE if BASELINE in results else next(iter(results))
  base = results[base_name]
  base_by_seed = {b.get("seed", i): b for i, b in enumerate(base)}
  paired = BASELINE in results
  columns = columns_of(evaluators)
  for per_seed in results.values():
    for i, r in enumerate(per_seed):
      b = base_by_seed.get(r.get("seed", i), {})  # seed i against the baseline's seed i
      r["cost"] = (r["step_time"] / b["step_time"]
                   if r.get("step_time") and b.get("step_time") else None)
      for c in columns:
        if c.paired:
          mine, theirs = r.get(c.key), b.get(c.key)
          r[c.vs_baseline().key] = (mine - theirs if paired and mine is not None
                                    and theirs is not None else None)
  keys = [c.key for c in columns if c.key not in ("mode", "seeds", "version")]
  labels, warning = _versions(results)
  rows, across = [], False
  for name, per_seed in results.items():
    row = _aggregate(name, per_seed, keys)
    row["version"] = labels[name]
    if paired and name != BASELINE:
      for evaluator in evaluators:  # figures paired across runs (path_star: by graph)
        found = evaluator.paired(per_seed, base, resamples, seed)
        row.update(found)
        across = across or bool(found)
    rows.append(row)
  columns = columns_of(evaluators, rows)
  trajectories = {name: _mean_trajectory(per_seed) for name, per_seed in results.items()}
  if warning:
    logging.warning("compare: %s", warning)
  if jax.process_index() == 0:
    seeds = max(len(per_seed) for per_seed in results.values())
    note = ("one seed, 95% bootstrap intervals over test rows" if seeds == 1 else
            f"mean and 95% t-interval over up to {seeds} seeds (n: the seeds that have the "
            "figure); vs none paired by seed")
    if across:
      note += ("; 'paired by graph': bootstrap over the depth-2 test graphs, the same "
               "resample for every seed and both modes")
    if warning:
      note += f". WARNING: {warning}"
    named = next((e.headline for e in evaluators if e.headline is not None
                  and any(c in columns for c in e.columns)), report.HEADLINE)
    headline = [c.as_tuple() for key in named for c in columns if c.key == key]
    columns = [c.as_tuple() for c in columns]
    text = _markdown(rows, dataset, note, headline) + "".join(
        f"\n- {r['mode']}: {config_lib.STUNTING_MODES[r['mode']]}" for r in rows
        if r["mode"] in config_lib.STUNTING_MODES)
    out = epath.Path(workdir)
    kept = {name: [{k: v for k, v in r.items() if k != "per_graph"} for r in per_seed]
            for name, per_seed in results.items()}  # per-graph lists: in each run's RUN_FILE
    report.write_json(out / "compare.json", {"dataset": dataset, "specs": specs, "seeds": seeds,
                                             "rows": rows, "trajectories": trajectories,
                                             "runs": kept, "version_warning": warning or None})
    report.write_text(out / "compare.md", text + "\n\nEvery figure:\n\n"
                      + _markdown(rows, dataset, note, columns) + "\n")
    report.write_text(out / "compare.csv", _csv(rows, columns))
    report.compare_plots(rows, trajectories, dataset, out)
    if warning:
      print(f"WARNING: {warning}")
    print(text)
    print(f"Comparison: {workdir}/compare.md (every figure), compare.csv, compare.json, "
          "compare.png, G_trajectory.png"
          + (", probe_trajectory.png" if report.has_series(trajectories, "future_gain")
             else ""))
  return rows
