"""Stunting modes on a tiny model with exact gradients (docs/design.md section 3)."""

import ast
import dataclasses
import functools
import inspect
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lookahead_jax import config as config_lib
from lookahead_jax import lookahead as la_lib
from lookahead_jax import model as model_lib
from lookahead_jax import state as state_lib
from lookahead_jax import stunting as st_lib
from lookahead_jax import train

LOOKAHEAD = la_lib.Lookahead(width=3, horizon=3)


def _stunt(mode, contrast="naive", lookahead=LOOKAHEAD, **kw):
  """The tests of each mode's mechanics use the naive definitions (q against p); the
  control contrast has tests of its own below."""
  return st_lib.Stunting(mode=mode, lookahead=lookahead, contrast=contrast, lam=0.5,
                         alignment_every=1, **kw)


def _batch(config, seed=0, b=4, t=12):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(2, config.vocab_size, (b, t + 1)).astype(np.int32)
  weights = (rng.random((b, t)) < 0.9).astype(np.float32)
  return {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:]),
          "weights": jnp.asarray(weights), "segment_ids": jnp.ones((b, t), jnp.int32),
          "positions": jnp.broadcast_to(jnp.arange(t), (b, t)),
          "needs_lookahead": jnp.zeros((b, t), bool)}


@functools.partial(jax.jit, static_argnames=("config", "stunt"))
def _objectives(params, batch, target, *, config, stunt):
  norm = jnp.maximum(batch["weights"].sum(), 1.0)
  return train.objectives(params, batch, jax.random.key(0), norm, target, model_cfg=config,
                          stunt=stunt, dropout=False)


@functools.partial(jax.jit, static_argnames=("config", "stunt"))
def _grads(params, batch, *, config, stunt):
  """(grad of the loss, grad of the alignment A) of the stunted objective."""
  f = lambda p, i: _objectives(p, batch, jnp.zeros(()), config=config, stunt=stunt)[0][i]
  return jax.grad(f)(params, 0), jax.grad(f)(params, 1)


@functools.partial(jax.jit, static_argnames=("config",))
def _terms(params, batch, *, config):
  """The lookahead's per-token terms, computed directly (not through train.objectives)."""
  logits, paths, _ = la_lib.teacher_forced_paths(params, batch["inputs"], batch["positions"],
                                                 config=config, lookahead=LOOKAHEAD)
  log_p = jax.nn.log_softmax(logits)
  return log_p, la_lib.amplify(paths), st_lib.token_terms(log_p, batch["targets"],
                                                          la_lib.amplify(paths), None,
                                                          _stunt("none"))


