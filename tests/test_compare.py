"""The stunting comparison runner and the experiment configs."""

import json
import os

import pytest
from etils import epath

from lookahead_jax import compare, stunting
from lookahead_jax import metrics as metrics_lib
from lookahead_jax.config import ConfigError

from conftest import REPO, RHYME_TEST_OPTIONS

# The stunting experiments: one config per testbed, each defining a run per mode.
# (gpt2_amplify.py is an evaluation, not a stunting comparison.)
EXPERIMENTS = [os.path.join(REPO, "configs", "experiments", f"{name}.py")
               for name in ("rhyme", "article", "tsp", "path_star", "tiny_shakespeare")]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_every_experiment_config_has_every_mode(path):
  runs = compare.load(path)
  assert [name for name, _ in runs] == list(stunting.MODES)
  for mode, config in runs:
    assert config.stunting.mode == mode and config.stunting.monitor_every > 0
    assert config.model.max_len >= config.data.seq_len + config.lookahead.horizon
    assert config.is_locked  # built on the schema: nothing unknown
  # A run is named by the argument after the colon.
  assert compare.load(path + ":v1_token")[0][0] == "v1_token"


def test_experiment_configs_import_only_the_config_module():
  for path in EXPERIMENTS:
    with open(path, encoding="utf-8") as f:
      imports = [line for line in f if line.startswith(("import", "from"))]
    assert imports == ["from lookahead_jax import config as config_lib\n"], (path, imports)


SETS = ["data.tokenizer=''", "model.vocab_size=258", "data.seq_len=32", "model.num_layers=1",
        "model.d_model=32", "lookahead.width=2", "train.steps=4", "train.warmup_steps=1",
        "train.log_every=2", "train.checkpoint_every=0", "eval.max_batches=1",
        "eval.batch_size=8", "eval.temperatures=(1.0,)", "eval.lams=(0.1, 0.5)",
        "eval.schemes=('sum',)", "eval.mixtures=('linear',)", "stunting.dev_width=2",
        "eval.bootstrap=200"] + [f"data.options.{k}={v}" for k, v in RHYME_TEST_OPTIONS.items()]


