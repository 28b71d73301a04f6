"""The stunting comparison runner and the experiment configs."""

import json
import os

import pytest

from conftest import REPO, RHYME_TEST_OPTIONS
from lookahead_jax import compare, stunting, train

# The stunting experiments: one config per testbed, each defining a run per mode.
# (gpt2_amplify.py is an evaluation, not a stunting comparison.)
EXPERIMENTS = [os.path.join(REPO, "configs", "experiments", f"{name}.py")
               for name in ("rhyme", "article", "tsp", "tiny_shakespeare")]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_every_experiment_config_has_every_mode(path):
  runs = compare.load(path)
  assert [name for name, _ in runs] == list(stunting.MODES)
  for mode, config in runs:
    assert config.stunting.mode == mode and config.stunting.monitor_every > 0
    assert config.model.max_len >= config.data.seq_len + config.lookahead.horizon
    train._check_keys(config, train.base_config())  # the full schema, nothing unknown
  # A run is named by the argument after the colon.
  assert compare.load(path + ":v1_token")[0][0] == "v1_token"


def test_compare_writes_one_table_and_plot(rhyme_data_dir, tmp_path, capsys):
  spec = os.path.join(REPO, "configs", "experiments", "rhyme.py")
  sets = [f"data.data_dir='{rhyme_data_dir}'", "data.tokenizer=''", "model.vocab_size=258",
          "data.seq_len=32", "model.max_len=38", "model.num_layers=1", "model.d_model=32",
          "lookahead.width=2", "train.steps=4", "train.warmup_steps=1", "train.log_every=2",
          "train.checkpoint_every=0", "eval.max_batches=1", "eval.batch_size=8",
          "eval.temperatures=(1.0,)", "eval.lams=(0.1, 0.5)", "stunting.dev_width=2"]
  sets += [f"data.options.{k}={v}" for k, v in RHYME_TEST_OPTIONS.items()]
  rows = compare.run(f"{spec}:none,{spec}:v1_token", str(tmp_path), sets)
  assert [r["mode"] for r in rows] == ["none", "v1_token"]
  assert rows[0]["cost"] == 1.0 and rows[1]["cost"] > 1.0  # the stunted step does more
  assert rows[0]["toward"] is None and 0 <= rows[1]["toward"] <= 1
  for key in ("test_nll", "gain_stunting", "gain_dev", "gain_stunting_marked"):
    assert all(isinstance(r[key], float) for r in rows)
  with open(tmp_path / "compare.json") as f:
    assert json.load(f)["rows"] == rows
  assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"
  table = (tmp_path / "compare.md").read_text()
  assert "| v1_token |" in table and "step time / baseline" in table
  assert table.strip() in capsys.readouterr().out


def test_bad_assignments_are_one_line_errors(tmp_path):
  spec = os.path.join(REPO, "configs", "experiments", "rhyme.py:none")
  with pytest.raises(train.ConfigError, match="write KEY=VALUE"):
    compare.run(spec, str(tmp_path), ["train.steps"])
  with pytest.raises(train.ConfigError, match="no config file"):
    compare.run("configs/experiments/nope.py", str(tmp_path))