def _dot(a, b):
  return sum(float(jnp.vdot(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_every_mode_is_an_object_with_hooks_and_the_train_step_names_no_mode():
  assert list(st_lib.MODES) == ["none", "v1_token", "v1_update", "v2_penalty", "v3_balance",
                                "v3_project", "v4", "distill", "myopic"]
  assert st_lib.LOOKAHEAD_MODES == ("v1_token", "v1_update", "v2_penalty", "v3_balance",
                                    "v3_project", "distill")
  for name, hooks in st_lib.MODES.items():
    if name == "v4":  # config.validate resolves it to its base mode
      assert hooks is None
      with pytest.raises(ValueError, match="no hooks"):
        _ = st_lib.Stunting(mode=name).hooks
      continue
    stunt = st_lib.Stunting(mode=name)
    assert isinstance(hooks, st_lib.Mode) and stunt.hooks is hooks, name
    hash(stunt)  # still a static jit argument
    assert hooks.lookahead == (name in st_lib.LOOKAHEAD_MODES), name
    assert hooks.myopic == (name == "myopic"), name
    assert stunt.needs_alignment_grad == (name in ("v1_update", "v3_project")), name
  # The base hooks change nothing.
  none, w = st_lib.MODES["none"], jnp.ones((2, 3))
  weights, balanced = none.token_weights({}, w, jnp.zeros(()))
  assert weights is w and float(balanced) == 0.0
  extra, distill = none.extra_loss(None, None, w, jnp.ones(()), st_lib.Stunting())
  assert extra is None and float(distill) == 0.0
  grads, debt = {"w": w}, jnp.asarray(0.5)
  edited, skip, new_debt, logged = none.edit_update(grads, grads, jnp.ones(()), {}, debt,
                                                    st_lib.Stunting())
  assert edited is grads and not bool(skip) and new_debt is debt and logged == {}
  # train.py dispatches through the hooks only: no mode name as a string literal, except as
  # a key (aux["distill"] is the logged statistic of that name).
  tree = ast.parse(pathlib.Path(inspect.getsourcefile(train)).read_text())
  keys = {id(node.slice) for node in ast.walk(tree) if isinstance(node, ast.Subscript)}
  named = [(node.lineno, node.value) for node in ast.walk(tree)
           if isinstance(node, ast.Constant) and node.value in st_lib.MODES
           and id(node) not in keys]
  assert not named, named


def test_toward_tokens_and_movement_match_their_definitions(tiny_config, tiny_params):
  batch = _batch(tiny_config)
  log_p, amp, terms = _terms(tiny_params, batch, config=tiny_config)
  q = jnp.exp(amp.dense(log_p))
  p = jnp.exp(log_p)
  y = jax.nn.one_hot(batch["targets"], tiny_config.vocab_size)
  np.testing.assert_allclose(terms["m"], jnp.sum((y - p) * (q - p), -1), atol=1e-6)
  mix_y = la_lib.token_log_prob(la_lib.mix(log_p, jnp.log(q), 0.5), batch["targets"])
  np.testing.assert_array_equal(terms["toward"], mix_y > la_lib.token_log_prob(log_p,
                                                                               batch["targets"]))
  kl = jnp.sum(jnp.where(q > 0, q * (jnp.log(q) - log_p), 0.0), -1)
  np.testing.assert_allclose(terms["kl"], kl, atol=1e-5)
  assert 0 < terms["toward"].mean() < 1


def test_v1_token_gives_no_gradient_from_toward_tokens_and_the_plain_one_from_the_rest(
    tiny_config, tiny_params):
  batch = _batch(tiny_config, seed=1)
  _, _, terms = _terms(tiny_params, batch, config=tiny_config)
  stunted, _ = _grads(tiny_params, batch, config=tiny_config, stunt=_stunt("v1_token"))
  norm = jnp.maximum(batch["weights"].sum(), 1.0)

  def plain(params, keep):
    logits, _ = model_lib.forward(params, batch["inputs"], batch["positions"], config=tiny_config)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    return jnp.sum(ce * batch["weights"] * keep) / norm

  rest = jax.grad(plain)(tiny_params, ~terms["toward"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7), stunted, rest)
  # ... and the toward tokens' own gradient is not zero, so dropping them changed something.
  toward_only = jax.grad(plain)(tiny_params, terms["toward"])
  assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(toward_only)) > 1e-4


@functools.lru_cache(maxsize=None)
def _sgd_train_step(config, stunt, lr):
  tx = optax.sgd(lr)
  step = functools.partial(train.train_step, tx=tx, schedule=optax.constant_schedule(lr),
                           model_cfg=config, stunt=stunt, grad_accum=1, micro_sharding=None)
  return tx, jax.jit(step)


def _sgd_step(config, stunt, params, batch, lr=1e-2):
  """One train_step with plain SGD (updates = -lr * the step's gradient)."""
  tx, step = _sgd_train_step(config, stunt, lr)
  return step(state_lib.init_state(config, tx, 0, params=params), batch)


def test_v1_update_leaves_the_state_unchanged_exactly_when_it_would_raise_alignment(
    tiny_config, tiny_params):
  stunt = _stunt("v1_update")
  outcomes = set()
  for seed in range(6):
    # Different parameters too, so that both outcomes occur.
    params = jax.tree.map(lambda x, s=seed: x * (1.0 + 0.5 * s), tiny_params)
    batch = _batch(tiny_config, seed=seed)
    grads, grads_a = _grads(params, batch, config=tiny_config, stunt=stunt)
    raises = _dot(jax.tree.map(jnp.negative, grads), grads_a) > 0  # g = -grad(loss)
    state, metrics = _sgd_step(tiny_config, stunt, params, batch)
    unchanged = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params),
                                                         jax.tree.leaves(params)))
    assert unchanged == raises and int(metrics["skipped"]) == int(raises), seed
    assert int(state.skipped_total) == int(raises)
    outcomes.add(raises)
  assert outcomes == {True, False}


