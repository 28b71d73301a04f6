"""All-position lookahead: the amplified next-token distribution q_t for every anchor t.

One teacher-forced pass gives the logits and every layer's keys/values of a batch. The
lookahead for ONE anchor t continues the sequence from position t with B beams (or N
SMC particles, or an MCTS tree of K children a node: mcts.py) for H tokens, reading the
teacher-forced keys/values of positions <= t as a shared prefix and writing only a small
per-path cache of H-1 tokens. That function is vmapped over anchors with the prefix
unbatched, so XLA computes one attention of all anchors' path queries against the one
prefix; anchors run in chunks of `chunk` to bound memory (docs/design.md section 4). Cost
per sequence: about 1 + B(H-1) forward passes.

Anchors near the end of the context: the path tokens of anchor t sit at positions
pos_t+1 .. pos_t+H-1, which must exist in the model (< max_len). Anchors past that,
and padding anchors, are masked (`Paths.valid` False): their q is p itself, so they add
no gain, no stunting signal and no KL. Sequences shorter than max_len - H + 1 (e.g.
max_len = T + H) have every anchor valid.

Every lookahead has its control (`control_paths`): the same kind and width at horizon 1,
read off the logits the pass already has (top-B of p for beam and MCTS, N one-step
particles for SMC, drawn with the same keys as the lookahead's first tokens). q_1 is p
sharpened by tau on its top tokens: what any q does without looking ahead. The
lookahead-specific gain compares the mixture of q_H with that of q_1 (`gain`).

Then, per anchor (docs/design.md section 2):
  q(w) = sum_b softmax_b(S_b / tau) [f_b = w]        scheme "sum"
  q(w) ∝ exp(max_{b: f_b = w} S_b / tau)              scheme "max"
  linear mixture     p~ = (1 - lam) p + lam q
  loglinear mixture  p~ ∝ p^(1 - lam) (q + eps)^lam
all in log space; a mixture is finite wherever p is.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from lookahead_jax import config as config_lib
from lookahead_jax import decoding, mcts
from lookahead_jax import model as model_lib

Array = jax.Array
KINDS = ("beam", "smc", "mcts")
TOP_K_CONTROL = ("beam", "mcts")  # kinds whose horizon-1 control is top-B of p
REWARDS = ("log_prob", "task")  # what beam and MCTS paths earn (`Lookahead.reward`)
SCHEMES = ("sum", "max")
MIXTURES = ("linear", "loglinear")
_DEFAULT = config_lib.defaults("lookahead")  # the schema declares the defaults


@dataclasses.dataclass(frozen=True)
class Mixture:
  """How a lookahead's q and the mixture q~ of p and q are formed (hashable): one for the
  whole run, read by stunting, the monitor, the evaluation's amplified decoding and
  generation alike.

  temperature: tau of q (`amplify`).
  scheme:      "sum" or "max" over the paths that start with a token (`amplify`).
  mixture:     "linear" or "loglinear" (`mix`).
  lam:         the weight of q in the mixture.
  beta:        SMC tempering (a lookahead of kind "smc").
  """

  temperature: float = _DEFAULT.temperature
  scheme: str = _DEFAULT.scheme
  mixture: str = _DEFAULT.mixture
  lam: float = _DEFAULT.lam
  beta: float = _DEFAULT.beta


@dataclasses.dataclass(frozen=True)
class Lookahead:
  """Which lookahead builds q (hashable: a static argument of jitted functions).

  kind:           "beam" (width = beams B), "smc" (width = particles N) or "mcts" (width =
                  children K of every node, mcts.py).
  horizon:        H tokens looked ahead, the first (the predicted token) included; MCTS:
                  its tree is H-1 tokens deep (mcts.py).
  length_penalty: beam and MCTS: a path that ends at EOS after L < H tokens scores
                  S * (H / L)**alpha (beam ranks by S / L**alpha inside the search, as in
                  decoding; MCTS returns it as the path's value, mcts.py).
  chunk:          anchors per vmapped chunk; 0 = all anchors of a row at once.
  eos_id:         end-of-sequence token, or None.
  simulations:    MCTS: model calls per anchor; 0: K(H-1), a width-K beam's.
  policy:         MCTS: q is "gumbel" (the root's improved policy) or "visits" (mcts.py).
  reward:         what a path earns: "log_prob", its tokens' log-probabilities, or "task",
                  the testbed's return `task` of the answer it completes (MCTS: its
                  rewards, mcts.py; beam: each path scored by it, the value head's targets,
                  heads.py). SMC weighs by log-probabilities only.
  task:           with reward "task": the testbed's return (data/local.py, Testbed.task_return:
                  (prefix [T], anchor [], path [D]) -> [] float32, and its `end_id`).
  """

  kind: str = _DEFAULT.kind
  width: int = _DEFAULT.width
  horizon: int = _DEFAULT.horizon
  length_penalty: float = _DEFAULT.length_penalty
  chunk: int = _DEFAULT.chunk
  eos_id: int | None = None
  simulations: int = _DEFAULT.simulations
  policy: str = _DEFAULT.policy
  reward: str = _DEFAULT.reward
  task: Callable[..., Any] | None = None

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"lookahead.kind={self.kind!r} is not one of {KINDS}.")
    if self.policy not in mcts.POLICIES:
      raise ValueError(f"lookahead.policy={self.policy!r} is not one of {mcts.POLICIES}.")
    if self.reward not in REWARDS:
      raise ValueError(f"lookahead.reward={self.reward!r} is not one of {REWARDS}.")
    if self.reward == "task" and (self.task is None or self.kind == "smc"):
      raise ValueError(f"lookahead.reward='task' needs the testbed's return and a beam or "
                       f"MCTS lookahead (kind={self.kind!r}, task={self.task!r}).")
    if self.simulations < 0:
      raise ValueError(f"lookahead.simulations={self.simulations} must be >= 0 (0: K(H-1)).")
    if self.width < 1 or self.horizon < 1:
      raise ValueError(
          f"lookahead.width={self.width} and lookahead.horizon={self.horizon} must be >= 1.")

  def describe(self, beta: float | None = None) -> str:
    """e.g. "beam B=2 H=8", "smc N=8 H=8 beta=4" (beta: SMC tempering, when given) or
    "mcts K=2 H=8 S=14 gumbel"; " task" after a lookahead rewarded by the task's return."""
    task = " task" if self.reward == "task" else ""
    if self.kind == "beam":
      return f"beam B={self.width} H={self.horizon}{task}"
    if self.kind == "mcts":
      sims = mcts.simulations(self.width, self.horizon, self.simulations)
      return f"mcts K={self.width} H={self.horizon} S={sims} {self.policy}{task}"
    return f"smc N={self.width} H={self.horizon}" + (f" beta={beta:g}" if beta else "")

  def as_kind(self, kind: str, **changes) -> Lookahead:
    """This lookahead as another kind (and other `changes`): the task reward stays with
    MCTS, the search it is chosen for; a beam or SMC made from it (the monitor's dev
    lookahead, the evaluation grid) scores by log-probabilities, as in every other run."""
    reward = self.reward if kind == "mcts" else "log_prob"
    return dataclasses.replace(self, kind=kind, reward=reward,
                               task=self.task if reward == "task" else None, **changes)

  def check(self, config: model_lib.Config):
    """One-line errors for settings the model cannot run."""
    if self.kind in TOP_K_CONTROL and self.width > config.vocab_size:
      paths = "beams" if self.kind == "beam" else "children"
      raise ValueError(f"lookahead.width={self.width} {paths} exceed the vocabulary "
                       f"({config.vocab_size} tokens); use at most {config.vocab_size}.")
    if self.horizon > config.max_len:
      raise ValueError(f"lookahead.horizon={self.horizon} exceeds the model's max_len="
                       f"{config.max_len}; use a shorter horizon.")


