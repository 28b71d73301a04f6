"""MCTS lookahead (mcts.py): the search finds a known best action and concentrates on it
as simulations grow; batched over anchors it equals a search per anchor; no future token
reaches an anchor's q; horizon 1 is the top-K control; the task reward moves q to the
child whose answers return 1, log-prob rewards give the q they gave before it, and an IDA
step on path_star trains the value head toward returns. Beside the behaviour they pin:
the value and done heads in the checkpoint (test_checkpoint.py), a v3_balance step on
MCTS (test_stunting.py), amplified sampling with it (test_lookahead.py), its config
errors (test_config.py)."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from lookahead_jax import lookahead as la_lib
from lookahead_jax import mcts, sharding, train
from lookahead_jax import model as model_lib
from lookahead_jax import settings as settings_lib
from lookahead_jax import state as state_lib
from lookahead_jax.data import pipeline

from conftest import REPO, load_config, tiny_path_star

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


def _hand_made(dead_end, values):
  """A step (mcts.Step) whose state is the path's arm (its first token); with `values`
  (a traced bool), a node's value is 0 on arm 1 and -5 on arm 0 instead of its best next
  token's log-prob (the search's own valuation without a value head)."""
  def step(arm, token, depth):
    arm = jnp.where(depth == 0, token, arm)
    dead = (arm == 0) & (depth + 1 >= dead_end)
    log_p = jnp.where(dead[:, None], UNIFORM, PEAKED)
    value = jnp.where(values, jnp.where(arm == 1, 0.0, -5.0), log_p.max(-1))
    return arm, log_p, value, jnp.ones((1,))
  return step


@functools.partial(jax.jit, static_argnames=("budget", "policy"))
def _q_hand_made(dead_end, values, budget, policy):
  """q of the hand-made tree, H = 6, two children a node."""
  first, score = mcts.search(ROOT, _hand_made(dead_end, values), jnp.zeros((1,), jnp.int32),
                             jax.random.key(0), width=2, horizon=6, budget=budget,
                             policy=policy)
  return first, jnp.exp(score)


def test_the_search_finds_the_arm_without_a_dead_end_and_concentrates_on_it():
  # The dead end shows only after three tokens: one simulation per arm sees nothing (arm
  # 0 looks better, as its prior says); 40 simulations reach it.
  few, many = (_q_hand_made(3, False, budget, "gumbel") for budget in (2, 40))
  for first, _ in (few, many):
    np.testing.assert_array_equal(first, [0, 1])
  assert float(few[1][1]) < 0.01 and float(many[1][1]) > 0.99
  # PUCT's visits find it too, less sharply.
  assert float(_q_hand_made(3, False, 40, "visits")[1][1]) > 0.8


def test_horizon_one_searches_nothing_it_is_the_top_k_control():
  first, score = mcts.search(ROOT, None, None, None, width=2, horizon=1, budget=0,
                             policy="gumbel")
  np.testing.assert_array_equal(first, [0, 1])
  np.testing.assert_allclose(score, ROOT[:2])  # log p on p's top-K, as beam's control


def test_an_ended_path_is_rescaled_by_the_length_penalty():
  # Token 2 ends the path (EOS) at p = 0.55; token 0 goes on at p = 0.35, then 0.97 a token.
  # Summed log-probs (penalty 0) prefer ending: log 0.55 > log 0.35 + 5 log 0.97. Compared
  # at the mean per token over H = 6 tokens (penalty 1), 6 log 0.55 < the arm's sum.
  # The same when a done head, not EOS, ends the path (discount 0 after token 2).
  root = jnp.log(jnp.array([0.35, 0.05, 0.55, 0.05]))
  hand_made = _hand_made(99, False)

  def done_head(arm, token, depth):
    arm, log_p, value, _ = hand_made(arm, token, depth)
    return arm, log_p, value, jnp.where(token == 2, 0.0, 1.0)

  @functools.partial(jax.jit, static_argnames=("penalty", "eos"))
  def q(penalty, eos):
    first, score = mcts.search(root, hand_made if eos else done_head,
                               jnp.zeros((1,), jnp.int32), jax.random.key(0), width=2,
                               horizon=6, budget=40, policy="gumbel",
                               eos_id=2 if eos else None, length_penalty=penalty)
    return first, jnp.exp(score)

  for eos in (True, False):
    for penalty, ends in ((0.0, True), (1.0, False)):
      first, weights = q(penalty, eos)
      np.testing.assert_array_equal(first, [2, 0])
      assert (float(weights[0]) > 0.99) == ends and (float(weights[1]) > 0.99) != ends


# The task reward: after the first token, token 2 ends the answer (p = 0.3; token 3 goes
# on, p = 0.6); an answer returns 1 when it ends on arm 1, the prior's second choice.
ENDING = jnp.log(jnp.array([0.05, 0.05, 0.3, 0.6]))


def _ending(arm, token, depth):
  """A step (mcts.Step) whose state is the path's arm; no value head."""
  return jnp.where(depth == 0, token, arm), ENDING[None], None, jnp.ones((1,))


