"""The command line: one-line errors, decode, and the eval command's wiring."""

import subprocess
import sys

import pytest
from absl import flags

from lookahead_jax import config as config_lib
from lookahead_jax import main, train
from lookahead_jax import settings as settings_lib

from conftest import REPO, RHYME_CONFIG, command, load_config

TIMEOUT = 240


def _run(*args):
  return subprocess.run(list(args), cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT,
                        check=False)


def _only_line(stderr):
  lines = [line for line in stderr.splitlines() if line.strip()]
  assert "Traceback" not in stderr and len(lines) == 1, stderr
  return lines[0]


def test_bad_config_is_one_line_before_compiling(tiny_run, tmp_path):
  result = _run(*command("train", tmp_path, {**tiny_run, "train.global_batch": 12}))
  assert result.returncode == 1
  assert _only_line(result.stderr) == (
      "error: train.global_batch=12: must be divisible by the 8 devices x train.grad_accum=1; "
      "use a multiple of 8")
  assert not (tmp_path / "checkpoints").exists()


def test_unknown_override_is_one_line(tiny_run, tmp_path):
  result = _run(*command("train", tmp_path, {**tiny_run, "train.stepz": 3}))
  assert result.returncode == 1
  assert _only_line(result.stderr).startswith("error: unknown config key train.stepz:")


def test_a_renamed_override_is_one_line_naming_its_new_name(tiny_run, tmp_path):
  result = _run(*command("train", tmp_path, {**tiny_run, "stunting.monitor_every": 3}))
  assert result.returncode == 1
  assert _only_line(result.stderr) == (
      "error: stunting.monitor_every is now monitor.every: rename it in the config file or "
      "override")


def test_a_workdir_that_is_a_file_is_one_line(tiny_run, tmp_path):
  path = tmp_path / "notes.txt"
  path.write_text("x")
  result = _run(*command("train", path, tiny_run))
  assert result.returncode == 1
  assert _only_line(result.stderr).startswith(f"error: --workdir='{path}' is an existing file")


def test_a_horizon_override_moves_the_models_max_len(tiny_run, tmp_path):
  import json

  result = _run(*command("train", tmp_path, {**tiny_run, "train.steps": 1,
                                             "train.warmup_steps": 0, "lookahead.horizon": 8}))
  assert result.returncode == 0, result.stderr[-2000:]
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["model"]["max_len"] == tiny_run["data.seq_len"] + 8


def test_help_gives_every_stunting_mode_its_line(monkeypatch):
  monkeypatch.setattr(main.app, "run", lambda *args, **kwargs: None)
  monkeypatch.setattr(sys.modules["__main__"], "__doc__", None)
  monkeypatch.setattr(sys, "argv", ["lookahead-jax"])
  main.run()  # what the console script does before parsing --help
  doc = sys.modules["__main__"].__doc__
  assert doc.startswith(main.__doc__)
  for mode, line in config_lib.STUNTING_MODES.items():
    assert f"\n  {mode:<11} {line}" in doc


def test_compare_takes_config_overrides_as_every_command_does(tmp_path, monkeypatch):
  from lookahead_jax import compare

  calls = []
  monkeypatch.setattr(compare, "run", lambda *args: calls.append(args))
  argv = main.parse_flags(["lookahead-jax", "compare", "--configs=x.py:none",
                           f"--workdir={tmp_path}", "--config.train.steps=3",
                           "--config.data.name=path_star", "--seeds=2"])
  try:
    main.main(argv)
  finally:
    flags.FLAGS.unparse_flags()
  assert calls == [("x.py:none", str(tmp_path), ["train.steps=3", "data.name=path_star"], 2,
                    "", False)]


def test_a_flag_the_command_does_not_take_is_a_usage_error(tmp_path):
  result = _run(*command("train", tmp_path, {}, "--sampeler=beam"))
  assert result.returncode == 1 and "train does not take --sampeler=beam" in result.stderr


def test_a_bad_command_is_a_usage_error(tmp_path):
  result = _run(*command("fit", tmp_path, {}))
  assert result.returncode == 1 and "give one command, train | eval | decode" in result.stderr


@pytest.fixture(scope="module")
def trained(tiny_run, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("trained")
  config = load_config(RHYME_CONFIG, {**tiny_run, "train.steps": 4})
  train.run(settings_lib.validate(config), str(workdir))
  return workdir


def test_decode_continues_each_prompt_from_the_checkpoint(tiny_run, trained):
  result = _run(*command("decode", trained, tiny_run, "--prompt=A poem:\n", "--prompt=Cheddar is",
                         "--sampler=greedy", "--max_new_tokens=6"))
  assert result.returncode == 0, result.stderr[-2000:]
  blocks = result.stdout.split("--- greedy, ")[1:]
  assert [b.split(":\n")[0] for b in blocks] == ["'A poem:\\n'", "'Cheddar is'"]
  assert "no checkpoint" not in result.stderr


def test_decode_beam_without_checkpoint_warns(tiny_run, tmp_path):
  result = _run(*command("decode", tmp_path, tiny_run, "--prompt=Cheddar is", "--sampler=beam",
                         "--beams=3", "--max_new_tokens=4"))
  assert result.returncode == 0, result.stderr[-2000:]
  assert "no checkpoint in" in result.stderr
  assert result.stdout.startswith("--- beam, 'Cheddar is':\nCheddar is")


def test_decode_by_editing_keeps_the_prompt_and_reports_each_round(tiny_run, tmp_path):
  masked_model = {**tiny_run, "model.vocab_size": 259}  # bytes and [MASK]
  result = _run(*command("decode", tmp_path, masked_model, "--prompt=Cheddar is",
                         "--sampler=edit", "--rounds=1", "--max_new_tokens=4"))
  assert result.returncode == 0, result.stderr[-2000:]
  assert "edit round 0: plausibility" in result.stdout
  head, text = result.stdout.split("--- edit, 'Cheddar is' (plausibility ")[1].split(":\n", 1)
  assert text.startswith("Cheddar is") and head.endswith("nats/token)")
  result = _run(*command("decode", tmp_path, tiny_run, "--sampler=ga"))
  assert result.returncode == 1
  assert _only_line(result.stderr).startswith(
      "error: --sampler=ga needs a model with [MASK] (model.vocab_size > 258")


def test_eval_command_calls_the_evaluation_suite(tiny_run, tmp_path, monkeypatch):
  from lookahead_jax import evaluate

  calls = []
  monkeypatch.setattr(evaluate, "run",
                      lambda settings, workdir: calls.append((settings, workdir)))
  argv = ["lookahead-jax", *command("eval", tmp_path, tiny_run)[4:]]  # the flags only
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads the overrides from sys.argv
  flags.FLAGS(argv)
  try:
    main.main(["lookahead-jax", "eval"])
  finally:
    flags.FLAGS.unparse_flags()
  [(settings, workdir)] = calls
  assert workdir == str(tmp_path) and settings.model.d_model == tiny_run["model.d_model"]