def test_v3_project_leaves_no_component_along_the_alignment_gradient(tiny_config, tiny_params):
  stunt = _stunt("v3_project")
  batch = _batch(tiny_config, seed=2)
  grads, grads_a = _grads(tiny_params, batch, config=tiny_config, stunt=stunt)
  projected = st_lib.project_out(grads, grads_a)
  norm = lambda t: np.sqrt(_dot(t, t))
  assert abs(_dot(grads, grads_a)) > 1e-3 * norm(grads) * norm(grads_a)  # it had one
  assert abs(_dot(projected, grads_a)) <= 1e-5 * norm(projected) * norm(grads_a)
  # The train step applies exactly that: with SGD the update is -lr * projected.
  state, _ = _sgd_step(tiny_config, stunt, tiny_params, batch, lr=1.0)
  update = jax.tree.map(jnp.subtract, state.params, tiny_params)
  assert abs(_dot(update, grads_a)) <= 1e-5 * norm(update) * norm(grads_a)


def test_v3_balance_weights_balance_the_movement_with_mean_weight_one(tiny_config, tiny_params):
  batch = _batch(tiny_config, seed=3)
  _, _, terms = _terms(tiny_params, batch, config=tiny_config)
  m, weights = terms["m"], batch["weights"]
  assert float(jnp.sum(weights * m)) != 0.0  # unbalanced before
  w, realized = st_lib.balance_weights(m, weights, jnp.zeros(()))
  assert abs(float(jnp.sum(w * m))) <= 1e-5 * float(jnp.sum(jnp.abs(w * m)))
  np.testing.assert_allclose(float(realized), float(jnp.sum(w * m)), atol=1e-7)
  np.testing.assert_allclose(float(w.sum() / weights.sum()), 1.0, rtol=1e-5)
  assert float(w.min()) >= 0 and np.all(np.asarray(w)[np.asarray(weights) == 0] == 0)
  # A target (the debt of earlier steps) is met exactly too.
  target = -0.3 * float(jnp.sum(jnp.abs(weights * m)))
  w, realized = st_lib.balance_weights(m, weights, jnp.asarray(target))
  np.testing.assert_allclose(float(realized), target, rtol=1e-4)
  # One-sided movement cannot be balanced: weights stay 1 and the movement is reported.
  w, realized = st_lib.balance_weights(jnp.abs(m) + 1e-3, weights, jnp.zeros(()))
  np.testing.assert_allclose(w, weights)
  assert float(realized) > 0


def test_v3_balance_step_is_balanced_and_carries_what_it_cannot_balance(tiny_config, tiny_params):
  stunt = _stunt("v3_balance", debt_decay=0.5)
  batch = _batch(tiny_config, seed=4)
  (_, _), aux = _objectives(tiny_params, batch, jnp.zeros(()), config=tiny_config, stunt=stunt)
  assert abs(float(aux["balanced"])) <= 1e-5 * abs(float(aux["movement"])) + 1e-7
  state, metrics = _sgd_step(tiny_config, stunt, tiny_params, batch)
  assert abs(float(state.balance_debt)) < 1e-6  # balanced: nothing carried
  state = state.replace(balance_debt=jnp.asarray(0.05, jnp.float32))
  (_, _), aux = _objectives(tiny_params, batch, -state.balance_debt, config=tiny_config,
                            stunt=stunt)
  np.testing.assert_allclose(float(aux["balanced"]), -0.05, rtol=1e-4)  # paid back