@flax.struct.dataclass
class Paths:
  """The K = width lookahead paths of every anchor of a batch.

  first: [b, T, K] int32 first token f of each path.
  score: [b, T, K] float32 beam: total log-probability S; smc: normalised log-weight;
         decoding.NEG for an empty path.
  valid: [b, T] bool anchors that have a lookahead (see the module docstring).
  """

  first: Array
  score: Array
  valid: Array


# ----------------------------------------------------------------------------- one anchor


def _beam_one(params, prefix, first_logprobs, position, rng, beta, context=None, *, config,
              lookahead):
  """Beam lookahead of one anchor -> (first [B], score [B]); with reward "task" each
  path is scored by the task's return of the answer it completes (`context`: mcts.Context)."""
  del rng, beta
  beams = decoding.beam_search_from(
      params, prefix, first_logprobs, position, lookahead.length_penalty, config=config,
      beam_size=lookahead.width, num_steps=lookahead.horizon, eos_id=lookahead.eos_id,
      block=1, prefix_matvec=False)
  if lookahead.reward == "task":
    score = jax.vmap(mcts.task_of(lookahead, context))(beams.sequences)
    return beams.sequences[:, 0], jnp.where(beams.valid, score, decoding.NEG)
  stretch = (lookahead.horizon / beams.lengths.clip(1)) ** lookahead.length_penalty
  return beams.sequences[:, 0], jnp.where(beams.valid, beams.log_probs * stretch, decoding.NEG)


