"""Decoder-only transformer with the GPT-2 layout, in Flax NNX, with an explicit KV cache.

Layout (so GPT-2 checkpoints load as they are): learned token and position embeddings,
pre-LayerNorm blocks with biases, fused QKV projection, tanh-GELU MLP, final LayerNorm,
output projection tied to the token embedding.

The model is split once into a graph definition (a function of `Config` only) and a
parameter pytree, and everything else calls the one pure function

    forward(params, tokens[b, n], positions[b, n], cache, config=...)
        -> (logits[b, n, V] float32, cache)

used for training (`cache=None`: causal attention within each segment, or bidirectional
for the rows the per-example flag `bidirectional` marks (the masked objective, masked.py),
with one parameter set; the returned cache
holds every layer's keys/values of the teacher-forced pass), for prefill and for
one-token-at-a-time decoding (a preallocated `Cache`, written at `cache.index`).

A `Cache` may also carry a read-only *prefix*: keys/values `[P, h, dh]` without a batch
axis, read by every row of the call through `prefix_mask[P]`. Beam search puts its beams
on the batch axis and the prompt in the prefix, so a beam reorder gathers only the small
per-beam cache; the all-anchor lookahead vmaps this over anchors with the prefix
unbatched, so one shared prefix serves every anchor and beam (docs/design.md section 4).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lookahead_jax import config as config_lib

Array = jax.Array
Params = Any  # nnx.State of the model's parameters

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
_MASKED = float(jnp.finfo(jnp.float32).min)
_DEFAULT = config_lib.defaults("model")  # the schema declares the defaults


@dataclasses.dataclass(frozen=True)
class Config:
  """Model hyper-parameters (hashable: a static argument of every jitted function)."""

  vocab_size: int = _DEFAULT.vocab_size
  max_len: int = _DEFAULT.max_len
  num_layers: int = _DEFAULT.num_layers
  d_model: int = _DEFAULT.d_model
  num_heads: int = _DEFAULT.num_heads
  mlp_ratio: int = _DEFAULT.mlp_ratio
  dropout: float = _DEFAULT.dropout
  param_dtype: str = _DEFAULT.param_dtype
  dtype: str = _DEFAULT.dtype  # compute dtype; "bfloat16" on accelerators
  remat: bool = _DEFAULT.remat  # rematerialise each block in the backward pass
  layer_norm_eps: float = _DEFAULT.layer_norm_eps
  # Heads on the final hidden state for tree search (heads.py, mcts.py): a value head (a
  # scalar estimate of a path's return) and an is-done head (the logit of the answer
  # having ended). Their parameters live beside the others, in the checkpoint.
  value_head: bool = _DEFAULT.value_head
  done_head: bool = _DEFAULT.done_head
  # Numeric tokens (`NumericInput`): K Fourier features; whether their own embeddings stay.
  numeric_features: int = _DEFAULT.numeric_features
  numeric_embeddings: bool = _DEFAULT.numeric_embeddings
  # The testbed's numeric tokens, derived from its tokenizer (settings.derive), not set in
  # the config: ((token id, channel, value in [0, 1)), ...). Empty: no token is numeric.
  numeric_tokens: tuple[tuple[int, int, float], ...] = ()

  def __post_init__(self):
    if self.d_model % self.num_heads:
      raise ValueError(
          f"model.d_model={self.d_model} is not divisible by model.num_heads={self.num_heads}; "
          "pick num_heads that divides d_model."
      )
    for key in ("param_dtype", "dtype"):
      if getattr(self, key) not in _DTYPES:
        raise ValueError(f"model.{key}={getattr(self, key)!r} is not one of {sorted(_DTYPES)}.")
    if self.numeric_features < 0:
      raise ValueError(f"model.numeric_features={self.numeric_features} must be >= 0.")
    for token, _, _ in self.numeric_tokens:
      if not 0 <= token < self.vocab_size:
        raise ValueError(f"numeric token {token} is outside model.vocab_size={self.vocab_size}.")

  @property
  def numeric_channels(self) -> int:
    """Channels of numeric tokens read as numbers (0 when the option is off)."""
    if not self.numeric_features or not self.numeric_tokens:
      return 0
    return 1 + max(c for _, c, _ in self.numeric_tokens)

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads


def numeric_features(values: Array, k: int) -> Array:
  """Fourier features [..., 2k + 1] of values in [0, 1): [v, sin(2 pi j v), cos(2 pi j v)]
  for j = 1..k (sines first, then cosines)."""
  v = values.astype(jnp.float32)[..., None]
  angles = 2 * jnp.pi * v * jnp.arange(1, k + 1, dtype=jnp.float32)
  return jnp.concatenate([v, jnp.sin(angles), jnp.cos(angles)], axis=-1)


def numeric_tables(config: Config) -> tuple[np.ndarray, np.ndarray]:
  """Per token id: channel int32 [V] (-1: not numeric) and value float32 [V] (0 there)."""
  channel = np.full(config.vocab_size, -1, np.int32)
  value = np.zeros(config.vocab_size, np.float32)
  for token, c, v in config.numeric_tokens:
    channel[token], value[token] = c, v
  return channel, value


class NumericInput(nnx.Module):
  """Reads numeric tokens as numbers: per channel, a linear map of the value's Fourier
  features, added at the positions of that channel's tokens (zero elsewhere)."""

  def __init__(self, config: Config, *, rngs: nnx.Rngs):
    dtype, pdtype = _DTYPES[config.dtype], _DTYPES[config.param_dtype]
    self.config = config
    self.proj = nnx.List([
        nnx.Linear(2 * config.numeric_features + 1, config.d_model, dtype=dtype,
                   param_dtype=pdtype, kernel_init=nnx.initializers.normal(0.02), rngs=rngs)
        for _ in range(config.numeric_channels)])

  def __call__(self, tokens: Array) -> tuple[Array, Array]:
    """(added [b, n, d], numeric [b, n] bool) for token ids [b, n]."""
    channel, value = (jnp.asarray(t) for t in numeric_tables(self.config))
    c, feats = channel[tokens], numeric_features(value[tokens], self.config.numeric_features)
    added = sum(jnp.where((c == i)[..., None], proj(feats), 0.0)
                for i, proj in enumerate(self.proj))
    return added, c >= 0


