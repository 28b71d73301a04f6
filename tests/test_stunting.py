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
from lookahead_jax import settings as settings_lib
from lookahead_jax import state as state_lib
from lookahead_jax import stunting as st_lib
from lookahead_jax import train
from lookahead_jax.data import tokenizers

LOOKAHEAD = la_lib.Lookahead(width=3, horizon=3)


def _stunt(mode, contrast="naive", lookahead=LOOKAHEAD, **kw):
  """The tests of each mode's mechanics use the naive definitions (q against p); the
  control contrast has tests of its own below."""
  return st_lib.Stunting(mode=mode, lookahead=lookahead, contrast=contrast,
                         mixture=la_lib.Mixture(lam=0.5), alignment_every=1, **kw)


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
    if name == "v4":  # settings.validate resolves it to its base mode
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
  weights, stats = none.token_weights({}, w, jnp.zeros(()))
  assert weights is w and stats == {}
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


def test_every_mode_has_one_line_and_the_readme_lists_it():
  assert list(config_lib.STUNTING_MODES) == list(st_lib.MODES)
  readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
  for mode, line in config_lib.STUNTING_MODES.items():
    assert "\n" not in line and f"| `{mode}` | {line} |" in readme, mode


def test_toward_tokens_and_movement_match_their_definitions(tiny_config, tiny_params):
  batch = _batch(tiny_config)
  log_p, amp, terms = _terms(tiny_params, batch, config=tiny_config)
  q = jnp.exp(amp.dense(log_p))
  p = jnp.exp(log_p)
  y = jax.nn.one_hot(batch["targets"], tiny_config.vocab_size)
  np.testing.assert_allclose(terms["m"], jnp.sum((y - p) * (q - p), -1), atol=1e-6)
  mix_y = la_lib.token_log_prob(la_lib.mix(log_p, jnp.log(q), 0.5), batch["targets"])
  gain = mix_y - la_lib.token_log_prob(log_p, batch["targets"])
  np.testing.assert_allclose(terms["gain"], gain, atol=1e-6)
  margin = st_lib.Stunting().margin
  sure = np.abs(np.asarray(gain) - margin) > 1e-5  # away from the margin (rounding)
  np.testing.assert_array_equal(np.asarray(terms["toward"])[sure], np.asarray(gain > margin)[sure])
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

  grad = jax.jit(jax.grad(plain))
  rest = grad(tiny_params, ~terms["toward"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7), stunted, rest)
  # ... and the toward tokens' own gradient is not zero, so dropping them changed something.
  toward_only = grad(tiny_params, terms["toward"])
  assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(toward_only)) > 1e-4


@functools.lru_cache(maxsize=None)
def _sgd_train_step(config, stunt, lr):
  tx = optax.sgd(lr)
  step = functools.partial(train.train_step, tx=tx, schedule=optax.constant_schedule(lr),
                           model_cfg=config, stunt=stunt, grad_accum=1, micro_sharding=None)
  return tx, jax.jit(step)


def _sgd_step(config, stunt, params, batch, lr=1e-2, debt=None):
  """One train_step with plain SGD (updates = -lr * the step's gradient), from a state
  with `debt` (v3_balance) when given."""
  tx, step = _sgd_train_step(config, stunt, lr)
  state = state_lib.init_state(config, tx, 0, params=params)
  if debt is not None:
    state = state.replace(balance_debt=debt)
  return step(state, batch)


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


def _reach(m, weights):
  """The movements balance_weights can reach, from its definition: (a = 0, b = 0)."""
  m, weights = np.asarray(m, np.float64), np.asarray(weights, np.float64)
  up, down = (m > 0) * weights, (m < 0) * weights
  count = up.sum() + down.sum()
  return -np.sum(-down * m) * count / down.sum(), np.sum(up * m) * count / up.sum()