def test_compare_writes_one_table_and_plots_with_seeds(rhyme_data_dir, tmp_path, capsys,
                                                        monkeypatch):
  spec = os.path.join(REPO, "configs", "experiments", "rhyme.py")
  sets = [f"data.data_dir='{rhyme_data_dir}'", *SETS]
  rows = compare.run(f"{spec}:none,{spec}:v1_token", str(tmp_path), sets, seeds=2)
  assert [r["mode"] for r in rows] == ["none", "v1_token"]
  assert all(r["seeds"] == 2 for r in rows)
  for mode in ("none", "v1_token"):  # one workdir per mode and seed
    assert sorted(os.listdir(tmp_path / mode)) == ["seed_0", "seed_1"]
  # cost: step time over the baseline's, paired by seed (bench/train.py times it properly)
  assert rows[0]["cost"] == 1.0 and rows[1]["cost"] > 0
  assert rows[0].get("toward") is None and 0 <= rows[1]["toward"] <= 1
  assert rows[0]["G_vs_baseline"] == 0.0
  for key in ("test_nll", "G_stunting", "G_dev", "G_stunting_marked", "gain_stunting"):
    for r in rows:  # mean and t-interval over the seeds
      lo, hi = r[key + "_ci"]
      assert isinstance(r[key], float) and lo <= r[key] <= hi and len(r[key + "_per_seed"]) == 2
  # The files go through etils.epath (local or gs://); read them back the same way.
  saved = json.loads((epath.Path(tmp_path) / "compare.json").read_text())
  assert saved["rows"] == rows and saved["seeds"] == 2
  trajectory = saved["trajectories"]["v1_token"]  # G over training, from the monitor
  assert trajectory["step"] and len(trajectory["G_dev_marked_ci"]) == len(trajectory["step"])
  # The probes beside G: the evaluation's figures over seeds, the monitor's over training.
  for key in ("future_gain", "icl_score", "induction_max"):
    for r in rows:
      assert len(r[key + "_per_seed"]) == 2 and r[key + "_ci"][0] <= r[key] <= r[key + "_ci"][1]
  assert len(saved["trajectories"]["none"]["future_gain"]) == len(
      saved["trajectories"]["none"]["step"])
  for name in ("compare.png", "G_trajectory.png", "probe_trajectory.png"):
    assert (epath.Path(tmp_path) / name).read_bytes()[:4] == b"\x89PNG"
  table = (epath.Path(tmp_path) / "compare.md").read_text()
  assert "| v1_token | 2 |" in table and "G (stunting la.)" in table
  assert "future-token probe gain" in table
  assert table.strip() in capsys.readouterr().out

  # Extended to a third seed, the comparison trains only the new run.
  def trained_steps(seed):
    return [r["step"] for r in metrics_lib.read(str(tmp_path / "none" / f"seed_{seed}"))
            if "loss" in r]

  before = [trained_steps(s) for s in (0, 1)]
  evaluated, evaluate_run = [], compare.evaluate.run

  def counted(config, settings, workdir, **kwargs):
    evaluated.append(os.path.basename(workdir))
    return evaluate_run(config, settings, workdir, **kwargs)

  monkeypatch.setattr(compare.evaluate, "run", counted)
  first, first_toward = rows[0], rows[1]["toward_per_seed"][0]
  rows = compare.run(f"{spec}:none", str(tmp_path), sets, seeds=3)
  assert rows[0]["seeds"] == 3 and sorted(os.listdir(tmp_path / "none")) == [
      "seed_0", "seed_1", "seed_2"]
  assert [trained_steps(s) for s in (0, 1)] == before and trained_steps(2)
  # ... and evaluates only the new run: the others' figures are read back, unchanged.
  assert evaluated == ["seed_2"]
  assert rows[0]["test_nll_per_seed"][:2] == first["test_nll_per_seed"]
  # A run whose config changed is evaluated again (here: a different bootstrap).
  compare.run(f"{spec}:none", str(tmp_path), [*sets, "eval.bootstrap=100"], seeds=1)
  assert evaluated == ["seed_2", "seed_0"]
  # A finished run evaluated again, not trained, keeps its training figures (from its log).
  (tmp_path / "v1_token" / "seed_0" / compare.RUN_FILE).unlink()
  again = compare.run(f"{spec}:v1_token", str(tmp_path), sets, seeds=1)
  assert evaluated[-1] == "seed_0" and again[0]["toward"] == first_toward


def test_bad_assignments_are_one_line_errors(tmp_path):
  spec = os.path.join(REPO, "configs", "experiments", "rhyme.py:none")
  with pytest.raises(ConfigError, match="write KEY=VALUE"):
    compare.run(spec, str(tmp_path), ["train.steps"])
  with pytest.raises(ConfigError, match="no config file"):
    compare.run("configs/experiments/nope.py", str(tmp_path))
  with pytest.raises(ConfigError, match="--seeds=0: give at least 1"):
    compare.run(spec, str(tmp_path), seeds=0)


MASKED = os.path.join(REPO, "configs", "experiments", "masked_rho.py")


def test_the_masked_experiment_config_runs_the_rho_spectrum_without_stunting():
  runs = compare.load(MASKED)
  assert [(name, c.objective.rho) for name, c in runs] == [
      ("rho_1", 1.0), ("rho_0.5", 0.5), ("rho_0.1", 0.1)]
  assert compare.load(MASKED + ":bert")[0][1].objective.rho == 0.0
  for _, config in runs:
    assert config.objective.kind == "spectrum" and config.stunting.mode == "none"
    assert config.model.vocab_size == 385  # 384 SentencePiece pieces and [MASK]
  with open(MASKED, encoding="utf-8") as f:
    assert [line for line in f if line.startswith(("import", "from"))] == [
        "from lookahead_jax import config as config_lib\n"]

