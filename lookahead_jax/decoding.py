"""Greedy, temperature/top-k/top-p sampling, and beam search; each a whole jitted loop.

All functions are pure functions of the parameters, compile once per shape (sampling
settings are traced values, not static), and can be `jax.vmap`ped.

Beam search keeps the B beams of a row on the batch axis of a small per-beam cache and
the prompt in the cache's shared prefix (`model.Cache.with_prefix`): reordering beams
gathers only that small cache. `beam_search_from` is the one-row core; the lookahead
(lookahead.py) vmaps it over anchors with a teacher-forced pass as the prefix.

Beam semantics follow Hugging Face `generate(num_beams=B)` (early_stopping=False): each
step takes the best 2B of the B*V continuations; the best B that do not end in EOS stay
alive; those ending in EOS among the best B join the finished set, scored
log p / length**length_penalty; at the last step the best B continuations all finish;
a row stops when no alive beam can beat its worst finished one.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from lookahead_jax import model as model_lib

Array = jax.Array
NEG = -1.0e9  # score of an impossible beam (finite, so sums stay ordered and NaN-free)


# ----------------------------------------------------------------------------- prompts


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """(prompts int32 [n, P] left-padded to the longest row, prompt lengths int32 [n]): the
  layout `prefill` reads."""
  width = max(map(len, rows))
  tokens = np.full((len(rows), width), pad_id, np.int32)
  for row, ids in enumerate(rows):
    tokens[row, width - len(ids):] = ids
  return tokens, np.array([len(ids) for ids in rows], np.int32)


def prefill(params, prompts: Array, prompt_lengths: Array | None, *, config, slots: int = 0):
  """Runs left-padded prompts through the model.

  prompts:        [b, P] int32; row r's real tokens are its last `prompt_lengths[r]`.
  prompt_lengths: [b] int32, or None when every row is full.
  slots:          0: the returned cache holds exactly the P prompt slots (beam search
                  reads it as a prefix); > 0: a cache of P + slots slots to decode into.
  Returns (logits [b, V] of the last prompt token, cache, next positions [b]).
  """
  b, p = prompts.shape
  lengths = jnp.full((b,), p, jnp.int32) if prompt_lengths is None else prompt_lengths
  pad = p - lengths[:, None]
  positions = jnp.maximum(jnp.arange(p)[None] - pad, 0)
  segments = (jnp.arange(p)[None] >= pad).astype(jnp.int32)
  cache = model_lib.Cache.empty(config, b, p + slots) if slots else None
  logits, cache = model_lib.forward(params, prompts, positions, cache, config=config,
                                    segment_ids=segments)
  return logits[:, -1], cache, lengths


# ----------------------------------------------------------------------------- sampling


def filter_logits(logits: Array, top_k, top_p) -> Array:
  """Sets to -inf every token outside the top-k, then outside the top-p nucleus.

  logits: [..., V]; top_k: int (0 = all); top_p: float in (0, 1] (1 = all). The nucleus is
  the smallest set of most probable tokens (after top-k) whose probability reaches top_p.
  """
  v = logits.shape[-1]
  ranked = jnp.sort(logits, axis=-1)[..., ::-1]
  k = jnp.where(top_k > 0, jnp.minimum(top_k, v), v)
  ranked = jnp.where(jnp.arange(v) < k, ranked, -jnp.inf)
  probs = jax.nn.softmax(ranked, axis=-1)
  in_nucleus = jnp.cumsum(probs, axis=-1) - probs < top_p  # mass strictly before < top_p
  threshold = jnp.min(jnp.where(in_nucleus, ranked, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits >= threshold, logits, -jnp.inf)


def sample_logits(logits: Array, rng: Array, temperature, top_k, top_p) -> Array:
  """Next tokens [...] from logits [..., V]: argmax when temperature == 0."""
  safe_t = jnp.where(temperature > 0, temperature, 1.0)
  sampled = jax.random.categorical(rng, filter_logits(logits / safe_t, top_k, top_p))
  return jnp.where(temperature > 0, sampled, jnp.argmax(logits, axis=-1)).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens", "eos_id", "pad_id"))
def generate(params, prompts, rng, prompt_lengths=None, temperature=0.0, top_k=0, top_p=1.0, *,
             config, max_new_tokens: int, eos_id: int | None = None, pad_id: int = 0) -> Array:
  """Greedy (temperature 0) or sampled continuations of left-padded prompts.

  prompts [b, P] int32 -> tokens [b, max_new_tokens] int32; after a row's EOS, pad_id.
  The loop stops early once every row has ended.
  """
  b = prompts.shape[0]
  logits, cache, positions = prefill(params, prompts, prompt_lengths, config=config,
                                     slots=max_new_tokens - 1)
  out = jnp.full((b, max_new_tokens), pad_id, jnp.int32)
  done = jnp.zeros((b,), bool)

  def pick(i, logits, out, done):
    token = sample_logits(logits, jax.random.fold_in(rng, i), temperature, top_k, top_p)
    token = jnp.where(done, pad_id, token)
    done = done | (token == eos_id) if eos_id is not None else done
    return token, out.at[:, i].set(token), done

  def cond(state):
    i, _, _, _, done = state
    return (i < max_new_tokens - 1) & ~jnp.all(done)

  def body(state):
    i, logits, cache, out, done = state
    token, out, done = pick(i, logits, out, done)
    logits, cache = model_lib.forward(params, token[:, None], (positions + i)[:, None], cache,
                                      config=config)
    return i + 1, logits[:, 0], cache, out, done

  i, logits, _, out, done = jax.lax.while_loop(cond, body, (0, logits, cache, out, done))
  _, out, _ = pick(i, logits, out, done)  # the last token needs no forward pass
  return out


# ----------------------------------------------------------------------------- beam search


@flax.struct.dataclass
class Beams:
  """The B best sequences of a beam search, best first.

  sequences: [..., B, N] int32, pad_id after EOS
  scores:    [..., B] float32 ranking score log_probs / lengths**length_penalty
  log_probs: [..., B] float32 total log-probability of the generated tokens
  lengths:   [..., B] int32 generated tokens, EOS included
  valid:     [..., B] bool; False for slots left empty (fewer than B paths exist)
  """

  sequences: Array
  scores: Array
  log_probs: Array
  lengths: Array
  valid: Array


@flax.struct.dataclass
class _BeamState:
  alive_seq: Array    # [B, N]
  alive_logp: Array   # [B]
  fin: Beams          # finished set, [B, ...]
  improvable: Array   # [] bool: can an alive beam still beat the worst finished one?


def _beam_step(state: _BeamState, logprobs, i, length_penalty, *, beam_size, eos_id, last):
  """Extends the alive beams by every token (logprobs [B, V]); returns (state, parents [B])."""
  b, v = logprobs.shape
  k = 2 * beam_size
  top, idx = jax.lax.top_k((state.alive_logp[:, None] + logprobs).reshape(-1), k)
  parent, token = idx // v, (idx % v).astype(jnp.int32)
  seqs = state.alive_seq[parent].at[:, i].set(token)  # [2B, N]
  stops = jnp.ones((k,), bool) if last else (
      token == eos_id if eos_id is not None else jnp.zeros((k,), bool))

  alive_scores = top + stops * NEG
  keep = jax.lax.top_k(alive_scores, beam_size)[1]

  length = jnp.asarray(i + 1, jnp.float32)
  joins = stops & (jnp.arange(k) < beam_size) & state.improvable
  cand_scores = top / length**length_penalty + (~joins) * NEG
  merged_scores = jnp.concatenate([state.fin.scores, cand_scores])
  best = jax.lax.top_k(merged_scores, beam_size)[1]
  pick = lambda old, new: jnp.concatenate([old, new])[best]
  fin = Beams(
      sequences=pick(state.fin.sequences, seqs),
      scores=merged_scores[best],
      log_probs=pick(state.fin.log_probs, top),
      lengths=pick(state.fin.lengths, jnp.full((k,), i + 1, jnp.int32)),
      valid=pick(state.fin.valid, joins & (top > NEG / 2)),
  )
  alive_logp = alive_scores[keep]
  best_alive = alive_logp[0] / length**length_penalty
  worst_fin = jnp.where(fin.valid, jnp.min(fin.scores), NEG)
  improvable = state.improvable & jnp.any(best_alive > worst_fin)
  return _BeamState(seqs[keep], alive_logp, fin, improvable), parent[keep]


def beam_search_from(params, prefix, first_logprobs, position, length_penalty=1.0, *, config,
                     beam_size: int, num_steps: int, eos_id: int | None = None,
                     pad_id: int = 0, block: int = 8, prefix_matvec: bool = True) -> Beams:
  """Beam search of `num_steps` tokens for ONE row, continuing a prefix.

  prefix:         (k, v, mask): per layer [P, h, dh] keys/values of the context, shared by
                  all beams, and [P] bool of the slots the beams may read.
  first_logprobs: [V] log-probabilities of the first generated token.
  position:       [] int32 position of the first generated token.
  block:          the steps run in blocks of `block` steps, each a lax loop over a per-beam
                  cache that grows by `block` slots, so every step reorders and reads about
                  as many slots as it has written. With an EOS the loops stop once no alive
                  beam can beat the worst finished one (stopping never changes the result:
                  the finished set is frozen then). block=1 unrolls the search in Python (the
                  short searches of the lookahead): step i reads exactly i slots.
  Returns `Beams` with leading axis B. num_steps - 1 forward passes of B tokens each.
  """
  n = num_steps
  empty = Beams(
      sequences=jnp.full((beam_size, n), pad_id, jnp.int32),
      scores=jnp.full((beam_size,), NEG),
      log_probs=jnp.full((beam_size,), NEG),
      lengths=jnp.zeros((beam_size,), jnp.int32),
      valid=jnp.zeros((beam_size,), bool),
  )
  state = _BeamState(
      alive_seq=empty.sequences,
      alive_logp=jnp.zeros((beam_size,)).at[1:].set(NEG),  # one live beam to start
      fin=empty,
      improvable=jnp.ones((), bool),
  )
  cache = model_lib.Cache.empty(config, beam_size, 0).with_prefix(*prefix, prefix_matvec)
  logprobs = jnp.broadcast_to(first_logprobs, (beam_size, first_logprobs.shape[-1]))
  step = functools.partial(_beam_step, length_penalty=length_penalty, beam_size=beam_size,
                           eos_id=eos_id)

  def body(carry):
    i, logprobs, cache, state = carry
    state, parents = step(state, logprobs, i, last=False)
    cache = cache.replace(k=tuple(k[parents] for k in cache.k),
                          v=tuple(v[parents] for v in cache.v))
    tokens = state.alive_seq[:, i][:, None]
    pos = jnp.full((beam_size, 1), jnp.minimum(position + i, config.max_len - 1), jnp.int32)
    logits, cache = model_lib.forward(params, tokens, pos, cache, config=config)
    return i + 1, jax.nn.log_softmax(logits[:, 0]), cache, state

  carry = (0 if block == 1 else jnp.int32(0), logprobs, cache, state)
  for start in range(0, n - 1, block):  # (a one-token search needs no forward pass)
    stop = min(start + block, n - 1)
    i, logprobs, cache, state = carry
    carry = (i, logprobs, cache.grow(stop - start), state)  # slots for this block's tokens
    if block == 1:
      carry = body(carry)
    elif eos_id is not None:
      cond = lambda carry, stop=stop: (carry[0] < stop) & carry[3].improvable
      carry = jax.lax.while_loop(cond, body, carry)
    else:  # without EOS nothing finishes early
      carry = jax.lax.fori_loop(start, stop, lambda _, carry: body(carry), carry)
  i, logprobs, _, state = carry
  state, _ = step(state, logprobs, i, last=True)
  return state.fin


@functools.partial(jax.jit, static_argnames=("config", "beam_size", "max_new_tokens", "eos_id",
                                             "pad_id"))
def beam_search(params, prompts, prompt_lengths=None, length_penalty=1.0, *, config,
                beam_size: int, max_new_tokens: int, eos_id: int | None = None,
                pad_id: int = 0) -> Beams:
  """Beam search of width B over a batch of left-padded prompts [b, P].

  Returns `Beams` [b, B, ...], best first per row: sequences [b, B, max_new_tokens].
  """
  logits, cache, positions = prefill(params, prompts, prompt_lengths, config=config)
  one_row = functools.partial(beam_search_from, config=config, beam_size=beam_size,
                              num_steps=max_new_tokens, eos_id=eos_id, pad_id=pad_id)
  prefix = (cache.k, cache.v, cache.segment_ids > 0)
  return jax.vmap(one_row, in_axes=(None, 0, 0, 0, None))(
      params, prefix, jax.nn.log_softmax(logits), positions, length_penalty)