@flax.struct.dataclass
class Cache:
  """Keys/values of earlier tokens, per layer.

  k, v:         tuple over layers of [b, S, h, dh], written at slots index..index+n-1.
  segment_ids:  [b, S] int32 segment of each slot; 0 = empty or padding (never read).
  index:        [] int32, the next slot to write.
  prefix_k/v:   None, or tuple over layers of keys [h, dh, P] and values [h, P, dh]: read-only,
                shared by all b rows (no batch axis), stored in the layouts the attention's
                matmuls read (a loop over decode steps would otherwise transpose them anew
                every step).
  prefix_mask:  None, or [P] bool: which prefix slots the rows read.
  prefix_matvec: read the prefix by a fused multiply-and-sum instead of a matmul: for a
                few single-token rows per prefix (a decode step of B beams); a vmap over
                anchors sharing one prefix (the lookahead) wants the matmul.

  A token at slot i of segment s reads slots j <= i of segment s, and the readable prefix.
  """

  k: tuple[Array, ...]
  v: tuple[Array, ...]
  segment_ids: Array
  index: Array
  prefix_k: tuple[Array, ...] | None = None
  prefix_v: tuple[Array, ...] | None = None
  prefix_mask: Array | None = None
  prefix_matvec: bool = flax.struct.field(pytree_node=False, default=False)

  @classmethod
  def empty(cls, config: Config, batch: int, slots: int) -> Cache:
    """An empty cache with room for `slots` tokens per row."""
    shape = (batch, slots, config.num_heads, config.head_dim)
    zeros = tuple(jnp.zeros(shape, _DTYPES[config.dtype]) for _ in range(config.num_layers))
    return cls(
        k=zeros,
        v=zeros,
        segment_ids=jnp.zeros((batch, slots), jnp.int32),
        index=jnp.zeros((), jnp.int32),
    )

  def grow(self, slots: int) -> Cache:
    """This cache with `slots` more empty slots at the end."""
    pad = lambda x: jnp.pad(x, [(0, 0), (0, slots)] + [(0, 0)] * (x.ndim - 2))
    return self.replace(k=tuple(map(pad, self.k)), v=tuple(map(pad, self.v)),
                        segment_ids=pad(self.segment_ids))

  def with_prefix(self, k: tuple[Array, ...], v: tuple[Array, ...], mask: Array,
                  matvec: bool = False) -> Cache:
    """This cache reading `k`, `v` (per layer [P, h, dh]) where `mask` [P] is true."""
    return self.replace(prefix_k=tuple(x.transpose(1, 2, 0) for x in k),
                        prefix_v=tuple(x.transpose(1, 0, 2) for x in v), prefix_mask=mask,
                        prefix_matvec=matvec)

  def row(self, i) -> tuple[tuple[Array, ...], tuple[Array, ...], Array]:
    """Row i's keys, values (per layer [S, h, dh]) and segment ids [S], e.g. as a prefix."""
    return (
        tuple(k[i] for k in self.k),
        tuple(v[i] for v in self.v),
        self.segment_ids[i],
    )


