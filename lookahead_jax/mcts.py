"""MCTS lookahead of one anchor, on DeepMind's mctx (docs/design.md section 10).

The search starts at the anchor: the root's children are the top-K tokens of p (K =
`lookahead.width`), its prior their log-probs (p renormalised on them). Every node of
the tree is a path of tokens after the anchor; its children are the top-K tokens of the
model's next-token distribution at the path's end, and moving to a child earns the
child token's log-probability (the reward). A simulation walks down the tree to a new
node and runs ONE model call, the node's token read against the shared prefix keys and
values of the teacher-forced pass (as beam lookahead does, lookahead.py) plus the
node's own path keys and values (a per-node cache of at most H-1 tokens, carried in the
node's embedding, so a new node copies its parent's path cache and writes one slot).
The tree is at most H-1 tokens deep (the forwarded tokens of an H-token path, as beam
lookahead forwards H-1 tokens per beam); a node is valued

  - by the model's value head at the node, when the model has one: H times its output,
    the head's estimate of the mean log-probability per token of the best H-token
    continuation from the node (heads.py trains it so), so a leaf sees H tokens further;
  - else by the log-probability of the node's most probable next token: the path is
    scored as extended greedily by one token, so a path of H-1 tree tokens scores H tokens,
    as a beam's does, and a wrong arm's dead end is seen at the node before it.

A simulation's return is the sum of its rewards plus the leaf's value: the summed
log-probability of its path. The root's own value (one visit's worth in PUCT's
normalisation; Gumbel's completion of unvisited children, only when S < K) is its best
token's log-prob. A path that reaches `lookahead.eos_id` (or that the done
head calls done) ends there: the edge into it discounts everything after it (discount 0,
or 1 - P(done) with a done head). A path that ends after d tokens (at EOS, or by the done
head in the share it calls done) returns its
summed log-prob times (H / d) ** `lookahead.length_penalty`, as beam lookahead rescales
its finished paths (lookahead.py): with 0, the default, an ended path is not rescaled, so
ending early escapes the negative rewards of the tokens a longer path still pays; with
1 every path is compared at its mean log-prob per token over H tokens. A search trained
into the policy (distill, IDA) needs 1 for every ending: a model that gives an ending any
mass at an anchor otherwise learns from the search to end there (docs/results.md, MCTS).

With `lookahead.reward = "task"` (a testbed with a return, data/local.py) the rewards are
the task's instead (docs/design.md section 10): moving to a child earns 0, and a path that
ends (at EOS, at the task's end token `task.end_id`, or by the done head in the share it
calls done) earns the task's return of the answer it completes (the anchor's document up
to the anchor, then the path; `Context`), a number in [0, 1]. A node is valued by the
value head as it is (heads.py trains it toward the return of the model's own
continuation), and without a value head by 0: nothing is known of an unfinished answer,
so the search credits only the endings it has reached (a tree of H-1 tokens reaches every
answer of up to H-1 tokens), and the prior decides between children it has seen nothing
end under. The root's value is 0; length_penalty rescales log-prob rewards only.

q_MCTS at the anchor, over the root's K children:
  - "gumbel" (default): Gumbel MuZero's improved policy, softmax(log prior + sigma(completed
    Q)), the root's `action_weights` (Danihelka et al. 2022), with every child considered
    and no Gumbel noise (the search is deterministic: a lookahead is an estimate, not an
    actor); sequential halving spreads the simulations over the children.
  - "visits": MuZero's PUCT search (no Dirichlet noise), q = the root's visit distribution.
It comes back as paths (lookahead.Paths): the K children's tokens, scored log q, so the
amplification's temperature tau sharpens or flattens q like any lookahead's scores.

Budget: `lookahead.simulations` model calls per anchor (0: K(H-1), the calls of a width-K
beam lookahead). Horizon 1 needs no search: q is p's top-K (the control itself).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import mctx

from lookahead_jax import decoding
from lookahead_jax import model as model_lib

Array = jax.Array
POLICIES = ("gumbel", "visits")
Step = Callable[[Any, Array, Array], tuple[Any, Array, Array | None, Array]]


@flax.struct.dataclass
class Node:
  """A search node (mctx's embedding), with mctx's batch axis of one root.

  state:   what `step` needs to extend the path (the model: its path cache, `PathCache`).
  depth:   [1] int32 tokens on the path.
  total:   [1] the path's summed log-probability (what an ending rescales).
  tokens:  [1, K] int32 the children's tokens: the top-K of p at the path's end.
  log_p:   [1, K] their log-probabilities (the rewards of moving to them).
  path:    [1, H-1] int32 the path's tokens (-1 after them), which the task reward reads.
  """

  state: Any
  depth: Array
  total: Array
  tokens: Array
  log_p: Array
  path: Array


class Context(NamedTuple):
  """What the task reward reads of an anchor's row (lookahead.paths_from_pass builds it).

  prefix: [T] int32 the anchor's own document up to and including the anchor, -1 elsewhere
          (nothing after the anchor can be read).
  anchor: [] int32 the anchor's index in the row.
  """

  prefix: Array
  anchor: Array


def task_of(lookahead, context: Context | None) -> Callable[[Array], Array]:
  """path [D] int32 (the tokens after the anchor, -1 after them) -> [] the task's return of
  the answer it completes, for a lookahead of reward "task"."""
  if context is None:
    raise ValueError("lookahead.reward='task' reads the anchor's row; this caller gives none")
  return functools.partial(lookahead.task, context.prefix, context.anchor)


def simulations(width: int, horizon: int, asked: int) -> int:
  """Model calls per anchor: `asked`, or K(H-1) (a width-K beam's) when it is 0."""
  return asked or width * (horizon - 1)


def search(first_logprobs, step: Step, state, rng, *, width: int, horizon: int, budget: int,
           policy: str, eos_id: int | None = None, length_penalty: float = 0.0,
           task: Callable[[Array], Array] | None = None, end_id: int | None = None
           ) -> tuple[Array, Array]:
  """The search of the module docstring from one root -> (first [K], score [K] log q).

  first_logprobs: [V] log p at the root; state: the root's `Node.state`;
  step(state [1, ...], token [1], depth [1]) -> (state, log_p [1, V], value [1] or None,
  discount [1]): the child reached by appending `token` at `depth` (tokens before it), its
  next-token log-probs, its value (None: the best next token's log-prob, or 0 with a task)
  and the discount of everything after it. budget: simulations (model calls).
  task: path [H-1] -> [] the task's return of an ended path (`task_of`), the rewards
  instead of log-probs; end_id: the token that ends its answer (`task.end_id`).
  """
  top, first = jax.lax.top_k(first_logprobs, width)
  first = first.astype(jnp.int32)
  if horizon == 1:
    return first, top
  slots = jnp.arange(horizon - 1)

  def recurrent(params, rng, action, node: Node):
    del params, rng
    pick = lambda x: jnp.take_along_axis(x, action[:, None], axis=1)[:, 0]
    token = pick(node.tokens)
    state, log_p, value, discount = step(node.state, token, node.depth)
    path = jnp.where(slots[None] == node.depth[:, None], token[:, None], node.path)
    reward = pick(node.log_p)
    total = node.total + reward
    for end in (eos_id, end_id):
      if end is not None:
        discount = jnp.where(token == end, 0.0, discount)
    if task is None:
      # A path that ends here (at EOS, or by the done head with probability 1 - discount)
      # returns total * (H / d) ** length_penalty: the rescaling is added to the reward in
      # the share the path ends.
      stretch = (horizon / (node.depth + 1).astype(jnp.float32)) ** length_penalty
      reward = reward + (1.0 - discount) * (stretch - 1.0) * total
    else:  # the task's return, in the share the path ends
      reward = (1.0 - discount) * jax.vmap(task)(path)
    log_p, tokens = jax.lax.top_k(log_p, width)
    child = Node(state=state, depth=node.depth + 1, total=total,
                 tokens=tokens.astype(jnp.int32), log_p=log_p, path=path)
    if value is None:
      value = log_p[:, 0] if task is None else jnp.zeros_like(reward)
    return mctx.RecurrentFnOutput(
        reward=reward, discount=discount, prior_logits=log_p, value=value), child

  root_node = Node(state=state, depth=jnp.zeros((1,), jnp.int32), total=jnp.zeros((1,)),
                   tokens=first[None], log_p=top[None],
                   path=jnp.full((1, horizon - 1), -1, jnp.int32))
  root = mctx.RootFnOutput(prior_logits=top[None],
                           value=top[:1] if task is None else jnp.zeros((1,)),
                           embedding=root_node)
  if policy == "gumbel":
    out = mctx.gumbel_muzero_policy((), rng, root, recurrent, budget, max_depth=horizon - 1,
                                    max_num_considered_actions=width, gumbel_scale=0.0)
  else:
    out = mctx.muzero_policy((), rng, root, recurrent, budget, max_depth=horizon - 1,
                             dirichlet_fraction=0.0)
  weights = out.action_weights[0]
  return first, jnp.where(weights > 0, jnp.log(jnp.maximum(weights, 1e-30)), decoding.NEG)


@flax.struct.dataclass
class PathCache:
  """The model's node state: the path's keys and values, per layer [1, H-1, h, dh], slot i
  holding the token at depth i + 1."""

  k: tuple[Array, ...]
  v: tuple[Array, ...]


def model_step(params, prefix, position, *, config: model_lib.Config, slots: int,
               value_scale: float) -> Step:
  """`search`'s step for the model: one model call of the new token against the shared
  prefix (k, v, mask) and the node's path cache; the value (times `value_scale`) and done
  heads where the model has them."""
  heads = config.value_head or config.done_head
  # the prefix in the layouts attention reads, laid out once (not once per simulation)
  shared = model_lib.Cache.empty(config, 1, slots).with_prefix(*prefix)

  def step(state: PathCache, token, depth):
    cache = shared.replace(
        k=state.k, v=state.v, index=depth[0],
        segment_ids=(jnp.arange(slots)[None] < depth[:, None]).astype(jnp.int32))
    pos = jnp.minimum(position + depth, config.max_len - 1)[:, None]
    out = model_lib.forward(params, token[:, None], pos, cache, config=config, heads=heads)
    value = value_scale * out[2]["value"][:, 0] if config.value_head else None
    discount = jnp.ones(token.shape, jnp.float32)
    if config.done_head:
      discount = 1.0 - jax.nn.sigmoid(out[2]["done"][:, 0])
    return (PathCache(k=out[1].k, v=out[1].v), jax.nn.log_softmax(out[0][:, 0]), value,
            discount)

  return step


def search_one(params, prefix, first_logprobs, position, rng, beta, context=None, *,
               config: model_lib.Config, lookahead) -> tuple[Array, Array]:
  """MCTS lookahead of one anchor -> (first [K] the root's children, score [K] log q).

  prefix: (k, v, mask) the shared prefix (per layer [P, h, dh], [P] bool);
  first_logprobs: [V] log p at the anchor; position: [] the first path token's position;
  context: the anchor's row (`Context`), which only reward "task" reads.
  Same signature as lookahead.py's beam and SMC (beta unused).
  """
  del beta
  task = task_of(lookahead, context) if lookahead.reward == "task" else None
  slots = max(lookahead.horizon - 1, 1)
  empty = model_lib.Cache.empty(config, 1, slots)
  step = model_step(params, prefix, position, config=config, slots=slots,
                    value_scale=lookahead.horizon if task is None else 1.0)
  return search(first_logprobs, step, PathCache(k=empty.k, v=empty.v), rng,
                width=lookahead.width, horizon=lookahead.horizon, policy=lookahead.policy,
                eos_id=lookahead.eos_id, length_penalty=lookahead.length_penalty, task=task,
                end_id=None if task is None else lookahead.task.end_id,
                budget=simulations(lookahead.width, lookahead.horizon, lookahead.simulations))
