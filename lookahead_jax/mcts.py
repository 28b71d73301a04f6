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

from collections.abc import Callable
from typing import Any

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
  """

  state: Any
  depth: Array
  total: Array
  tokens: Array
  log_p: Array


def simulations(width: int, horizon: int, asked: int) -> int:
  """Model calls per anchor: `asked`, or K(H-1) (a width-K beam's) when it is 0."""
  return asked or width * (horizon - 1)


def search(first_logprobs, step: Step, state, rng, *, width: int, horizon: int, budget: int,
           policy: str, eos_id: int | None = None, length_penalty: float = 0.0
           ) -> tuple[Array, Array]:
  """The search of the module docstring from one root -> (first [K], score [K] log q).

  first_logprobs: [V] log p at the root; state: the root's `Node.state`;
  step(state [1, ...], token [1], depth [1]) -> (state, log_p [1, V], value [1] or None,
  discount [1]): the child reached by appending `token` at `depth` (tokens before it), its
  next-token log-probs, its value (None: the best next token's log-prob) and the discount
  of everything after it. budget: simulations (model calls).
  """
  top, first = jax.lax.top_k(first_logprobs, width)
  first = first.astype(jnp.int32)
  if horizon == 1:
    return first, top

  def recurrent(params, rng, action, node: Node):
    del params, rng
    pick = lambda x: jnp.take_along_axis(x, action[:, None], axis=1)[:, 0]
    token = pick(node.tokens)
    state, log_p, value, discount = step(node.state, token, node.depth)
    reward = pick(node.log_p)
    total = node.total + reward
    if eos_id is not None:
      discount = jnp.where(token == eos_id, 0.0, discount)
    # A path that ends here (at EOS, or by the done head with probability 1 - discount)
    # returns total * (H / d) ** length_penalty: the rescaling is added to the reward in
    # the share the path ends.
    stretch = (horizon / (node.depth + 1).astype(jnp.float32)) ** length_penalty
    reward = reward + (1.0 - discount) * (stretch - 1.0) * total
    log_p, tokens = jax.lax.top_k(log_p, width)
    child = Node(state=state, depth=node.depth + 1, total=total,
                 tokens=tokens.astype(jnp.int32), log_p=log_p)
    return mctx.RecurrentFnOutput(
        reward=reward, discount=discount, prior_logits=log_p,
        value=log_p[:, 0] if value is None else value), child

  root_node = Node(state=state, depth=jnp.zeros((1,), jnp.int32), total=jnp.zeros((1,)),
                   tokens=first[None], log_p=top[None])
  root = mctx.RootFnOutput(prior_logits=top[None], value=top[:1], embedding=root_node)
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
               horizon: int) -> Step:
  """`search`'s step for the model: one model call of the new token against the shared
  prefix (k, v, mask) and the node's path cache; the value and done heads where the
  model has them."""
  heads = config.value_head or config.done_head
  # the prefix in the layouts attention reads, laid out once (not once per simulation)
  shared = model_lib.Cache.empty(config, 1, slots).with_prefix(*prefix)

  def step(state: PathCache, token, depth):
    cache = shared.replace(
        k=state.k, v=state.v, index=depth[0],
        segment_ids=(jnp.arange(slots)[None] < depth[:, None]).astype(jnp.int32))
    pos = jnp.minimum(position + depth, config.max_len - 1)[:, None]
    out = model_lib.forward(params, token[:, None], pos, cache, config=config, heads=heads)
    value = horizon * out[2]["value"][:, 0] if config.value_head else None
    discount = jnp.ones(token.shape, jnp.float32)
    if config.done_head:
      discount = 1.0 - jax.nn.sigmoid(out[2]["done"][:, 0])
    return (PathCache(k=out[1].k, v=out[1].v), jax.nn.log_softmax(out[0][:, 0]), value,
            discount)

  return step


def search_one(params, prefix, first_logprobs, position, rng, beta, *,
               config: model_lib.Config, lookahead) -> tuple[Array, Array]:
  """MCTS lookahead of one anchor -> (first [K] the root's children, score [K] log q).

  prefix: (k, v, mask) the shared prefix (per layer [P, h, dh], [P] bool);
  first_logprobs: [V] log p at the anchor; position: [] the first path token's position.
  Same signature as lookahead.py's beam and SMC (beta unused).
  """
  del beta
  slots = max(lookahead.horizon - 1, 1)
  empty = model_lib.Cache.empty(config, 1, slots)
  step = model_step(params, prefix, position, config=config, slots=slots,
                    horizon=lookahead.horizon)
  return search(first_logprobs, step, PathCache(k=empty.k, v=empty.v), rng,
                width=lookahead.width, horizon=lookahead.horizon, policy=lookahead.policy,
                eos_id=lookahead.eos_id, length_penalty=lookahead.length_penalty,
                budget=simulations(lookahead.width, lookahead.horizon, lookahead.simulations))