def test_v3_balance_weights_balance_the_movement_with_mean_weight_one(tiny_config, tiny_params):
  batch = _batch(tiny_config, seed=3)
  _, _, terms = _terms(tiny_params, batch, config=tiny_config)
  m, weights = terms["m"], batch["weights"]
  assert float(jnp.sum(weights * m)) != 0.0  # unbalanced before
  w, stats = st_lib.balance_weights(m, weights, jnp.zeros(()))
  assert abs(float(jnp.sum(w * m))) <= 1e-5 * float(jnp.sum(jnp.abs(w * m)))
  np.testing.assert_allclose(float(stats["balance_realized"]), float(jnp.sum(w * m)), atol=1e-7)
  np.testing.assert_allclose(float(w.sum() / weights.sum()), 1.0, rtol=1e-5)
  assert float(w.min()) >= 0 and np.all(np.asarray(w)[np.asarray(weights) == 0] == 0)
  assert float(stats["balanced_step"]) == 1.0 and float(stats["balance_clipped"]) == 0.0
  # A target (the debt of earlier steps) is met exactly too.
  target = -0.3 * float(jnp.sum(jnp.abs(weights * m)))
  w, stats = st_lib.balance_weights(m, weights, jnp.asarray(target))
  np.testing.assert_allclose(float(stats["balance_realized"]), target, rtol=1e-4)
  assert float(stats["balanced_step"]) == 1.0 and float(stats["balance_clipped"]) == 0.0
  # A target out of reach is clipped to the nearest reachable movement and met there: on
  # one side toward tokens get weight 0, on the other away tokens do; the mean weight is 1.
  lowest, highest = _reach(m, weights)
  for target, reach, zero in ((3.0 * lowest, lowest, m > 0), (3.0 * highest, highest, m < 0)):
    w, stats = st_lib.balance_weights(m, weights, jnp.asarray(target))
    np.testing.assert_allclose(float(stats["balance_realized"]), reach, rtol=1e-4)
    np.testing.assert_allclose(float(stats["balance_target"]), reach, rtol=1e-5)
    assert float(stats["balanced_step"]) == 1.0 and float(stats["balance_clipped"]) == 1.0
    np.testing.assert_allclose(np.asarray(w)[np.asarray(zero)], 0.0, atol=1e-6)
    np.testing.assert_allclose(float(w.sum() / weights.sum()), 1.0, rtol=1e-5)
  # One-sided movement cannot be balanced: the mean weight 1 leaves weight 1 on the one
  # side, the movement is reported and the step is not counted as balanced.
  w, stats = st_lib.balance_weights(jnp.abs(m) + 1e-3, weights, jnp.zeros(()))
  np.testing.assert_allclose(w, weights)
  assert float(stats["balance_realized"]) > 0 and float(stats["balanced_step"]) == 0.0
  assert float(stats["balance_clipped"]) == 0.0


def test_v3_balance_is_not_locked_into_plain_steps_by_one_sided_steps(tiny_config, tiny_params):
  """After one-sided steps the carried debt is beyond any step's reach; earlier code then
  fell back to plain weights for good. Now every two-sided step balances towards it."""
  hooks, stunt = st_lib.MODES["v3_balance"], _stunt("v3_balance", debt_decay=0.9)
  batch = _batch(tiny_config, seed=3)
  _, _, terms = _terms(tiny_params, batch, config=tiny_config)
  m, weights = terms["m"], batch["weights"]
  one_sided = jnp.abs(m) + 1e-3
  debt = jnp.zeros(())

  def step(m, debt):
    w, stats = hooks.token_weights({"m": m}, weights, -debt)
    _, skip, new_debt, logged = hooks.edit_update({}, {}, jnp.zeros(()), stats, debt, stunt)
    assert not bool(skip)
    return w, stats, new_debt, logged

  for _ in range(5):
    w, stats, debt, logged = step(one_sided, debt)
    np.testing.assert_allclose(w, weights)  # plain: nothing to balance against
    assert float(logged["balanced_step"]) == 0.0
  lowest, highest = _reach(m, weights)
  assert -float(debt) < lowest  # out of reach of the two-sided step: the old fallback case
  plain, scale = float(jnp.sum(weights * m)), float(jnp.sum(jnp.abs(weights * m)))
  magnitudes = []
  for i in range(40):
    w, stats, new_debt, logged = step(m, debt)
    assert float(logged["balanced_step"]) == 1.0, i  # never a plain step again
    assert not np.allclose(w, weights)
    target = -float(debt)
    clipped = float(logged["balance_clipped"]) == 1.0
    assert clipped == (target < lowest), i
    np.testing.assert_allclose(float(stats["balance_realized"]),
                               lowest if clipped else target, rtol=1e-4, atol=1e-6 * scale)
    if clipped:
      assert float(stats["balance_realized"]) < plain  # pays back as much as it can
    magnitudes.append(abs(float(new_debt)))
    debt = new_debt
  # The debt shrinks every step and, once within reach, is met exactly: nothing carried.
  assert all(b < a for a, b in zip(magnitudes, magnitudes[1:]) if a > 1e-5 * scale), magnitudes
  assert float(logged["balance_clipped"]) == 0.0 and magnitudes[-1] < 1e-5 * scale