def test_v2_penalty_lowers_the_expected_probability_of_amplified_tokens(tiny_config, tiny_params):
  batch = _batch(tiny_config, seed=5)
  _, amp, _ = _terms(tiny_params, batch, config=tiny_config)

  def penalty(params):  # q held fixed at the starting parameters
    logits, _ = model_lib.forward(params, batch["inputs"], batch["positions"], config=tiny_config)
    return float(jnp.sum(st_lib.penalty(jax.nn.log_softmax(logits), amp) * batch["weights"]))

  before = penalty(tiny_params)
  state, metrics = _sgd_step(tiny_config, _stunt("v2_penalty", penalty=100.0), tiny_params, batch,
                             lr=1e-4)
  after = penalty(state.params)
  assert after < before, (before, after)
  np.testing.assert_allclose(float(metrics["penalty"]), before / float(batch["weights"].sum()),
                             rtol=1e-5)


def test_step_statistics_are_logged(tiny_config, tiny_params):
  batch = _batch(tiny_config, seed=6)
  _, _, terms = _terms(tiny_params, batch, config=tiny_config)
  _, metrics = _sgd_step(tiny_config, _stunt("v1_token"), tiny_params, batch)
  w = batch["weights"]
  np.testing.assert_allclose(float(metrics["toward"]),
                             float(jnp.sum(terms["toward"] * w) / w.sum()), rtol=1e-6)
  np.testing.assert_allclose(float(metrics["movement"]), float(jnp.sum(terms["m"] * w) / w.sum()),
                             rtol=1e-5, atol=1e-8)
  np.testing.assert_allclose(float(metrics["kl"]), float(jnp.sum(terms["kl"] * w) / w.sum()),
                             rtol=1e-5)
  assert -1.0 <= float(metrics["alignment_cos"]) <= 1.0


# ----------------------------------------------------------------------------- the contrast

# One SGD step of each mode with contrast="naive" (beam and SMC lookahead, B=3, H=3) on a
# fixed batch, measured with the code before the contrast existed: [loss, toward,
# movement, cos(g, g_A), sum of the new parameters].
EARLIER_STEP = {
 "v1_token/beam": [
  2.212397336959839,
  0.2222222238779068,
  0.028813309967517853,
  -0.28155606985092163,
  161.04818725585938
 ],
 "v1_token/smc": [
  2.3643746376037598,
  0.15555556118488312,
  0.014075364917516708,
  -0.017923779785633087,
  161.04824829101562
 ],
 "v1_update/beam": [
  2.7685019969940186,
  0.2222222238779068,
  0.028813309967517853,
  -0.015811467543244362,
  161.0488739013672
 ],
 "v1_update/smc": [
  2.7685019969940186,
  0.15555556118488312,
  0.014075364917516708,
  0.1932508796453476,
  161.04762268066406
 ],
 "v2_penalty/beam": [
  2.852627754211426,
  0.2222222238779068,
  0.028813309967517853,
  -0.101007379591465,
  161.04864501953125
 ],
 "v2_penalty/smc": [
  2.8364381790161133,
  0.15555556118488312,
  0.014075364917516708,
  0.15061765909194946,
  161.0487823486328
 ],
 "v3_balance/beam": [
  2.788729190826416,
  0.2222222238779068,
  0.02881331369280815,
  -0.09541057795286179,
  161.04876708984375
 ],
 "v3_balance/smc": [
  2.774149179458618,
  0.15555556118488312,
  0.014075363986194134,
  0.1588950753211975,
  161.0487823486328
 ],
 "v3_project/beam": [
  2.7685019969940186,
  0.2222222238779068,
  0.028813309967517853,
  -0.015811467543244362,
  161.04891967773438
 ],
 "v3_project/smc": [
  2.7685019969940186,
  0.15555556118488312,
  0.014075364917516708,
  0.1932508796453476,
  161.0485076904297
 ]
}