def _systematic_resample(rng, weights):
  """Ancestor indices [N] for normalised weights [N], one uniform draw for all."""
  n = weights.shape[0]
  points = (jax.random.uniform(rng) + jnp.arange(n)) / n
  return jnp.minimum(jnp.searchsorted(jnp.cumsum(weights), points), n - 1).astype(jnp.int32)


def _smc_one(params, prefix, first_logprobs, position, rng, beta, context=None, *, config,
             lookahead):
  """SMC lookahead of one anchor -> (first [N], normalised log-weight [N]) (context unused).

  Particles sample H tokens from the model; the target is the path distribution
  tempered by beta, so each token multiplies a particle's weight by p(token)^(beta-1).
  Before each further token, particles are resampled (systematic) when the effective
  sample size falls below N/2. beta = 1 gives q = an unbiased estimate of p.
  """
  del context
  n, h = lookahead.width, lookahead.horizon
  keys = jax.random.split(rng, 2 * h)
  token = jax.random.categorical(keys[0], first_logprobs, shape=(n,)).astype(jnp.int32)
  log_w = (beta - 1.0) * first_logprobs[token]
  cache = model_lib.Cache.empty(config, n, h - 1).with_prefix(*prefix)

  def body(i, carry):
    token, first, log_w, cache = carry
    weights = jax.nn.softmax(log_w)
    resample = 1.0 / jnp.sum(weights**2) < n / 2
    parents = jnp.where(resample, _systematic_resample(keys[2 * i + 1], weights), jnp.arange(n))
    token, first = token[parents], first[parents]
    log_w = jnp.where(resample, 0.0, log_w)
    cache = cache.replace(k=tuple(k[parents] for k in cache.k),
                          v=tuple(v[parents] for v in cache.v))
    pos = jnp.full((n, 1), jnp.minimum(position + i, config.max_len - 1), jnp.int32)
    logits, cache = model_lib.forward(params, token[:, None], pos, cache, config=config)
    logprobs = jax.nn.log_softmax(logits[:, 0])
    token = jax.random.categorical(keys[2 * i + 2], logprobs).astype(jnp.int32)
    log_w = log_w + (beta - 1.0) * jnp.take_along_axis(logprobs, token[:, None], axis=1)[:, 0]
    return token, first, log_w, cache

  first = token
  if h > 1:  # a one-token lookahead needs no forward pass
    _, first, log_w, _ = jax.lax.fori_loop(0, h - 1, body, (token, token, log_w, cache))
  return first, jax.nn.log_softmax(log_w)


def one_anchor(lookahead: Lookahead, config: model_lib.Config):
  """The lookahead of one anchor, (params, prefix, first_logprobs, position, rng, beta,
  context) -> (first [K], score [K]), of the lookahead's kind; context (mcts.Context, or
  None) is what the task reward reads of the row."""
  one = {"beam": _beam_one, "smc": _smc_one, "mcts": mcts.search_one}[lookahead.kind]
  return functools.partial(one, config=config, lookahead=lookahead)


# ----------------------------------------------------------------------------- all anchors


