"""Checkpoints: SIGKILL and resume, SIGTERM, a corrupt newest checkpoint, interrupted saves.

The kill tests run the real command, `python -m lookahead_jax.main train`, on the tiny
run of conftest.py, in subprocesses that inherit the 8 simulated devices.
"""

import copy
import dataclasses
import functools
import logging
import os
import shutil
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from lookahead_jax import checkpoint, metrics, train
from lookahead_jax import model as model_lib
from lookahead_jax import settings as settings_lib
from lookahead_jax import state as state_lib

from conftest import REPO, RHYME_CONFIG, command, load_config

TIMEOUT = 240


def _start(workdir, overrides):
  log = open(os.path.join(workdir.parent, f"{workdir.name}.log"), "w")
  return subprocess.Popen(command("train", workdir, overrides), cwd=REPO, stdout=log,
                          stderr=subprocess.STDOUT, text=True), log.name


def _steps(workdir):
  path = workdir / "checkpoints"
  return sorted(int(s) for s in os.listdir(path) if s.isdigit()) if path.is_dir() else []


def _wait_for_checkpoint(process, workdir, step):
  deadline = time.time() + TIMEOUT
  while not any(s >= step for s in _steps(workdir)):
    assert process.poll() is None, "the run ended before its first checkpoint"
    assert time.time() < deadline, "no checkpoint in time"
    time.sleep(0.02)


def _run(workdir, overrides):
  result = subprocess.run(command("train", workdir, overrides), cwd=REPO, capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.fixture(scope="module")
def long_run(tiny_run):
  """Enough steps that a kill after the first checkpoint lands in the middle of the run."""
  return {**tiny_run, "train.steps": 40, "train.checkpoint_every": 10, "train.log_every": 5,
          "train.warmup_steps": 5}


def test_sigkill_then_same_command_resumes_exactly(long_run, tmp_path):
  killed, uninterrupted = tmp_path / "killed", tmp_path / "uninterrupted"
  killed.mkdir()
  uninterrupted.mkdir()
  reference, _ = _start(uninterrupted, long_run)
  process, log = _start(killed, long_run)
  _wait_for_checkpoint(process, killed, 10)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL
  saved = _steps(killed)
  assert saved and max(saved) < long_run["train.steps"], open(log).read()[-2000:]

  resumed = _run(killed, long_run)
  assert f"resumed from {max(saved)}" in resumed.stdout
  assert reference.wait(timeout=TIMEOUT) == 0

  config = load_config(RHYME_CONFIG, long_run)
  settings = settings_lib.validate(config)
  a = jax.device_get(state_lib.restore_params(settings, str(uninterrupted)))
  b = jax.device_get(state_lib.restore_params(settings, str(killed)))
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), a, b)
  # Same batches after the resume: the same loss at every logged step, and the same
  # iterator position and counters at the end.
  loss = lambda run: {r["step"]: r["loss"] for r in metrics.read(str(run)) if "loss" in r}
  assert loss(killed).keys() == loss(uninterrupted).keys()
  np.testing.assert_allclose(list(loss(killed).values()), list(loss(uninterrupted).values()),
                             rtol=1e-6)
  last = str(long_run["train.steps"])
  data = lambda run: (run / "checkpoints" / last / "data" / "process_0-of-1.json").read_text()
  assert data(killed) == data(uninterrupted)


def test_sigterm_saves_and_exits_cleanly(long_run, tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  overrides = {**long_run, "train.steps": 100_000}
  process, log = _start(workdir, overrides)
  _wait_for_checkpoint(process, workdir, 10)
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=TIMEOUT) == 0
  output = open(log).read()
  last = max(_steps(workdir))
  assert last > 10 and last % 10, output[-2000:]  # saved at the step boundary after SIGTERM
  assert f"saved the checkpoint of step {last}" in output
  assert f"{last} of 100000 (preempted)" in output


@pytest.fixture(scope="module")
def eight_steps(tiny_run, tmp_path_factory):
  """A finished run of 8 steps with checkpoints at steps 4 and 8."""
  config = load_config(RHYME_CONFIG, {**tiny_run, "train.steps": 8})
  workdir = tmp_path_factory.mktemp("eight_steps")
  train.run(settings_lib.validate(config), str(workdir))
  assert _steps(workdir) == [4, 8]
  return config, workdir


def test_a_checkpoint_records_the_process_count_that_saved_it(eight_steps):
  from lookahead_jax import checkpoint

  _, workdir = eight_steps
  assert {"data", "layout", "state"} <= set(os.listdir(workdir / "checkpoints" / "8"))
  with checkpoint.manager(workdir) as mngr:
    assert checkpoint._saved_by(mngr, 8) == 1  # pylint: disable=protected-access
    assert checkpoint._saved_by(mngr, 5) is None  # no such step


@pytest.mark.parametrize("damage", ["truncate_state", "garbage_data", "empty_step"])
def test_corrupt_newest_checkpoint_falls_back(eight_steps, tmp_path, caplog, damage):
  config, finished = eight_steps
  workdir = tmp_path / "run"
  shutil.copytree(finished, workdir)
  newest = workdir / "checkpoints" / "8"
  if damage == "truncate_state":
    for path in (newest / "state").rglob("*"):
      if path.is_file():
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  elif damage == "garbage_data":
    (newest / "data" / "process_0-of-1.json").write_text("{not json")
  else:
    for path in sorted(newest.rglob("*"), reverse=True):
      path.unlink() if path.is_file() else path.rmdir()
  # An interrupted save (orbax's temporary directory) is never taken for a step.
  (workdir / "checkpoints" / "12.orbax-checkpoint-tmp-1").mkdir()

  config = copy.deepcopy(config)
  config.train.steps = 12
  with caplog.at_level(logging.WARNING):
    summary = train.run(settings_lib.validate(config), str(workdir))
  assert "checkpoint step 8 is unreadable" in caplog.text
  assert summary["resumed_from"] == 4 and summary["step"] == 12
  assert _steps(workdir) == [4, 8, 12]
  assert [p.split("-")[0] for p in os.listdir(workdir / "checkpoints_unreadable")] == ["8"]


def test_value_and_done_heads_are_in_the_checkpoint(tiny_config, tmp_path):
  config = dataclasses.replace(tiny_config, value_head=True, done_head=True)
  tx = optax.adamw(1e-3)
  # every parameter moved off its initialisation (the heads' is zero), so a restore that
  # fell back to fresh parameters would show
  state = state_lib.init_state(config, tx, 0)
  state = state.replace(params=jax.tree.map(lambda x: x + 0.5, state.params))
  tokens = jax.random.randint(jax.random.key(0), (2, 8), 0, config.vocab_size)
  positions = jnp.broadcast_to(jnp.arange(8), (2, 8))
  _, _, heads = model_lib.forward(state.params, tokens, positions, config=config, heads=True)
  assert heads["value"].shape == heads["done"].shape == tokens.shape
  mngr = checkpoint.manager(tmp_path, create=True)
  mngr.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
  mngr.wait_until_finished()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          jax.eval_shape(functools.partial(state_lib.init_state, config, tx, 0)))
  restored, _, bad = checkpoint.restore(checkpoint.manager(tmp_path), abstract)
  assert not bad
  _, _, again = model_lib.forward(restored.params, tokens, positions, config=config, heads=True)
  for name in ("value", "done"):
    np.testing.assert_array_equal(again[name], heads[name])
  # the heads are parameters of their own, there only when the config asks for them
  assert model_lib.num_params(restored.params) == model_lib.num_params(
      model_lib.abstract_params(tiny_config)) + 2 * (config.d_model + 1)