def _fixed_batch():
  rng = np.random.default_rng(11)
  b, t = 4, 12
  tokens = rng.integers(2, 16, (b, t + 1)).astype(np.int32)
  return {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:]),
          "weights": jnp.asarray((rng.random((b, t)) < 0.9).astype(np.float32)),
          "segment_ids": jnp.ones((b, t), jnp.int32),
          "positions": jnp.broadcast_to(jnp.arange(t), (b, t)),
          "needs_lookahead": jnp.zeros((b, t), bool)}


@pytest.mark.parametrize("key", sorted(EARLIER_STEP))
def test_the_naive_contrast_reproduces_the_earlier_step(tiny_config, tiny_params, key):
  mode, kind = key.split("/")
  stunt = _stunt(mode, lookahead=la_lib.Lookahead(kind=kind, width=3, horizon=3))
  state, m = _sgd_step(tiny_config, stunt, tiny_params, _fixed_batch())
  found = [float(m["loss"]), float(m["toward"]), float(m["movement"]),
           float(m["alignment_cos"]), float(sum(jnp.sum(x) for x in jax.tree.leaves(state.params)))]
  np.testing.assert_allclose(found, EARLIER_STEP[key], rtol=1e-5, atol=1e-6)


def test_control_terms_match_their_definitions(tiny_config, tiny_params):
  batch = _batch(tiny_config, seed=8)
  logits, found, control = la_lib.teacher_forced_paths(
      tiny_params, batch["inputs"], batch["positions"], config=tiny_config, lookahead=LOOKAHEAD)
  log_p = jax.nn.log_softmax(logits)
  amp, amp_1 = la_lib.amplify(found), la_lib.amplify(control)
  terms = st_lib.token_terms(log_p, batch["targets"], amp, amp_1, _stunt("v1_token", "control"))
  q_h, q_1 = jnp.exp(amp.dense(log_p)), jnp.exp(amp_1.dense(log_p))
  p = jnp.exp(log_p)
  y = jax.nn.one_hot(batch["targets"], tiny_config.vocab_size)
  np.testing.assert_allclose(terms["m"], jnp.sum((y - p) * (q_h - q_1), -1), atol=1e-6)
  mix = lambda q: la_lib.token_log_prob(la_lib.mix(log_p, jnp.log(q), 0.5), batch["targets"])
  np.testing.assert_array_equal(terms["toward"], mix(q_h) > mix(q_1))
  np.testing.assert_allclose(st_lib.alignment(log_p, amp, amp_1),
                             jnp.sum((q_h - q_1) * log_p, -1), atol=1e-5)
  penalty = st_lib.penalty(log_p, amp, amp_1)
  np.testing.assert_allclose(penalty, jnp.sum((q_h - q_1) * p, -1), atol=1e-6)
  assert float(jnp.abs(penalty).max()) <= 1.0  # v2_penalty stays bounded
  # Against p alone far more tokens count as toward: every one the model already predicts.
  naive = st_lib.token_terms(log_p, batch["targets"], amp, None, _stunt("v1_token"))
  assert float(terms["toward"].mean()) < float(naive["toward"].mean())


H1 = la_lib.Lookahead(width=3, horizon=1)