def paths_from_pass(params, logits, cache: model_lib.Cache, positions, segment_ids=None,
                    rng=None, beta=1.0, needed=None, tokens=None, *, config: model_lib.Config,
                    lookahead: Lookahead) -> Paths:
  """Lookahead paths for every anchor, reusing a teacher-forced pass.

  logits:      [b, T, V] of the pass; cache: the `Cache` it returned (keys/values [b, T, h, dh]).
  positions:   [b, T] int32; segment_ids: [b, T] int32 (None: one segment per row).
  rng:         SMC and MCTS: a PRNG key (split per row and anchor); beta: SMC tempering.
  needed:      [b, T] bool or None (all): the anchors whose paths the caller reads. Only
               those run: each row's needed anchors are gathered to the front and run in
               chunks of `lookahead.chunk` until the row with the most is done, so a batch
               scored on a few tokens per row (answers only) costs what those tokens cost.
               The other anchors come back without a lookahead (valid False). A needed
               anchor's paths are those of the full computation.
  tokens:      [b, T] int32 the pass's tokens, which the task reward reads (each anchor
               its own document up to itself, mcts.Context); only reward "task" needs them.
  """
  b, t, _ = logits.shape
  if tokens is None:
    if lookahead.reward == "task":
      raise ValueError("lookahead.reward='task' reads the row: pass paths_from_pass tokens")
    tokens = jnp.full((b, t), -1, jnp.int32)
  if segment_ids is None:
    segment_ids = jnp.ones((b, t), jnp.int32)
  if rng is None:
    rng = jax.random.key(0)
  keys = jax.random.split(rng, (b, t))
  one = one_anchor(lookahead, config)
  chunk = min(lookahead.chunk or t, t)
  slots = jnp.arange(t)

  def run(logits, k, v, positions, segments, keys, row, anchors):
    """The paths of one row's anchors [n] -> (first [n, K], score [n, K])."""
    def anchor(t_):
      mask = (slots <= t_) & (segments == segments[t_])  # [T]: the anchor's own prefix
      return one(params, (k, v, mask), jax.nn.log_softmax(logits[t_]), positions[t_] + 1,
                 keys[t_], beta, mcts.Context(jnp.where(mask, row, -1), t_))

    return jax.lax.map(anchor, anchors, batch_size=min(chunk, anchors.shape[0]))

  rows = (logits, cache.k, cache.v, positions, segment_ids, keys, tokens)
  if needed is None:
    first, score = jax.vmap(run)(*rows, jnp.broadcast_to(slots, (b, t)))
  else:
    # Each row's needed anchors first (stable), padded to whole chunks by repeating the
    # last slot; as many rounds of one chunk per row as the row with the most needs. The
    # round count is one number for the whole batch, so every device runs as many.
    order = jnp.argsort(~needed, axis=1, stable=True).astype(jnp.int32)
    order = jnp.pad(order, ((0, 0), (0, -t % chunk)), mode="edge")
    rounds = (jnp.max(jnp.sum(needed, axis=1)) + chunk - 1) // chunk
    put = jax.vmap(lambda out, idx, x: out.at[idx].set(x))

    def body(i, carry):
      idx = jax.lax.dynamic_slice_in_dim(order, i * chunk, chunk, axis=1)  # [b, chunk]
      f, s = jax.vmap(run)(*rows, idx)
      return put(carry[0], idx, f), put(carry[1], idx, s)

    init = (jnp.zeros((b, t, lookahead.width), jnp.int32),
            jnp.full((b, t, lookahead.width), decoding.NEG, jnp.float32))
    first, score = jax.lax.fori_loop(0, rounds, body, init)
  valid = (segment_ids > 0) & (positions + lookahead.horizon <= config.max_len)
  if needed is not None:
    valid &= needed
  return Paths(first=first, score=score, valid=valid)


def control_paths(logits, valid, rng=None, beta=1.0, *, lookahead: Lookahead) -> Paths:
  """The horizon-1 control of `lookahead` for every anchor, from the pass's logits.

  logits: [b, T, V]; valid: [b, T] the lookahead's valid anchors (the control covers the
  same ones). Beam and MCTS: the top-B tokens of p scored log p. SMC: N tokens drawn from
  p with the keys `paths_from_pass` gives the lookahead's first tokens (same rng: the
  same draws), weighted p^(beta - 1). Costs a top-k (or N draws) per anchor, no forward pass.
  """
  log_p = jax.nn.log_softmax(logits)
  if lookahead.kind in TOP_K_CONTROL:  # (a beam over several tokens may be wider than V)
    score, first = jax.lax.top_k(log_p, min(lookahead.width, log_p.shape[-1]))
    return Paths(first=first.astype(jnp.int32), score=score, valid=valid)
  b, t, _ = logits.shape
  keys = jax.random.split(jax.random.key(0) if rng is None else rng, (b, t))

  def one(key, log_p_t):  # the first draw of _smc_one
    draw_key = jax.random.split(key, 2 * lookahead.horizon)[0]
    token = jax.random.categorical(draw_key, log_p_t, shape=(lookahead.width,))
    return token.astype(jnp.int32), jax.nn.log_softmax((beta - 1.0) * log_p_t[token])

  first, score = jax.vmap(jax.vmap(one))(keys, log_p)
  return Paths(first=first, score=score, valid=valid)


