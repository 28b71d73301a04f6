"""Runs one benchmark several times and gives min / median / max of every figure.

    python bench/runs.py --runs=5 --out=bench/results/train -- bench/train.py [flags]

Each run is a fresh process (`python SCRIPT FLAGS --json OUT/run_<i>.json`), one after
another, so every figure is a same-run ratio measured five times rather than one run's
luck on a shared machine. A run whose JSON exists is not repeated (a stopped series
resumes). Prints the table and writes OUT/summary.json: {figure: {min, median, max,
runs}} for every numeric figure the script writes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import common


def summarize(records: list[dict]) -> dict[str, dict[str, float]]:
  """{figure: {min, median, max, runs}} over the runs' numeric figures."""
  keys = [k for k, v in records[0].items() if isinstance(v, (int, float))
          and not isinstance(v, bool)]
  out = {}
  for key in keys:
    values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
    out[key] = {"min": min(values), "median": statistics.median(values), "max": max(values),
                "runs": len(values)}
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--runs", type=int, default=5)
  p.add_argument("--out", required=True, help="folder for run_<i>.json and summary.json")
  p.add_argument("script", nargs=argparse.REMAINDER, help="-- SCRIPT [FLAGS]")
  args = p.parse_args()
  script = [a for a in args.script if a != "--"]
  if not script or not os.path.isfile(script[0]):
    sys.exit(f"give the benchmark after --, e.g. -- bench/train.py (got {script!r})")
  os.makedirs(args.out, exist_ok=True)
  records = []
  for i in range(args.runs):
    path = os.path.join(args.out, f"run_{i}.json")
    if not os.path.exists(path):
      print(f"run {i + 1}/{args.runs}: {' '.join(script)}", flush=True)
      subprocess.run([sys.executable, *script, "--json", path], check=True)
    with open(path) as f:
      records.append(json.load(f))
  summary = summarize(records)
  with open(os.path.join(args.out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  print(f"\n{' '.join(script)}: {args.runs} runs")
  common.print_table(["figure", "min", "median", "max"],
                     [[k, s["min"], s["median"], s["max"]] for k, s in summary.items()])


if __name__ == "__main__":
  main()