@pytest.mark.parametrize("mode", [m for m in st_lib.LOOKAHEAD_MODES if m != "distill"])
@pytest.mark.parametrize("kind", ["beam", "smc"])
def test_with_the_control_at_horizon_one_every_mode_is_the_plain_step(tiny_config, tiny_params,
                                                                       mode, kind):
  """H = 1 looks at nothing ahead: no toward token, m = 0, g_A = 0, so nothing is stunted."""
  batch = _batch(tiny_config, seed=9)
  la = dataclasses.replace(H1, kind=kind)
  plain, plain_metrics = _sgd_step(tiny_config, st_lib.Stunting(), tiny_params, batch)
  state, metrics = _sgd_step(tiny_config, _stunt(mode, "control", lookahead=la), tiny_params,
                             batch)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), state.params,
               plain.params)
  np.testing.assert_allclose(float(metrics["loss"]), float(plain_metrics["loss"]), atol=1e-6)
  assert float(metrics["toward"]) == 0.0 and abs(float(metrics["movement"])) < 1e-6
  assert int(metrics["skipped"]) == 0


def test_distill_lowers_the_kl_to_the_amplified_mixture(tiny_config, tiny_params):
  batch = _batch(tiny_config, seed=10)
  stunt = _stunt("distill", "control", distill=1.0)
  logits, found, _ = la_lib.teacher_forced_paths(
      tiny_params, batch["inputs"], batch["positions"], config=tiny_config, lookahead=LOOKAHEAD)
  amp = la_lib.amplify(found)  # the target, held fixed at the starting parameters
  target = la_lib.mix(jax.nn.log_softmax(logits), amp.dense(jax.nn.log_softmax(logits)), 0.5)

  def kl(params):
    log_p = jax.nn.log_softmax(model_lib.forward(params, batch["inputs"], batch["positions"],
                                                 config=tiny_config)[0])
    return float(jnp.sum(jnp.sum(jnp.exp(target) * (target - log_p), -1) * batch["weights"]))

  state, metrics = _sgd_step(tiny_config, stunt, tiny_params, batch, lr=1e-3)
  assert kl(state.params) < kl(tiny_params)
  np.testing.assert_allclose(float(metrics["distill"]),
                             kl(tiny_params) / float(batch["weights"].sum()), rtol=1e-4)


def test_monitoring_logs_g_and_a_dev_g_never_positive_gives_no_warning(
    tiny_run, tmp_path, caplog):
  from lookahead_jax import metrics

  from conftest import RHYME_CONFIG, load_config

  config = load_config(RHYME_CONFIG, {
      **tiny_run, "train.steps": 3, "train.checkpoint_every": 0, "lookahead.lam": 0.9,
      "lookahead.width": 2, "lookahead.horizon": 2, "stunting.monitor_every": 1,
      "stunting.monitor_patience": 2, "stunting.monitor_batches": 1, "stunting.dev_width": 2,
      # a dev lookahead of horizon 1 is its own control: G = 0, never positive
      "stunting.dev_kind": "beam", "stunting.dev_horizon": 1,
      "probes.enabled": False})  # one monitor batch: no split for the probes (test_probes)
  # absl's verbosity sets the "absl" logger's level (a command run in-process may have
  # raised it): INFO on that logger for the run.
  with caplog.at_level("INFO", logger="absl"):
    summary = train.run(config, config_lib.validate(config), str(tmp_path))
  records = [r for r in metrics.read(str(tmp_path)) if "monitor_G_dev" in r]
  assert [r["step"] for r in records] == [1, 2, 3]
  for r in records:
    assert r["monitor_G_dev"] == 0.0 and math.isfinite(r["monitor_G_stunting"])
    assert {"monitor_G_dev_marked", "monitor_gain_dev", "monitor_helps_stunting"} <= set(r)
  said = [(r.levelname, r.getMessage()) for r in caplog.records
          if "dev lookahead" in r.getMessage()]
  # G was never above 0, so nothing fell: one note at the first evaluation, no warning
  # (test_monitor pins the warning after G had been clearly positive).
  assert [level for level, _ in said] == ["INFO", "INFO"], said
  assert "monitor: G every 1 steps" in said[0][1] and "tau 1, lam 0.9" in said[0][1]
  assert "step 1: the dev lookahead has not helped yet" in said[1][1]
  assert summary["monitor"]["step"] == 3