@functools.partial(jax.jit, static_argnames=("config", "lookahead"))
def teacher_forced_paths(params, tokens, positions, segment_ids=None, rng=None, beta=1.0, *,
          config: model_lib.Config, lookahead: Lookahead) -> tuple[Array, Paths]:
  """The teacher-forced pass, the lookahead of every anchor and its horizon-1 control.

  tokens, positions, segment_ids: [b, T]. Returns (logits [b, T, V], Paths, control Paths).
  """
  logits, cache = model_lib.forward(params, tokens, positions, config=config,
                                    segment_ids=segment_ids)
  found = paths_from_pass(params, logits, cache, positions, segment_ids, rng, beta,
                          tokens=tokens, config=config, lookahead=lookahead)
  return logits, found, control_paths(logits, found.valid, rng, beta, lookahead=lookahead)


# ----------------------------------------------------------------------------- q, mixtures


@flax.struct.dataclass
class Amplified:
  """q of every anchor, held sparsely on the distinct first tokens of its K paths.

  tokens: [b, T, K] int32 the paths' first tokens.
  log_q:  [b, T, K] float32 log q(tokens); -inf on a token repeated from an earlier path
          (each token's whole mass sits on its first occurrence), so sums over K count
          every token once.
  valid:  [b, T] bool; anchors without a lookahead have q = p (see `Paths`).

  Everything evaluation and stunting need (q at the target, mixtures at the target,
  expectations under q) costs O(K) per anchor, never O(V).
  """

  tokens: Array
  log_q: Array
  valid: Array

  def at(self, targets) -> Array:
    """log q(targets) [b, T] (-inf off the paths' first tokens; not masked by `valid`)."""
    hit = self.tokens == targets[..., None]
    return jax.nn.logsumexp(jnp.where(hit, self.log_q, -jnp.inf), axis=-1)

  def expect(self, values) -> Array:
    """E_q[values] [b, T] for values [b, T, K] given at `tokens`."""
    return jnp.sum(jnp.where(self.log_q > -jnp.inf, jnp.exp(self.log_q) * values, 0.0), axis=-1)

  def dense(self, log_p) -> Array:
    """log q [b, T, V]; log p on anchors without a lookahead."""
    v = log_p.shape[-1]
    scatter = lambda f, q: jnp.zeros(v).at[f].add(q)
    q = jax.vmap(jax.vmap(scatter))(self.tokens, jnp.exp(self.log_q))
    return jnp.where(self.valid[..., None], jnp.log(q), log_p)


def amplify(paths: Paths, temperature=1.0, scheme: str = "sum") -> Amplified:
  """q from the paths with temperature tau > 0 (inf: uniform over the paths) and scheme
  "sum" or "max"."""
  return amplify_inverse(paths, 1.0 / temperature, scheme)


