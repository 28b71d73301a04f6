"""bench/runs.py: repeated benchmark runs, resumed, summarised as min / median / max; and
bench/train.py run end to end at tiny sizes."""

import json
import os
import subprocess
import sys

import pytest

RUNS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                    "runs.py")

# A stand-in benchmark: each call writes the next figure of a fixed series to --json.
FAKE = """
import json, os, sys
count = os.path.join(os.path.dirname(sys.argv[-1]), "calls")
calls = int(open(count).read()) if os.path.exists(count) else 0
open(count, "w").write(str(calls + 1))
json.dump({"ratio": [3.0, 1.0, 2.0, 5.0][calls], "name": "fake", "ok": True},
          open(sys.argv[-1], "w"))
"""


def test_runs_summarise_every_numeric_figure_and_a_finished_run_is_not_repeated(tmp_path):
  script = tmp_path / "fake_bench.py"
  script.write_text(FAKE)
  out = tmp_path / "series"
  run = lambda n: subprocess.run([sys.executable, RUNS, f"--runs={n}", f"--out={out}", "--",
                                  str(script)], capture_output=True, text=True, check=True)
  run(2)  # a series stopped after two runs ...
  run(3)  # ... resumed: only the third run is new
  assert (out / "calls").read_text() == "3"
  summary = json.loads((out / "summary.json").read_text())
  assert summary == {"ratio": {"min": 1.0, "median": 2.0, "max": 3.0, "runs": 3}}


def test_train_bench_runs_at_tiny_sizes_and_both_sides_start_from_the_same_loss(tmp_path):
  """bench/train.py end to end (its config building broke once when the model gained a
  derived field): the same first loss on both sides, every ratio of measured times written,
  and the step's parts adding up to the step on each side. A part is a difference of two
  timings, which at these sizes can fall below zero, so only its bookkeeping is pinned."""
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  out = tmp_path / "train.json"
  subprocess.run([sys.executable, os.path.join(os.path.dirname(RUNS), "train.py"),
                  "--layers=1", "--d_model=32", "--heads=2", "--vocab=64", "--batch=2",
                  "--seq_len=16", "--repeats=1", "--stunting=v1_token", "--width=2",
                  "--horizon=2", f"--json={out}"], capture_output=True, text=True, check=True)
  figures = json.loads(out.read_text())
  assert figures["first_loss_ours"] == pytest.approx(figures["first_loss_torch"], abs=1e-5)
  for key in ("train_ratio", "forward_ratio", "v1_token_over_plain",
              "v1_token_control_over_naive"):
    assert figures[key] > 0
  for side in ("ours", "torch"):
    parts = sum(figures[f"{name}_{side}_s"] for name in ("forward", "backward", "optimizer"))
    assert parts == pytest.approx(figures[f"train_{side}_s"])
