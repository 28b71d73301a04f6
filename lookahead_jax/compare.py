"""Stunting experiments side by side: `lookahead-jax compare --configs=... --workdir=DIR`.

Each config (`path.py:mode`, or `path.py` for every mode in the file's EXPERIMENTS) is
trained in DIR/<mode> (resuming like `train`, so a finished run is not trained again),
then evaluated with its stunting lookahead and with its dev lookahead (the evaluation
suite restricted to those two; tau and lam chosen on validation, gains on test). One
table and one plot compare the runs:

  naive test NLL; the lookahead gain of the stunting and of the dev lookahead, over all
  tokens and on the tokens the testbed marks as needing lookahead; the share of toward
  tokens during training and the updates v1_update skipped; on tsp, the validity and the
  optimality gap of greedy and beam decoding; the training cost (median step time over
  the baseline's, the run with mode "none").

Writes DIR/compare.json, DIR/compare.md and DIR/compare.png.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import statistics
from collections.abc import Sequence
from typing import Any

import jax
import matplotlib
from ml_collections import ConfigDict

from lookahead_jax import evaluate
from lookahead_jax import metrics as metrics_lib
from lookahead_jax import train

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file backend)

BASELINE = "none"
COLUMNS = (  # (key, header, format)
    ("mode", "mode", "s"), ("test_nll", "test NLL", ".4f"),
    ("gain_stunting", "gain (stunting la.)", "+.4f"), ("gain_dev", "gain (dev la.)", "+.4f"),
    ("gain_stunting_marked", "marked (stunting)", "+.4f"),
    ("gain_dev_marked", "marked (dev)", "+.4f"), ("toward", "toward", ".1%"),
    ("skipped", "skipped", "d"), ("tsp_greedy_gap", "tsp greedy gap", ".3f"),
    ("tsp_beam_gap", "tsp beam gap", ".3f"), ("cost", "step time / baseline", ".2f"))


def experiment(config: ConfigDict, mode: str) -> ConfigDict:
  """`config` as one run of a stunting comparison: its mode, monitoring and evaluation."""
  config.stunting.mode = mode
  config.stunting.monitor_every = max(config.train.steps // 10, 1)
  config.eval.max_batches = 8
  return config


def load(spec: str) -> list[tuple[str, ConfigDict]]:
  """(name, config) of a spec `path.py:arg` (one run) or `path.py` (its EXPERIMENTS)."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise train.ConfigError(f"--configs: no config file {path!r}")
  module_spec = importlib.util.spec_from_file_location(f"experiment_{len(path)}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  args = [arg] if arg else list(getattr(module, "EXPERIMENTS", ()))
  if not args:
    raise train.ConfigError(f"--configs: {path} has no EXPERIMENTS; name a run as {path}:ARG")
  return [(a, module.get_config(a)) for a in args]


def _override(config: ConfigDict, assignments: Sequence[str]) -> None:
  """Applies KEY=VALUE assignments (values parsed as Python literals, else strings)."""
  for assignment in assignments:
    key, sep, text = assignment.partition("=")
    if not sep:
      raise train.ConfigError(f"--set={assignment!r}: write KEY=VALUE, e.g. train.steps=100")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    try:
      config.update_from_flattened_dict({key: value})
    except (KeyError, AttributeError, TypeError) as e:
      raise train.ConfigError(f"--set={assignment!r}: {e}") from None


def _step_time(workdir: str) -> float | None:
  """Median logged step time of a run, without the first log (it includes compilation)."""
  times = [r["step_time"] for r in metrics_lib.read(workdir) if r.get("step_time")]
  return statistics.median(times[1:] or times) if times else None


def _best(report: dict[str, Any], kind: str, width: int, horizon: int) -> dict[str, Any]:
  """The row of a lookahead setting with the best validation gain."""
  rows = [r for r in report["rows"] if (r["kind"], r["width"], r["horizon"]) ==
          (kind, width, horizon)]
  return max(rows, key=lambda r: r["validation_gain"])


def _tsp(report: dict[str, Any], method: str) -> float | None:
  """Mean optimality gap of a decoding method over the tsp levels (valid tours only)."""
  levels = report.get("tsp", {}).get(method)
  if not levels:
    return None
  gaps = [(row["gap"], row["instances"] * row["valid"]) for row in levels.values()
          if row["valid"] > 0]
  weight = sum(w for _, w in gaps)
  return sum(g * w for g, w in gaps) / weight if weight else float("nan")


def run_one(name: str, config: ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains and evaluates one run; returns its row of the comparison."""
  train.validate(config)
  summary = train.train_and_evaluate(config, workdir)
  eod = train.tokenizer_for(config).eod_id
  stunt = train.stunting_settings(config, eod).lookahead or train.lookahead_settings(config, eod)
  dev = train.dev_lookahead(config, eod)
  settings = [(stunt.kind, stunt.width, stunt.horizon), (dev.kind, dev.width, dev.horizon)]
  report = evaluate.run(config, workdir, lookaheads=list(dict.fromkeys(settings)))
  row = {"mode": name, "test_nll": report["naive"]["test_nll"],
         "toward": summary["toward"], "skipped": summary["skipped_total"],
         "step_time": _step_time(workdir), "tsp_greedy_gap": _tsp(report, "greedy"),
         "tsp_beam_gap": _tsp(report, "beam")}
  for label, setting in (("stunting", settings[0]), ("dev", settings[1])):
    best = _best(report, *setting)
    row[f"gain_{label}"] = best["test_gain"]
    row[f"gain_{label}_marked"] = best["test_gain_marked"]
  return row


def run(specs: str, workdir: str, assignments: Sequence[str] = ()) -> list[dict[str, Any]]:
  """Trains and evaluates every run of `specs` (comma-separated); writes the comparison."""
  runs = [item for spec in specs.split(",") if spec for item in load(spec)]
  if not runs:
    raise train.ConfigError("--configs: give at least one config (path.py or path.py:ARG)")
  for _, config in runs:  # every config is checked before anything trains
    _override(config, assignments)
    train.validate(config)
  rows = [run_one(name, config, os.path.join(workdir, name)) for name, config in runs]
  base = next((r for r in rows if r["mode"] == BASELINE), rows[0])
  for r in rows:
    r["cost"] = r["step_time"] / base["step_time"] if r["step_time"] and base["step_time"] else None
  if jax.process_index() == 0:
    dataset = runs[0][1].data.name
    with open(os.path.join(workdir, "compare.json"), "w", encoding="utf-8") as f:
      json.dump({"dataset": dataset, "specs": specs, "rows": rows}, f, indent=1)
    text = markdown(rows, dataset)
    with open(os.path.join(workdir, "compare.md"), "w", encoding="utf-8") as f:
      f.write(text + "\n")
    plot(rows, dataset, os.path.join(workdir, "compare.png"))
    print(text)
    print(f"Comparison: {workdir}/compare.md, compare.json, compare.png")
  return rows


def markdown(rows: list[dict[str, Any]], dataset: str) -> str:
  """The comparison as a markdown table (columns without any value are left out)."""
  columns = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in rows)]
  cell = lambda v, fmt: "-" if v is None else format(v, fmt)
  lines = [f"Stunting comparison on {dataset} (gains in nats/token on the test split; "
           "tau and lam chosen on validation)", "",
           "| " + " | ".join(h for _, h, _ in columns) + " |",
           "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(cell(r.get(k), f) for k, _, f in columns) + " |" for r in rows]
  return "\n".join(lines)


def plot(rows: list[dict[str, Any]], dataset: str, path: str) -> None:
  """Four panels: test NLL, gains (stunting vs dev), gains on marked tokens, cost."""
  names = [r["mode"] for r in rows]
  x = range(len(rows))
  fig, axes = plt.subplots(2, 2, figsize=(11, 7))
  panels = ((axes[0, 0], ["test_nll"], "naive test NLL (nats/token)"),
            (axes[0, 1], ["gain_stunting", "gain_dev"], "lookahead gain, all tokens"),
            (axes[1, 0], ["gain_stunting_marked", "gain_dev_marked"],
             "lookahead gain, needs-lookahead tokens"),
            (axes[1, 1], ["cost"], "step time / baseline"))
  for ax, keys, title in panels:
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
      values = [r.get(key) if r.get(key) is not None else float("nan") for r in rows]
      ax.bar([p + i * width for p in x], values, width, label=key.replace("_", " "))
    ax.set_xticks([p + 0.4 - width / 2 for p in x], names, rotation=30, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.axhline(0.0, color="gray", lw=0.8)
    if len(keys) > 1:
      ax.legend(fontsize=8)
  fig.suptitle(f"Stunting comparison on {dataset}")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
