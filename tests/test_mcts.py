"""MCTS lookahead (mcts.py): the search finds a known best action and concentrates on it
as simulations grow; batched over anchors it equals a per-anchor loop; no future token
reaches an anchor's q; the value and done heads live in the checkpoint; a stunted step
and amplified sampling run with it."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from lookahead_jax import checkpoint, decoding, mcts, train
from lookahead_jax import lookahead as la_lib
from lookahead_jax import model as model_lib
from lookahead_jax import state as state_lib
from lookahead_jax import stunting as st_lib

# Two packed rows, as in test_lookahead.py: documents of 5 and 7 tokens, and one of 10.
SEGMENTS = np.array([[1] * 5 + [2] * 7, [1] * 10 + [0] * 2])
POSITIONS = np.array([list(range(5)) + list(range(7)), list(range(10)) + [0, 0]])
MCTS = la_lib.Lookahead(kind="mcts", width=3, horizon=3)  # 6 simulations


# ----------------------------------------------------------------------------- a hand-made tree

# Four tokens; the root prefers token 0 (0.55) over token 1 (0.35). Every path continues
# with token 3 at p = 0.97, except that arm 0 (paths whose first token is 0) hits a dead
# end: from its `dead_end`-th token on, the next token is uniform (log 1/4 a step).
ROOT = jnp.log(jnp.array([0.55, 0.35, 0.05, 0.05]))
PEAKED = jnp.log(jnp.array([0.01, 0.01, 0.01, 0.97]))
UNIFORM = jnp.full(4, -jnp.log(4.0))


def _hand_made(dead_end: int, values: bool):
  """A step (mcts.Step) whose state is the path's arm (its first token); with `values`,
  the value of a node is 0 on arm 1 and -5 on arm 0."""
  def step(arm, token, depth):
    arm = jnp.where(depth == 0, token, arm)
    dead = (arm == 0) & (depth + 1 >= dead_end)
    log_p = jnp.where(dead[:, None], UNIFORM, PEAKED)
    value = jnp.where(arm == 1, 0.0, -5.0) if values else None
    return arm, log_p, value, jnp.ones((1,))
  return step


@functools.partial(jax.jit, static_argnames=("dead_end", "values", "budget", "policy"))
def _q_hand_made(dead_end, values, budget, policy):
  first, score = mcts.search(ROOT, _hand_made(dead_end, values), jnp.zeros((1,), jnp.int32),
                             jax.random.key(0), width=2, horizon=6, budget=budget,
                             policy=policy)
  return first, jnp.exp(score)


@pytest.mark.parametrize("policy", mcts.POLICIES)
def test_the_search_finds_the_arm_without_a_dead_end_and_concentrates_on_it(policy):
  # The dead end shows only after three tokens: one simulation per arm sees nothing
  # (arm 0 looks better, as its prior says); more simulations reach it.
  q_best = []
  for budget in (2, 10, 40):
    first, q = _q_hand_made(3, False, budget, policy)
    np.testing.assert_array_equal(first, [0, 1])
    q_best.append(float(q[1]))
  assert q_best[0] < 0.5 < q_best[-1], q_best
  assert q_best == sorted(q_best), q_best  # more simulations, more mass on the best arm
  assert q_best[-1] > (0.99 if policy == "gumbel" else 0.8), q_best


def test_a_value_overrides_the_prior_where_the_likelihood_cannot_tell():
  _, q = _q_hand_made(99, False, 10, "gumbel")  # no dead end: the prior decides
  assert float(q[0]) > 0.5
  _, q = _q_hand_made(99, True, 10, "gumbel")  # the value says arm 1
  assert float(q[1]) > 0.99


# ----------------------------------------------------------------------------- on the model


def _tokens(config, seed=0):
  return np.asarray(jax.random.randint(jax.random.key(seed), SEGMENTS.shape, 0,
                                       config.vocab_size))


def _paths(params, tokens, config, lookahead=MCTS):
  _, found, control = la_lib.teacher_forced_paths(
      params, jnp.asarray(tokens), jnp.asarray(POSITIONS), jnp.asarray(SEGMENTS),
      config=config, lookahead=lookahead)
  return found, control


@functools.partial(jax.jit, static_argnames=("config", "lookahead"))
def _one_prefix(params, tokens, length, rng, *, config, lookahead):
  """The search of one anchor from a fresh pass over its own prefix (tokens [n], the first
  `length` real)."""
  n = tokens.shape[0]
  logits, cache = model_lib.forward(params, tokens[None], jnp.arange(n)[None], config=config)
  prefix = (tuple(k[0] for k in cache.k), tuple(v[0] for v in cache.v), jnp.arange(n) < length)
  return mcts.search_one(params, prefix, jax.nn.log_softmax(logits[0, length - 1]), length,
                         rng, 1.0, config=config, lookahead=lookahead)


def test_batched_over_anchors_equals_a_search_per_anchor(tiny_config, tiny_params):
  tokens = _tokens(tiny_config)
  found, control = _paths(tiny_params, tokens, tiny_config)
  np.testing.assert_array_equal(found.valid, SEGMENTS > 0)
  keys = jax.random.split(jax.random.key(0), SEGMENTS.shape)  # paths_from_pass's, rng None
  width = SEGMENTS.shape[1]
  for r, t in zip(*np.nonzero(SEGMENTS)):
    start = np.flatnonzero(SEGMENTS[r] == SEGMENTS[r, t])[0]
    own = np.zeros(width, np.int32)
    own[:t + 1 - start] = tokens[r, start:t + 1]
    first, score = _one_prefix(tiny_params, jnp.asarray(own), t + 1 - start, keys[r, t],
                               config=tiny_config, lookahead=MCTS)
    np.testing.assert_array_equal(found.first[r, t], first)
    np.testing.assert_allclose(found.score[r, t], score, atol=1e-4)
  # q sums to one over the children, and the control is p's top-K (beam's).
  np.testing.assert_allclose(jnp.exp(found.score).sum(-1)[SEGMENTS > 0], 1.0, atol=1e-5)
  np.testing.assert_array_equal(control.first, found.first)


def test_no_future_token_reaches_an_anchors_q(tiny_config, tiny_params):
  tokens = _tokens(tiny_config, seed=1)
  changed = tokens.copy()
  changed[:, 7:] = (changed[:, 7:] + 5) % tiny_config.vocab_size
  before, _ = _paths(tiny_params, tokens, tiny_config)
  after, _ = _paths(tiny_params, changed, tiny_config)
  np.testing.assert_array_equal(before.first[:, :7], after.first[:, :7])
  np.testing.assert_allclose(before.score[:, :7], after.score[:, :7], atol=1e-6)
  assert not np.allclose(before.score[:, 7:], after.score[:, 7:])  # later anchors did change


def test_horizon_one_is_the_top_k_control(tiny_config, tiny_params):
  tokens = _tokens(tiny_config)
  one = la_lib.Lookahead(kind="mcts", width=3, horizon=1)
  found, control = _paths(tiny_params, tokens, tiny_config, one)
  np.testing.assert_array_equal(found.first, control.first)
  np.testing.assert_allclose(found.score, control.score, atol=1e-6)


# ----------------------------------------------------------------------------- heads


def test_value_and_done_heads_are_in_the_checkpoint(tiny_config, tmp_path):
  config = dataclasses.replace(tiny_config, value_head=True, done_head=True)
  tx = optax.adamw(1e-3)
  state = state_lib.init_state(config, tx, 0)
  # heads moved off their zero initialisation, so a restore from fresh parameters shows
  state = state.replace(params=jax.tree.map(lambda x: x + 0.5, state.params))
  tokens = jnp.asarray(_tokens(tiny_config))
  _, _, heads = model_lib.forward(state.params, tokens, jnp.asarray(POSITIONS), config=config,
                                  heads=True)
  assert heads["value"].shape == heads["done"].shape == tokens.shape
  mngr = checkpoint.manager(tmp_path, create=True)
  mngr.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
  mngr.wait_until_finished()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          jax.eval_shape(functools.partial(state_lib.init_state, config, tx, 0)))
  restored, _, bad = checkpoint.restore(checkpoint.manager(tmp_path), abstract)
  assert not bad
  _, _, again = model_lib.forward(restored.params, tokens, jnp.asarray(POSITIONS),
                                  config=config, heads=True)
  for name in ("value", "done"):
    np.testing.assert_array_equal(again[name], heads[name])
  # A model without heads has no such parameters: the heads are the config's choice.
  assert model_lib.num_params(restored.params) > model_lib.num_params(
      model_lib.abstract_params(tiny_config))


# ----------------------------------------------------------------------------- plugged in


def test_a_v3_balance_step_runs_on_mcts_lookahead(tiny_config, tiny_params):
  rng = np.random.default_rng(4)
  b, t = 4, 12
  tokens = rng.integers(2, tiny_config.vocab_size, (b, t + 1)).astype(np.int32)
  batch = {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:]),
           "weights": jnp.ones((b, t), jnp.float32), "segment_ids": jnp.ones((b, t), jnp.int32),
           "positions": jnp.broadcast_to(jnp.arange(t), (b, t)),
           "needs_lookahead": jnp.zeros((b, t), bool)}
  stunt = st_lib.Stunting(mode="v3_balance", lookahead=MCTS, lam=0.5)
  tx = optax.sgd(1e-2)
  step = jax.jit(functools.partial(train.train_step, tx=tx, schedule=optax.constant_schedule(1e-2),
                                   model_cfg=tiny_config, stunt=stunt, grad_accum=1,
                                   micro_sharding=None))
  state, metrics = step(state_lib.init_state(tiny_config, tx, 0, params=tiny_params), batch)
  assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))
  assert float(metrics["balanced_step"]) == 1.0  # both sides: the MCTS q moved tokens both ways
  assert abs(float(state.balance_debt)) < 1e-6


def test_amplified_sampling_with_one_child_and_all_weight_on_q_is_greedy(tiny_config,
                                                                        tiny_params):
  prompts = jax.random.randint(jax.random.key(8), (3, 5), 0, tiny_config.vocab_size)
  greedy = decoding.generate(tiny_params, prompts, jax.random.key(0), config=tiny_config,
                             max_new_tokens=6)
  one_child = la_lib.Lookahead(kind="mcts", width=1, horizon=3)  # q: one-hot on p's argmax
  amplified = la_lib.sample_amplified(tiny_params, prompts, jax.random.key(1), None, 1.0, 1.0,
                                      config=tiny_config, lookahead=one_child,
                                      max_new_tokens=6, mixture="loglinear")
  np.testing.assert_array_equal(amplified, greedy)