def amplify_inverse(paths: Paths, inverse_temperature, scheme: str = "sum") -> Amplified:
  """q from the paths at inverse temperature 1/tau >= 0, differentiable in it (fit.py).

  At 0 (tau -> inf) every non-empty path weighs the same: q is uniform over the paths
  ("sum") or over their distinct first tokens ("max"); empty paths (score decoding.NEG)
  never get mass.
  """
  if scheme not in SCHEMES:
    raise ValueError(f"scheme={scheme!r} is not one of {SCHEMES}.")
  k = paths.first.shape[-1]
  real = paths.score > decoding.NEG / 2
  real |= ~jnp.any(real, axis=-1, keepdims=True)  # an anchor without paths keeps its scores
  s = jnp.where(real, paths.score * inverse_temperature, -jnp.inf)  # [b, T, K]
  same = paths.first[..., :, None] == paths.first[..., None, :]  # [b, T, K, K]
  earlier = same & jnp.tri(k, k, -1, dtype=bool) & real[..., None, :]
  first = real & ~jnp.any(earlier, axis=-1)  # no earlier path (with a score) has it
  peers = jnp.where(same, s[..., None, :], -jnp.inf)  # scores of the paths sharing a token
  if scheme == "sum":
    log_mass = jax.nn.logsumexp(peers, axis=-1) - jax.nn.logsumexp(s, axis=-1, keepdims=True)
  else:
    top = peers.max(axis=-1)
    log_mass = top - jax.nn.logsumexp(jnp.where(first, top, -jnp.inf), axis=-1, keepdims=True)
  return Amplified(tokens=paths.first, log_q=jnp.where(first, log_mass, -jnp.inf),
                   valid=paths.valid)


def mix(log_p, log_q, lam, kind: str = "linear", eps: float = 1e-6) -> Array:
  """log p~ [..., V]: the mixture of naive p and amplified q with weight lam on q.

  linear:    lam in [0, 1); loglinear: lam in [0, 1], eps keeps q's zeros finite.
  """
  if kind == "linear":
    return jnp.logaddexp(jnp.log1p(-lam) + log_p, jnp.log(lam) + log_q)
  if kind == "loglinear":
    return jax.nn.log_softmax((1.0 - lam) * log_p + lam * jnp.logaddexp(log_q, jnp.log(eps)),
                              axis=-1)
  raise ValueError(f"mixture={kind!r} is not one of {MIXTURES}.")


def mix_at(amp: Amplified, log_p, targets, lam, kind: str = "linear", eps: float = 1e-6):
  """log p~(targets) [b, T] of `mix(log_p, amp.dense(log_p), lam, kind, eps)`, in O(V + K).

  The loglinear normaliser splits into the part every token shares and the paths' tokens:
  Z = eps^lam sum_w p(w)^(1-lam) + sum_k p_k^(1-lam) ((q_k + eps)^lam - eps^lam).
  """
  shared = None
  if kind == "loglinear":
    shared = jax.nn.logsumexp((1.0 - lam) * log_p, axis=-1)
  return mix_target(amp, token_log_prob(log_p, targets),
                    jnp.take_along_axis(log_p, amp.tokens, axis=-1), shared, targets, lam,
                    kind, eps)


def mix_target(amp: Amplified, log_p_y, log_p_k, shared, targets, lam,
               kind: str = "linear", eps: float = 1e-6):
  """log p~(targets) [b, T] from what the mixture needs of p at the target and the paths.

  log_p_y: [b, T] log p(targets); log_p_k: [b, T, K] log p at amp.tokens; shared: [b, T]
  log sum_w p(w)^(1-lam) (loglinear only; None for linear). `mix_at` computes these from
  the dense log p; fit.py from its cached tokens.
  """
  log_q_y = amp.at(targets)
  if kind == "linear":
    out = jnp.logaddexp(jnp.log1p(-lam) + log_p_y, jnp.log(lam) + log_q_y)
  elif kind == "loglinear":
    log_eps = jnp.log(eps)
    # Atoms without mass (a repeated token) add nothing; kept out of the log of the
    # difference (whose gradient would be NaN there) by a double where.
    atom = amp.log_q > -jnp.inf
    lifted = lam * jnp.logaddexp(jnp.where(atom, amp.log_q, 0.0), log_eps)  # log (q_k+eps)^lam
    extra = ((1.0 - lam) * log_p_k + lifted
             + jnp.log(-jnp.expm1(lam * log_eps - lifted)))  # log of the difference
    extra = jnp.where(atom, extra, -jnp.inf)
    log_z = jnp.logaddexp(lam * log_eps + shared, jax.nn.logsumexp(extra, axis=-1))
    out = (1.0 - lam) * log_p_y + lam * jnp.logaddexp(log_q_y, log_eps) - log_z
  else:
    raise ValueError(f"mixture={kind!r} is not one of {MIXTURES}.")
  return jnp.where(amp.valid, out, log_p_y)


def token_log_prob(log_probs, targets):
  """log_probs [b, T, V], targets [b, T] -> [b, T]."""
  return jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]