def test_v3_balance_step_is_balanced_and_carries_what_it_cannot_balance(tiny_config, tiny_params):
  stunt = _stunt("v3_balance", debt_decay=0.5)
  batch = _batch(tiny_config, seed=4)
  (_, _), aux = _objectives(tiny_params, batch, jnp.zeros(()), config=tiny_config, stunt=stunt)
  assert abs(float(aux["balance_realized"])) <= 1e-5 * abs(float(aux["movement"])) + 1e-7
  state, metrics = _sgd_step(tiny_config, stunt, tiny_params, batch)
  assert abs(float(state.balance_debt)) < 1e-6  # balanced: nothing carried
  assert float(metrics["balanced_step"]) == 1.0 and float(metrics["balance_clipped"]) == 0.0
  state = state.replace(balance_debt=jnp.asarray(0.05, jnp.float32))
  (_, _), aux = _objectives(tiny_params, batch, -state.balance_debt, config=tiny_config,
                            stunt=stunt)
  np.testing.assert_allclose(float(aux["balance_realized"]), -0.05, rtol=1e-4)  # paid back
  # A debt beyond reach: the train step still balances (clipped) and logs it.
  _, _, terms = _terms(tiny_params, batch, config=tiny_config)
  lowest, _ = _reach(terms["m"], batch["weights"])
  debt = jnp.asarray(-10.0 * lowest, jnp.float32)
  state, metrics = _sgd_step(tiny_config, stunt, tiny_params, batch, debt=debt)
  assert float(metrics["balanced_step"]) == 1.0 and float(metrics["balance_clipped"]) == 1.0
  np.testing.assert_allclose(float(state.balance_debt), 0.5 * (float(debt) + lowest), rtol=1e-4)