@functools.partial(jax.jit, static_argnames=("task",))
def _q_ending(task):
  """q of the ending tree, H = 5, two children a node: rewarded by the task (the end
  token 2) or by log-probs (EOS 2)."""
  reward = lambda path: ((path[0] == 1) & jnp.any(path == 2)).astype(jnp.float32)
  first, score = mcts.search(ROOT, _ending, jnp.zeros((1,), jnp.int32), jax.random.key(0),
                             width=2, horizon=5, budget=20, policy="gumbel",
                             eos_id=None if task else 2, task=reward if task else None,
                             end_id=2 if task else None)
  return first, jnp.exp(score)


def test_the_task_reward_moves_q_to_the_child_whose_answers_return_one_against_the_prior():
  first, q = _q_ending(task=True)
  np.testing.assert_array_equal(first, [0, 1])
  assert float(q[1]) > 0.9
  _, q = _q_ending(task=False)  # the same tree rewarded by log-probs: the prior decides
  assert float(q[0]) > 0.9


def test_log_prob_rewards_give_the_q_stored_before_the_task_reward(tiny_config, tiny_params):
  # Computed before the task reward was added: the hand-made tree, and the model with an
  # EOS among the children and the length penalty (every branch of the log-prob rewards).
  np.testing.assert_allclose(_q_hand_made(3, False, 6, "gumbel")[1],
                             [0.9968336224555969, 0.0031664094422012568], rtol=1e-6)
  np.testing.assert_allclose(_q_hand_made(3, False, 40, "gumbel")[1],
                             [0.0014309065882116556, 0.9985690116882324], rtol=1e-5)
  lookahead = la_lib.Lookahead(kind="mcts", width=3, horizon=3, eos_id=2, length_penalty=1.0)
  found, _ = _paths(tiny_params, _tokens(tiny_config), tiny_config, lookahead)
  np.testing.assert_array_equal(found.first[0, :4],
                                [[5, 2, 3], [0, 3, 8], [8, 6, 7], [13, 3, 2]])
  np.testing.assert_allclose(found.score[0, :4], [[-0.756127, -5.819533, -0.639512],
                                                  [-4.936482, -4.08796, -0.024245],
                                                  [-4.271942, -5.292719, -0.019165],
                                                  [-1.36104, -0.301163, -5.613377]], atol=2e-5)


def test_a_value_overrides_the_prior_where_the_likelihood_cannot_tell():
  no_dead_end = 99
  _, q = _q_hand_made(no_dead_end, False, 40, "gumbel")  # the prior decides
  assert float(q[0]) > 0.99
  _, q = _q_hand_made(no_dead_end, True, 40, "gumbel")  # the value says arm 1
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


# ----------------------------------------------------------------------------- IDA on the task


def test_an_ida_step_on_path_star_rewarded_by_the_task_trains_values_toward_returns(tmp_path):
  config = load_config(os.path.join(REPO, "configs", "experiments", "path_star_mcts.py"),
                       None, "ida")
  assert config.lookahead.reward == "task"
  small = tiny_path_star(tmp_path)  # its data, a 1-layer model; H = 5 holds 3 edges and "."
  config.data.update(small.data.to_dict())
  config.model.update(vocab_size=small.model.vocab_size, num_layers=1, d_model=16, num_heads=2)
  config.lookahead.horizon, config.lookahead.chunk = 5, 0
  config.train.update(global_batch=8, steps=3, warmup_steps=1)
  config.monitor.every = 0
  assert config.lookahead.horizon - 1 >= config.data.options.max_arm + 1
  settings = settings_lib.validate(config)
  assert settings.heads.lookahead.describe() == "beam B=1 H=5 task"
  mesh = sharding.make_mesh(-1, 1)
  tx, schedule = state_lib.make_optimizer(settings.train)
  _, shardings = state_lib.state_shardings(settings.model, tx, mesh)
  state = state_lib.create_state(settings, tx, shardings)
  step = train.jit_train_step(settings, mesh, tx, schedule, shardings)
  batches = pipeline.make_iterator(settings.data.name, "train", **settings.pipeline)
  for _ in range(2):
    state, metrics = step(state, next(batches))
    metrics = jax.device_get(metrics)
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["value_loss"])
    # a mean return: 1 where the answer so far plus the greedy path reaches the goal (the
    # anchors late in an answer), 0 elsewhere; not a mean log-probability
    assert 0.0 < metrics["value_target"] < 1.0