def _attention(q, blocks, *, dropout_rate=0.0, dropout_rng=None, myopic=False,
               shared_matvec=False, weights=False):
  """Softmax attention of q over several blocks of keys/values, in float32.

  q:      [b, n, h, dh]
  blocks: sequence of (k, v, mask): k, v [b, s, h, dh] (one per row), or k [h, dh, s] and
          v [h, s, dh] (shared by all rows); mask broadcastable to [b, n, s].
  myopic: the single block holds the queries' own keys/values (training): a query reads
          stop-gradient keys/values of every earlier position and live ones of its own.
  shared_matvec: single-token queries read shared blocks by multiply-and-sum too.
  weights: also return the first block's normalised attention weights [b, h, n, s].
  Returns [b, n, h, dh] (and the weights).
  """
  scale = q.shape[-1] ** -0.5
  # One query token against its own row's keys (a decode step) is a [1, dh] x [dh, s]
  # product per row and head: too small for a matmul kernel, so it is a fused
  # multiply-and-sum instead. Shared keys (and several queries) are real matmuls.
  matvec = q.shape[1] == 1
  dropout = dropout_rate > 0.0 and dropout_rng is not None
  if len(blocks) == 1 and blocks[0][0].ndim == 4 and not matvec and not myopic:
    return _one_block(q, *blocks[0], scale, dropout_rate, dropout_rng, weights)
  scores = []
  for k, _, mask in blocks:
    kk = jax.lax.stop_gradient(k) if myopic else k
    if matvec and k.ndim == 4:
      s = jnp.sum(q.astype(jnp.float32) * kk, axis=-1).transpose(0, 2, 1)[:, :, None] * scale
    elif matvec and shared_matvec:  # k [h, dh, s]
      s = jnp.sum(q[:, 0, :, :, None].astype(jnp.float32) * kk, axis=-2)[:, :, None] * scale
    else:
      spec = "bnhd,bshd->bhns" if k.ndim == 4 else "bnhd,hds->bhns"
      s = jnp.einsum(spec, q, kk, preferred_element_type=jnp.float32) * scale
    if myopic:  # the diagonal (own key) keeps its gradient
      own = jnp.einsum("bnhd,bnhd->bhn", q, k, preferred_element_type=jnp.float32) * scale
      s = jnp.where(jnp.eye(s.shape[-1], dtype=bool), own[..., None], s)
    scores.append(jnp.where(mask[:, None], s, _MASKED))
  top = functools.reduce(jnp.maximum, [s.max(-1, keepdims=True) for s in scores])
  exps = [jnp.exp(s - top) for s in scores]
  denom = sum(e.sum(-1, keepdims=True) for e in exps)  # [b, h, n, 1]
  out = 0.0
  for e, (_, v, _) in zip(exps, blocks):
    if dropout:  # dropout acts on the normalised weights
      e = e / denom
      keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, e.shape)
      e = jnp.where(keep, e / (1.0 - dropout_rate), 0.0)
    if myopic:  # live values on the diagonal, stop-gradient values elsewhere
      e = e.astype(v.dtype)
      diag = jnp.einsum("bhnn->bnh", e)[..., None]
      out = out + jnp.einsum("bhns,bshd->bnhd", e, jax.lax.stop_gradient(v))
      out = out + diag * (v - jax.lax.stop_gradient(v))
    elif matvec and v.ndim == 4:
      out = out + jnp.sum(e[:, :, 0].transpose(0, 2, 1)[..., None] * v, axis=1, keepdims=True)
    elif matvec and shared_matvec:  # v [h, s, dh]
      out = out + jnp.sum(e[:, :, 0, :, None] * v, axis=-2)[:, None]
    else:
      spec = "bhns,bshd->bnhd" if v.ndim == 4 else "bhns,hsd->bnhd"
      out = out + jnp.einsum(spec, e.astype(v.dtype), v, preferred_element_type=jnp.float32)
  if not dropout:  # normalise the [b, n, h, dh] output, not the [b, h, n, s] weights
    out = out / denom.transpose(0, 2, 1, 3)
  if weights:
    return out.astype(q.dtype), exps[0] / denom
  return out.astype(q.dtype)