def test_v3_balance_runs_a_balanced_step_on_mcts_lookahead(tiny_config, tiny_params):
  mcts = la_lib.Lookahead(kind="mcts", width=3, horizon=3)
  stunt = _stunt("v3_balance", contrast="control", lookahead=mcts)
  state, metrics = _sgd_step(tiny_config, stunt, tiny_params, _batch(tiny_config, seed=4))
  assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))
  assert float(metrics["balanced_step"]) == 1.0  # the MCTS q moved tokens both ways
  assert abs(float(state.balance_debt)) < 1e-6


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
  # The earlier code had no margin: a token was toward when its gain was > 0.
  stunt = _stunt(mode, lookahead=la_lib.Lookahead(kind=kind, width=3, horizon=3), margin=0.0)
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
  gain = mix(q_h) - mix(q_1)
  np.testing.assert_allclose(terms["gain"], gain, atol=1e-5)
  margin = st_lib.Stunting().margin
  sure = np.abs(np.asarray(gain) - margin) > 1e-5  # away from the margin (rounding)
  np.testing.assert_array_equal(np.asarray(terms["toward"])[sure], np.asarray(gain > margin)[sure])
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
      "lookahead.width": 2, "lookahead.horizon": 2, "monitor.every": 1,
      "monitor.patience": 2, "monitor.batches": 1, "monitor.dev_width": 2,
      # a dev lookahead of horizon 1 is one of its control's family (p's top-k): G ~ 0,
      # never clearly positive
      "monitor.dev_kind": "beam", "monitor.dev_horizon": 1,
      "probes.enabled": False})  # one monitor batch: no split for the probes (test_probes)
  # absl's verbosity sets the "absl" logger's level (a command run in-process may have
  # raised it): INFO on that logger for the run.
  with caplog.at_level("INFO", logger="absl"):
    summary = train.run(settings_lib.validate(config), str(tmp_path))
  records = [r for r in metrics.read(str(tmp_path)) if "monitor_G_dev" in r]
  assert [r["step"] for r in records] == [1, 2, 3]
  for r in records:
    # The control is fitted over a family that holds the dev lookahead's own setting, so G
    # is about 0 and its interval never lies above 0 (each side is fitted on other batches
    # than those G is reported on, so G is not exactly 0).
    assert abs(r["monitor_G_dev"]) < 0.01 and math.isfinite(r["monitor_G_stunting"])
    assert r["monitor_G_dev_lo"] <= 0.0 and r["monitor_G_dev_marked_lo"] <= 0.0
    assert {"monitor_G_dev_marked", "monitor_gain_dev", "monitor_helps_stunting"} <= set(r)
  said = [(r.levelname, r.getMessage()) for r in caplog.records
          if "dev lookahead" in r.getMessage()]
  # G was never above 0, so nothing fell: one note at the first evaluation, no warning
  # (test_monitor pins the warning after G had been clearly positive).
  assert [level for level, _ in said] == ["INFO", "INFO"], said
  assert "monitor: G every 1 steps" in said[0][1] and "fitted on" in said[0][1]
  assert "step 1: the dev lookahead has not helped yet" in said[1][1]
  assert summary["monitor"]["step"] == 3


# ----------------------------------------------------------------------------- the margin


def _one_anchor(p, q_h, q_1, vocab=16):
  """log p [1, 1, V] and q_H, q_1 (lookahead.Amplified) of one anchor, from {token: prob}
  (p's other tokens share what is left evenly)."""
  rest = (1.0 - sum(p.values())) / (vocab - len(p))
  probs = np.full(vocab, rest)
  for token, prob in p.items():
    probs[token] = prob
  log_p = jnp.log(jnp.asarray(probs, jnp.float32))[None, None]

  def amp(q):
    tokens = jnp.asarray(list(q), jnp.int32)[None, None]
    log_q = jnp.log(jnp.asarray(list(q.values()), jnp.float32))[None, None]
    return la_lib.Amplified(tokens=tokens, log_q=log_q, valid=jnp.ones((1, 1), bool))

  return log_p, amp(q_h), amp(q_1)


