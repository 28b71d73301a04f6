"""The train step and loop: loss falls, non-finite steps, gradient accumulation, metrics."""

import json
import os

import grain
import jax
import numpy as np
import pytest

from lookahead_jax import checkpoint, metrics, sharding, train
from lookahead_jax import settings as settings_lib
from lookahead_jax import state as state_lib

from conftest import RHYME_CONFIG, load_config


def _step_setup(config, mesh):
  settings = settings_lib.validate(config)
  tx, schedule = state_lib.make_optimizer(settings.train)
  _, shardings = state_lib.state_shardings(settings.model, tx, mesh)
  state = state_lib.create_state(settings, tx, shardings)
  return state, train.jit_train_step(settings, mesh, tx, schedule, shardings)


def _batch(config, seed=0):
  """A random global batch with some padding."""
  rng = np.random.default_rng(seed)
  b, t = config.train.global_batch, config.data.seq_len
  tokens = rng.integers(2, config.model.vocab_size, (b, t + 1), dtype=np.int32)
  weights = np.ones((b, t), np.float32)
  weights[:, -5:] = 0.0
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": weights,
          "segment_ids": (weights > 0).astype(np.int32),
          "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)),
          "needs_lookahead": np.zeros((b, t), bool)}


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def test_loss_falls_on_rhyme(tiny_run, tmp_path, capsys):
  config = load_config(RHYME_CONFIG, {**tiny_run, "train.steps": 200, "train.log_every": 20,
                                        "train.warmup_steps": 20, "train.checkpoint_every": 0,
                                        "train.profile_steps": (3, 5)})
  summary = train.run(settings_lib.validate(config), str(tmp_path))

  records = [r for r in metrics.read(str(tmp_path)) if "loss" in r]
  assert [r["step"] for r in records] == list(range(20, 201, 20))
  assert records[0]["loss"] > 4.0  # near log(258) = 5.55 at the start
  assert records[-1]["loss"] < 0.6 * records[0]["loss"]
  assert summary["val_loss"] < 0.6 * records[0]["loss"]
  assert summary["nonfinite_total"] == 0 and summary["checkpoints"] == [200]
  assert summary["data"]["tokens_out"] > 0
  assert all(r["tokens_per_s"] > 0 and r["step_time"] > 0 for r in records)
  assert os.listdir(tmp_path / "tb")
  traces = [f for _, _, files in os.walk(tmp_path / "profile") for f in files]
  assert any(f.endswith(".xplane.pb") for f in traces)  # train.profile_steps' trace
  printed = capsys.readouterr().out
  assert "summary: rhyme" in printed and "val loss" in printed and "tokens/s" in printed
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["train"]["steps"] == 200 and saved["model"]["d_model"] == 32
  # Run again: nothing left to train, and the summary still reports the run's training.
  again = train.run(settings_lib.validate(config), str(tmp_path))
  assert again["resumed_from"] == 200
  for key in ("first_train_loss", "train_loss", "tokens_per_s", "step_time"):
    assert again[key] == summary[key], key


def test_nan_batch_is_skipped_and_counted(tiny_run):
  config = load_config(RHYME_CONFIG, {**tiny_run, "train.warmup_steps": 0})
  mesh = sharding.make_mesh(-1, 1)
  state, step = _step_setup(config, mesh)
  before = _host(state)

  bad = _batch(config)
  bad["weights"][0, 0] = np.nan
  state, m = step(state, bad)
  after = _host(state)
  assert int(m["nonfinite"]) == 1 and int(m["nonfinite_in_a_row"]) == 1
  assert int(after.step) == 1 and int(after.nonfinite_total) == 1
  jax.tree.map(np.testing.assert_array_equal, after.params, before.params)
  jax.tree.map(np.testing.assert_array_equal, after.opt_state, before.opt_state)

  state, m = step(state, bad)
  assert int(m["nonfinite_in_a_row"]) == 2
  state, m = step(state, _batch(config))
  good = _host(state)
  assert np.isfinite(float(m["loss"])) and int(m["nonfinite"]) == 0
  assert int(good.nonfinite_in_a_row) == 0 and int(good.nonfinite_total) == 2
  assert int(good.step) == 3
  assert not np.array_equal(good.params["wte"]["embedding"], before.params["wte"]["embedding"])


