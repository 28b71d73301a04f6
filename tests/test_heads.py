"""The value and is-done heads' training (heads.py): targets, losses, and the train step."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from test_train import _batch, _host, _step_setup

from lookahead_jax import decoding, heads, sharding, train
from lookahead_jax import lookahead as lookahead_lib
from lookahead_jax import settings as settings_lib
from lookahead_jax import state as state_lib

from conftest import RHYME_CONFIG, load_config

HEADS = ("value_head", "done_head")


def test_done_terms_are_the_cross_entropy_toward_the_answers_end():
  logits = jnp.array([[2.0, -1.0, 0.5]])
  targets = jnp.array([[5, 1, 1]])  # the second token is followed by the EOD (id 1)
  weights = jnp.array([[1.0, 1.0, 0.0]])  # the third is not weighed
  terms = heads.done_terms(logits, targets, weights, eod_id=1)
  sigmoid = lambda x: 1 / (1 + np.exp(-x))
  np.testing.assert_allclose(terms["done_sum"], -np.log(1 - sigmoid(2.0)) - np.log(sigmoid(-1.0)),
                             rtol=1e-6)
  assert float(terms["done_ends"]) == 1.0
  assert float(terms["done_correct"]) == 0.0  # done where it goes on, going on where it ends


def test_value_targets_are_the_best_path_score_where_the_lookahead_ran():
  score = jnp.array([[[-1.0, -3.0], [decoding.NEG, decoding.NEG], [-0.5, -2.0], [-4.0, -2.5]]])
  paths = lookahead_lib.Paths(first=jnp.zeros((1, 4, 2), jnp.int32), score=score,
                              valid=jnp.array([[True, True, False, True]]))
  values = jnp.array([[0.0, 5.0, 7.0, -2.0]])
  weights = jnp.array([[1.0, 1.0, 1.0, 0.0]])
  # anchor 0 counts (best -1 over 2 tokens); 1 has no path, 2 no lookahead, 3 no weight
  terms = heads.value_terms(values, paths, weights, scale=2)
  assert float(terms["value_sum"]) == 0.25
  assert float(terms["value_anchors"]) == 1.0
  assert float(terms["value_target_sum"]) == -0.5


def _without_heads(params):
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  return [x for path, x in leaves if not any(h in jax.tree_util.keystr(path) for h in HEADS)]


def test_a_step_trains_both_heads_and_at_zero_weight_leaves_the_trunk_as_without_them(tiny_run):
  mesh = sharding.make_mesh(-1, 1)
  runs = {}
  for name, extra in (("plain", {}),
                      ("heads", {"model.value_head": True, "model.done_head": True}),
                      ("zero", {"model.value_head": True, "model.done_head": True,
                                "train.value_weight": 0.0, "train.done_weight": 0.0})):
    config = load_config(RHYME_CONFIG, {**tiny_run, **extra})
    state, step = _step_setup(config, mesh)
    for _ in range(2):
      state, metrics = step(state, _batch(config))
    runs[name] = (_host(state.params), _host(metrics))

  params, metrics = runs["heads"]
  for key in ("value_loss", "value_target", "done_loss", "done_accuracy"):
    assert np.isfinite(metrics[key]), key
  assert metrics["value_target"] < 0  # a mean log-probability
  assert "value_loss" not in runs["plain"][1]
  for head in HEADS:  # zero-initialised, moved by their losses
    assert np.abs(params[head]["kernel"]).max() > 0, head
  np.testing.assert_allclose(runs["zero"][1]["loss"], runs["plain"][1]["loss"], rtol=1e-6)
  # equal to float noise, which Adam's normalisation scales up where a gradient is ~0
  trunk, plain = _without_heads(runs["zero"][0]), _without_heads(runs["plain"][0])
  assert len(trunk) == len(plain) == len(jax.tree.leaves(runs["plain"][0]))
  for a, b in zip(trunk, plain):
    np.testing.assert_allclose(a, b, atol=1e-5)
  assert all(not np.any(runs["zero"][0][h]["kernel"]) for h in HEADS)


def test_a_run_with_heads_resumed_from_its_checkpoint_equals_one_uninterrupted(tiny_run, tmp_path):
  config = load_config(RHYME_CONFIG, {**tiny_run, "model.value_head": True,
                                      "model.done_head": True, "train.steps": 4,
                                      "train.checkpoint_every": 2})
  settings = settings_lib.validate(config)
  whole, resumed = str(tmp_path / "whole"), str(tmp_path / "resumed")
  train.run(settings, whole)
  shutil.copytree(whole, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "4"))  # as if killed after step 2
  assert train.run(settings, resumed)["resumed_from"] == 2
  a, b = (jax.device_get(state_lib.restore_params(settings, w)) for w in (whole, resumed))
  for head in HEADS:
    assert np.abs(np.asarray(a[head]["kernel"])).max() > 0
  jax.tree.map(np.testing.assert_array_equal, a, b)