def test_v1_token_a_confident_correct_token_is_not_toward_under_the_default_margin():
  base = config_lib.base_config()
  assert base.stunting.margin == st_lib.Stunting().margin == 0.01
  stunt = st_lib.Stunting(mode="v1_token", lookahead=LOOKAHEAD, contrast="control",
                          mixture=la_lib.Mixture(lam=base.lookahead.lam,
                                                 mixture=base.lookahead.mixture),
                          margin=base.stunting.margin)
  y = jnp.asarray([[3]], jnp.int32)
  rest = 0.001 / 15
  # p(y) = 0.999; the lookahead puts all its mass on y, the control (top 3 of p) nearly all.
  confident = _one_anchor({3: 0.999}, {3: 1.0, 4: 0.0, 5: 0.0},
                          {3: 0.999 / (0.999 + 2 * rest), 4: rest / (0.999 + 2 * rest),
                           5: rest / (0.999 + 2 * rest)})
  # Two equally likely arms: only looking ahead tells that y is the right one.
  arms = _one_anchor({3: 0.5, 4: 0.5 - 1e-6}, {3: 1.0, 4: 0.0}, {3: 0.5, 4: 0.5})
  ones = jnp.ones((1, 1))
  for (log_p, q_h, q_1), toward in ((confident, False), (arms, True)):
    terms = st_lib.token_terms(log_p, y, q_h, q_1, stunt)
    assert bool(terms["toward"][0, 0]) == toward
    weights, _ = st_lib.MODES["v1_token"].token_weights(terms, ones, jnp.zeros(()))
    assert float(weights[0, 0]) == (0.0 if toward else 1.0)  # v1_token drops only the arm
  gain = float(st_lib.token_terms(*confident[:1], y, *confident[1:], stunt)["gain"][0, 0])
  assert 0.0 < gain < 1e-3  # looking ahead does help it, a little: toward without a margin
  assert bool(st_lib.token_terms(confident[0], y, confident[1], confident[2],
                                 dataclasses.replace(stunt, margin=0.0))["toward"][0, 0])
  gain = float(st_lib.token_terms(arms[0], y, arms[1], arms[2], stunt)["gain"][0, 0])
  np.testing.assert_allclose(gain, math.log(1.0 + base.lookahead.lam), rtol=1e-4)
  assert gain > 10 * stunt.margin


def test_the_toward_share_is_logged_on_marked_and_unmarked_tokens(tiny_config, tiny_params):
  batch = _batch(tiny_config, seed=6)
  stunt = _stunt("v1_token", margin=0.0)  # more toward tokens, on both parts
  log_p, amp, _ = _terms(tiny_params, batch, config=tiny_config)
  terms = st_lib.token_terms(log_p, batch["targets"], amp, None, stunt)
  marked = jnp.asarray(np.random.default_rng(0).random(batch["weights"].shape) < 0.4)
  _, metrics = _sgd_step(tiny_config, stunt, tiny_params, dict(batch, needs_lookahead=marked))
  w, toward = np.asarray(batch["weights"]), np.asarray(terms["toward"])
  on = np.asarray(marked)
  share = lambda part: float(np.sum(toward * w * part) / np.sum(w * part))
  assert share(on) > 0 and share(~on) > 0
  np.testing.assert_allclose(float(metrics["toward_marked"]), share(on), rtol=1e-6)
  np.testing.assert_allclose(float(metrics["toward_unmarked"]), share(~on), rtol=1e-6)
  np.testing.assert_allclose(float(metrics["toward"]), share(np.ones_like(on)), rtol=1e-6)
  # A batch without marks has no marked share (NaN, which the step log leaves out).
  _, metrics = _sgd_step(tiny_config, stunt, tiny_params, batch)
  assert math.isnan(float(metrics["toward_marked"]))
  np.testing.assert_allclose(float(metrics["toward_unmarked"]), float(metrics["toward"]))


# ----------------------------------------------------------------------------- the applied update


def _adamw():
  """The runs' optimizer (state.make_optimizer: clipping, then AdamW with weight decay),
  with a clip that binds on the tiny model."""
  config = config_lib.base_config()
  config.train.update(learning_rate=1e-2, warmup_steps=1, steps=100, weight_decay=0.1,
                      grad_clip=0.05)
  return state_lib.make_optimizer(settings_lib.derive(config, tokenizers.ByteTokenizer()).train)


@functools.lru_cache(maxsize=None)
def _adamw_train_step(config, stunt):
  tx, schedule = _adamw()
  step = functools.partial(train.train_step, tx=tx, schedule=schedule, model_cfg=config,
                           stunt=stunt, grad_accum=1, micro_sharding=None)
  return tx, jax.jit(step)