class _PoisonedFrom(grain.DatasetIterator):
  """Batches of the real iterator, with NaN weights from batch `start` on."""

  def __init__(self, parent, start):
    super().__init__(parent)
    self._start, self._seen = start, 0

  def __next__(self):
    batch = dict(next(self._parent))
    self._seen += 1
    if self._seen > self._start:
      batch["weights"] = np.full_like(batch["weights"], np.nan)
    return batch

  def counters(self):
    return self._parent.counters()

  def get_state(self):
    return self._parent.get_state()

  def set_state(self, state):
    self._parent.set_state(state)


def test_stops_after_nonfinite_steps_in_a_row(tiny_run, tmp_path, monkeypatch):
  config = load_config(RHYME_CONFIG, {**tiny_run, "train.steps": 50,
                                        "train.max_nonfinite_in_a_row": 3})
  real = train.make_train_iterator
  monkeypatch.setattr(train, "make_train_iterator",
                      lambda settings: _PoisonedFrom(real(settings), 6))
  with pytest.raises(train.NonFiniteError, match=r"3 steps in a row .* saved at step"):
    train.run(settings_lib.validate(config), str(tmp_path))

  # Steps 7, 8, 9 were non-finite; the state is saved at the step the stop was read.
  steps = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert steps[0] == 4 and 9 <= steps[-1] <= 10
  settings = settings_lib.validate(config)
  restored = checkpoint.restore(
      checkpoint.manager(str(tmp_path)),
      state_lib.state_shardings(settings.model, state_lib.make_optimizer(settings.train)[0],
                                sharding.make_mesh(-1, 1))[0])
  state = restored[0]
  assert int(state.nonfinite_total) == int(state.step) - 6 >= 3
  records = [r for r in metrics.read(str(tmp_path)) if "loss" in r]
  assert records[-1]["nonfinite"] >= 1 and records[-1]["step"] >= 8


def test_grad_accumulation_is_exact(tiny_run):
  """Two micro-batches give the full batch's update (the loss is normalised globally)."""
  results = []
  for accum in (1, 2):
    config = load_config(RHYME_CONFIG, {**tiny_run, "train.grad_accum": accum,
                                          "train.global_batch": 16})
    state, step = _step_setup(config, sharding.make_mesh(-1, 1))
    batch = _batch(config)
    batch["weights"][:4] = 0.0  # uneven token counts between micro-batches
    for _ in range(2):
      state, m = step(state, batch)
    results.append((_host(state.params), float(m["loss"])))
  (p1, l1), (p2, l2) = results
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), p1, p2)


def test_weight_decay_skips_biases_and_layer_norms(tiny_config, tiny_params):
  mask = state_lib._decay_mask(tiny_params)  # pylint: disable=protected-access
  decayed = {jax.tree_util.keystr(path) for path, m in jax.tree_util.tree_leaves_with_path(mask)
             if m}
  assert any("'wte'" in k for k in decayed) and any("'c_attn']['kernel'" in k for k in decayed)
  assert not any("bias" in k or "ln_" in k for k in decayed)


def test_schedule_warms_up_then_decays(tiny_run):
  config = load_config(RHYME_CONFIG, {**tiny_run, "train.steps": 100,
                                        "train.warmup_steps": 10})
  _, schedule = state_lib.make_optimizer(settings_lib.validate(config).train)
  lr = config.train.learning_rate
  assert float(schedule(0)) == 0.0 and float(schedule(10)) == pytest.approx(lr)
  assert float(schedule(100)) == pytest.approx(lr * config.train.min_lr_ratio)