def gain(log_ref_target, log_mix_target, weights):
  """Mean gain and "helps" fraction of a mixture over a reference, on the weighted tokens.

  log_ref_target: [b, T] log p(x_{t+1}) (the lookahead gain) or the control mixture's
  log p~_1(x_{t+1}) (the lookahead-specific gain G); log_mix_target: [b, T] log p~(x_{t+1});
  weights [b, T]. Returns (mean log p~ - log ref, fraction of tokens where p~ > ref).
  """
  total = jnp.maximum(weights.sum(), 1e-9)
  diff = log_mix_target - log_ref_target
  return (diff * weights).sum() / total, ((diff > 0) * weights).sum() / total


# ----------------------------------------------------------------------------- generation


@functools.partial(jax.jit, static_argnames=("config", "lookahead", "max_new_tokens", "scheme",
                                             "mixture", "pad_id", "greedy"))
def sample_amplified(params, prompts, rng, prompt_lengths=None, temperature=1.0, lam=0.5,
                     beta=1.0, *, config: model_lib.Config, lookahead: Lookahead,
                     max_new_tokens: int, scheme: str = "sum", mixture: str = "linear",
                     pad_id: int = 0, greedy: bool = False) -> Array:
  """Samples each next token from the mixture p~ of the naive and the amplified model.

  prompts [b, P] int32 (left-padded, see decoding.prefill) -> tokens [b, max_new_tokens].
  At every step the lookahead runs from the generated prefix (its decode cache is the
  shared prefix) and gives q; the token is drawn from p~ = mix(p, q, lam). After a row's
  lookahead.eos_id, pad_id. temperature: tau of q. The task reward reads the prompt and
  the tokens drawn so far. greedy: p~'s most probable token instead of a draw (with lam 1,
  the lookahead's own choice: a planner's move).
  """
  b = prompts.shape[0]
  # One slot more than the tokens fed back: the loop also feeds the last drawn token, so
  # the lookahead is traced (and compiled) once, not once more after the loop.
  logits, cache, positions = decoding.prefill(params, prompts, prompt_lengths, config=config,
                                              slots=max_new_tokens)
  one = one_anchor(lookahead, config)
  eos = lookahead.eos_id

  def pick(i, logits, cache, out, done):
    # The draw uses decoding.generate's key of step i, so lam = 0 is plain sampling.
    sample_key = jax.random.fold_in(rng, i)
    lookahead_key = jax.random.fold_in(sample_key, 1)
    log_p = jax.nn.log_softmax(logits)  # [b, V]
    position = positions + i  # of the token being drawn
    prefix = (cache.k, cache.v, cache.segment_ids > 0)
    row = jnp.concatenate([prompts, out], axis=1)  # the anchor: the last token so far
    anchor = jnp.full((b,), prompts.shape[1] - 1 + i)
    context = mcts.Context(jnp.where(jnp.arange(row.shape[1]) <= anchor[:, None], row, -1),
                           anchor)
    first, score = jax.vmap(one, in_axes=(None, 0, 0, 0, 0, None, 0))(
        params, prefix, log_p, position, jax.random.split(lookahead_key, b), beta, context)
    found = Paths(first=first[:, None], score=score[:, None],
                  valid=(position - 1 + lookahead.horizon <= config.max_len)[:, None])
    log_q = amplify(found, temperature, scheme).dense(log_p[:, None])[:, 0]
    log_mix = mix(log_p, log_q, lam, mixture)
    token = (jnp.argmax(log_mix, axis=-1) if greedy
             else jax.random.categorical(sample_key, log_mix))
    token = jnp.where(done, pad_id, token.astype(jnp.int32))
    done = done | (token == eos) if eos is not None else done
    return token, out.at[:, i].set(token), done

  def body(i, state):
    logits, cache, out, done = state
    token, out, done = pick(i, logits, cache, out, done)
    logits, cache = model_lib.forward(params, token[:, None], (positions + i)[:, None], cache,
                                      config=config)
    return logits[:, 0], cache, out, done

  state = (logits, cache, jnp.full((b, max_new_tokens), pad_id, jnp.int32), jnp.zeros((b,), bool))
  return jax.lax.fori_loop(0, max_new_tokens, body, state)[2]