def _adamw_state(config, params, seed):
  """The state after two plain AdamW steps (the first has learning rate 0): moments that
  differ from the next gradient."""
  tx, plain = _adamw_train_step(config, st_lib.Stunting())
  state = state_lib.init_state(config, tx, 0, params=params)
  for i in range(2):
    state, metrics = plain(state, _batch(config, seed=100 + 10 * seed + i))
    assert float(metrics["grad_norm"]) > 0.05  # the clip binds
  return state


def _same(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_v3_project_removes_the_alignment_component_of_the_update_adamw_applies(
    tiny_config, tiny_params):
  stunt = _stunt("v3_project")
  tx, step = _adamw_train_step(tiny_config, stunt)
  _, plain = _adamw_train_step(tiny_config, st_lib.Stunting())
  norm = lambda t: np.sqrt(_dot(t, t))
  batch = _batch(tiny_config, seed=2)
  start = _adamw_state(tiny_config, tiny_params, 0)
  grads, grads_a = _grads(start.params, batch, config=tiny_config, stunt=stunt)
  state, metrics = step(start, batch)
  delta = jax.tree.map(jnp.subtract, state.params, start.params)
  # The applied step has no first-order movement of A (weight decay included) ...
  moved = _dot(delta, grads_a) / (norm(delta) * norm(grads_a))
  assert abs(moved) <= 1e-5, moved
  # ... where the plain AdamW step had one, and projecting the raw gradient before AdamW
  # (the earlier code) would leave one.
  plain_state, _ = plain(start, batch)
  plain_delta = jax.tree.map(jnp.subtract, plain_state.params, start.params)
  assert abs(_dot(plain_delta, grads_a)) > 1e-3 * norm(plain_delta) * norm(grads_a)
  earlier, _ = tx.update(st_lib.project_out(grads, grads_a), start.opt_state, start.params)
  assert abs(_dot(earlier, grads_a)) > 1e-3 * norm(earlier) * norm(grads_a)
  # The moments follow the raw gradient, as in the plain step.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9),
               state.opt_state, plain_state.opt_state)
  np.testing.assert_allclose(float(metrics["update_alignment_cos"]),
                             _dot(plain_delta, grads_a) / (norm(plain_delta) * norm(grads_a)),
                             rtol=1e-3)


def test_v1_update_skips_by_the_update_adamw_applies(tiny_config, tiny_params):
  stunt = _stunt("v1_update")
  tx, step = _adamw_train_step(tiny_config, stunt)
  _, plain = _adamw_train_step(tiny_config, st_lib.Stunting())
  norm = lambda t: np.sqrt(_dot(t, t))
  outcomes, disagree = set(), []
  for seed in range(8):
    batch = _batch(tiny_config, seed=seed)
    start = _adamw_state(tiny_config, tiny_params, seed)
    grads, grads_a = _grads(start.params, batch, config=tiny_config, stunt=stunt)
    update, _ = tx.update(grads, start.opt_state, start.params)
    raises = _dot(update, grads_a) > 0  # optax's updates move the parameters: + u
    if raises != (_dot(jax.tree.map(jnp.negative, grads), grads_a) > 0):
      disagree.append(seed)
    state, metrics = step(start, batch)
    assert int(metrics["skipped"]) == int(raises) == int(state.skipped_total), seed
    if raises:  # nothing moves, not even the moments or the schedule's count
      assert _same(state.params, start.params) and _same(state.opt_state, start.opt_state)
    else:  # the applied step does not raise A to first order; moments as in a plain step
      delta = jax.tree.map(jnp.subtract, state.params, start.params)
      assert _dot(delta, grads_a) <= 1e-5 * norm(delta) * norm(grads_a), seed
      plain_state, _ = plain(start, batch)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9),
                   state.opt_state, plain_state.opt_state)
    outcomes.add(raises)
  assert outcomes == {True, False}
  # On some batches the raw gradient lowers A while the update AdamW applies raises it
  # (seed 3 here): the earlier test of the raw gradient let those steps through.
  assert disagree, "the raw gradient and the applied update agreed on every batch"