def _one_block(q, k, v, mask, scale, dropout_rate, dropout_rng, weights):
  """`_attention` of several queries over one block of per-row keys/values (training,
  prefill): heads moved ahead of the tokens once, then one softmax. XLA:CPU runs the
  batched matmuls and their gradients markedly faster on [b, h, n, dh] operands, and the
  softmax's own derivative is cheaper than that of a normalisation after the values."""
  qt, kt, vt = (x.transpose(0, 2, 1, 3) for x in (q, k, v))  # [b, h, n | s, dh]
  s = jnp.einsum("bhnd,bhsd->bhns", qt, kt, preferred_element_type=jnp.float32) * scale
  probs = jax.nn.softmax(jnp.where(mask[:, None], s, _MASKED), axis=-1)
  read = _dropout(probs, dropout_rate, dropout_rng)  # dropout acts on the normalised weights
  out = jnp.einsum("bhns,bhsd->bnhd", read.astype(v.dtype), vt,
                   preferred_element_type=jnp.float32).astype(q.dtype)
  return (out, probs) if weights else out


def _dropout(x, rate, rng):
  if rate == 0.0 or rng is None:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


class Block(nnx.Module):
  """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

  def __init__(self, config: Config, *, rngs: nnx.Rngs):
    d, dtype, pdtype = config.d_model, _DTYPES[config.dtype], _DTYPES[config.param_dtype]
    init = nnx.initializers.normal(0.02)
    # GPT-2: residual projections scaled by 1/sqrt(2 * layers).
    proj_init = nnx.initializers.normal(0.02 / (2 * config.num_layers) ** 0.5)
    dense = functools.partial(nnx.Linear, dtype=dtype, param_dtype=pdtype, rngs=rngs)
    norm = functools.partial(
        nnx.LayerNorm, epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=pdtype, rngs=rngs
    )
    self.config = config
    self.ln_1 = norm(d)
    self.c_attn = dense(d, 3 * d, kernel_init=init)
    self.c_proj = dense(d, d, kernel_init=proj_init)
    self.ln_2 = norm(d)
    self.c_fc = dense(d, config.mlp_ratio * d, kernel_init=init)
    self.mlp_proj = dense(config.mlp_ratio * d, d, kernel_init=proj_init)

  def __call__(self, x, layer, cache: Cache | None, mask, rngs, myopic: bool,
               internals: bool = False):
    """x [b*n, d] -> (x [b*n, d], k [b, s, h, dh], v [b, s, h, dh]) for layer `layer`.

    internals: also the attention weights [b, h, n, s] (a fourth output).

    Tokens stay flattened to [b*n, d] around the dense layers: XLA:CPU computes the
    weight gradients of 2-D matmuls markedly faster than of [b, n, d] ones.
    """
    cfg = self.config
    b, n = mask.shape[0], mask.shape[1]
    qkv = self.c_attn(self.ln_1(x)).reshape(b, n, 3, cfg.num_heads, cfg.head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if cache is not None:
      k = jax.lax.dynamic_update_slice_in_dim(cache.k[layer], k.astype(cache.k[layer].dtype),
                                              cache.index, axis=1)
      v = jax.lax.dynamic_update_slice_in_dim(cache.v[layer], v.astype(cache.v[layer].dtype),
                                              cache.index, axis=1)
    blocks = [(k, v, mask)]
    if cache is not None and cache.prefix_k is not None:
      blocks.append((cache.prefix_k[layer], cache.prefix_v[layer], cache.prefix_mask[None, None]))
    h = _attention(q, blocks, dropout_rate=cfg.dropout, dropout_rng=rngs[0], myopic=myopic,
                   shared_matvec=cache is not None and cache.prefix_matvec, weights=internals)
    if internals:
      h, attention = h
    x = x + _dropout(self.c_proj(h.reshape(b * n, cfg.d_model)), cfg.dropout, rngs[1])
    h = self.mlp_proj(jax.nn.gelu(self.c_fc(self.ln_2(x)), approximate=True))
    x = x + _dropout(h, cfg.dropout, rngs[2])
    return (x, k, v, attention) if internals else (x, k, v)


class GPT(nnx.Module):
  """Token + position embeddings, `num_layers` blocks, final LayerNorm, tied output."""

  def __init__(self, config: Config, *, rngs: nnx.Rngs):
    dtype, pdtype = _DTYPES[config.dtype], _DTYPES[config.param_dtype]
    embed = functools.partial(nnx.Embed, dtype=dtype, param_dtype=pdtype,
                              embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
    self.config = config
    self.wte = embed(config.vocab_size, config.d_model)
    self.wpe = embed(config.max_len, config.d_model)
    self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.num_layers)])
    self.ln_f = nnx.LayerNorm(config.d_model, epsilon=config.layer_norm_eps, dtype=dtype,
                              param_dtype=pdtype, rngs=rngs)
    head = functools.partial(nnx.Linear, config.d_model, 1, dtype=dtype, param_dtype=pdtype,
                             kernel_init=nnx.initializers.zeros_init(), rngs=rngs)
    self.value_head = head() if config.value_head else None
    self.done_head = head() if config.done_head else None
    if config.numeric_channels:  # no attribute at all when off: the params are unchanged
      self.numeric = NumericInput(config, rngs=rngs)

  def embed(self, tokens, positions):
    """The input embeddings [b, n, d]: token + position (+ the numeric input, if on)."""
    x = self.wte(tokens)
    if self.config.numeric_channels:
      added, numeric = self.numeric(tokens)
      if not self.config.numeric_embeddings:
        x = jnp.where(numeric[..., None], 0.0, x)
      x = x + added.astype(x.dtype)
    return x + self.wpe(positions)

  def __call__(self, tokens, positions, cache=None, segment_ids=None, dropout_rng=None,
               myopic=False, bidirectional=None, internals=False, heads=False):
    cfg = self.config
    b, n = tokens.shape
    if segment_ids is None:
      segment_ids = jnp.ones((b, n), jnp.int32)
    if cache is None:  # teacher forcing: slot i holds token i
      query_slots = key_slots = jnp.arange(n)
      key_segments = segment_ids
    else:
      query_slots = cache.index + jnp.arange(n)
      key_slots = jnp.arange(cache.segment_ids.shape[1])
      key_segments = jax.lax.dynamic_update_slice_in_dim(
          cache.segment_ids, segment_ids.astype(jnp.int32), cache.index, axis=1)
    # mask [b, n, S]: earlier-or-same slot (any slot in a bidirectional row) of the same
    # (non-padding) segment.
    order = key_slots[None, None, :] <= query_slots[None, :, None]
    if bidirectional is not None:
      order = order | bidirectional[:, None, None]
    mask = (order
            & (key_segments[:, None, :] == segment_ids[:, :, None])
            & (key_segments[:, None, :] > 0))
    x = self.embed(tokens, positions)
    if dropout_rng is None or cfg.dropout == 0.0:
      rngs = [(None, None, None)] * cfg.num_layers
    else:
      keys = jax.random.split(dropout_rng, 3 * cfg.num_layers + 1)
      rngs = [tuple(keys[3 * i + 1:3 * i + 4]) for i in range(cfg.num_layers)]
      x = _dropout(x, cfg.dropout, keys[0])
    x = x.reshape(b * n, cfg.d_model)
    new_k, new_v, hidden, attention = [], [], [x], []
    for layer, block in enumerate(self.blocks):
      call = nnx.remat(Block.__call__, static_argnums=(2, 6, 7)) if cfg.remat else Block.__call__
      x, k, v, *weights = call(block, x, layer, cache, mask, rngs[layer], myopic, internals)
      new_k.append(k)
      new_v.append(v)
      hidden.append(x)
      attention += weights
    final = self.ln_f(x)
    logits = self.wte.attend(final).astype(jnp.float32).reshape(b, n, cfg.vocab_size)
    if cache is None:
      new_cache = Cache(k=tuple(new_k), v=tuple(new_v), segment_ids=segment_ids.astype(jnp.int32),
                        index=jnp.asarray(n, jnp.int32))
    else:
      new_cache = cache.replace(k=tuple(new_k), v=tuple(new_v), segment_ids=key_segments,
                                index=cache.index + n)
    extras = {}
    if internals:
      extras.update(hidden=jnp.stack(hidden).reshape(-1, b, n, cfg.d_model),
                    attention=jnp.stack(attention))
    if heads:
      for name, module in (("value", self.value_head), ("done", self.done_head)):
        if module is not None:
          extras[name] = module(final).astype(jnp.float32).reshape(b, n)
    if internals or heads:
      return logits, new_cache, extras
    return logits, new_cache


@functools.lru_cache(maxsize=None)
def graphdef(config: Config) -> nnx.GraphDef:
  """The graph definition of `GPT(config)` (a pure function of the config)."""
  return nnx.split(nnx.eval_shape(lambda: GPT(config, rngs=nnx.Rngs(0))))[0]


def init(config: Config, rng: Array) -> Params:
  """Freshly initialised parameters (an nnx.State pytree)."""
  return nnx.split(GPT(config, rngs=nnx.Rngs(params=rng)))[1]


def abstract_params(config: Config) -> Params:
  """Shapes and dtypes of the parameters, without allocating them."""
  return nnx.split(nnx.eval_shape(lambda: GPT(config, rngs=nnx.Rngs(0))))[1]


def forward(
    params: Params,
    tokens: Array,
    positions: Array,
    cache: Cache | None = None,
    *,
    config: Config,
    segment_ids: Array | None = None,
    dropout_rng: Array | None = None,
    myopic: bool = False,
    bidirectional: Array | None = None,
    internals: bool = False,
    heads: bool = False,
) -> tuple[Array, Cache] | tuple[Array, Cache, dict[str, Array]]:
  """The model as a pure function of its parameters.

  tokens, positions: [b, n] int32 (positions index the learned position embedding).
  cache:       None for a teacher-forced pass, or a `Cache` to read and write.
  segment_ids: [b, n] int32; tokens attend only within their segment (0 = padding).
  dropout_rng: enables dropout (training) when the config has any.
  myopic:      attention to earlier positions reads stop-gradient keys/values (training).
  bidirectional: None (every row causal), or [b] bool: rows that attend to every slot of
               their segment, later ones included (the masked objective).
  internals:   (static) also return, from the same pass, {"hidden": [L+1, b, n, d] the
               residual stream after the embeddings and after each block, "attention":
               [L, b, h, n, S] every layer's attention weights over its own keys}; off, the
               pass is the one without them (the probes read them, probes.py).
  heads:       (static) also return the heads the config has, in the same dict: "value"
               [b, n] (model.value_head) and "done" [b, n] logits (model.done_head).
  Returns logits [b, n, V] float32 and the cache with these tokens' keys/values added
  (for `cache=None`, a new cache holding exactly the n tokens), then (with internals or
  heads) the dict of internals and heads.
  """
  model = nnx.merge(graphdef(config), params)
  return model(tokens, positions, cache, segment_ids, dropout_rng, myopic, bidirectional,
               internals, heads)


def num_params(params: Params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
