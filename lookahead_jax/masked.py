"""The masked objective (docs/design.md section 8): the mask spectrum, its loss and its
pseudo-log-likelihood.

Spectrum. Each example of a batch is, independently,

  a next-token example (probability `rho`): causal attention, every position predicts
    the next token, exactly the batch the pipeline gave (weights included);
  a suffix example (probability `suffix`): the tokens from a uniform cut to the row's
    end are replaced by [MASK] and predicted under bidirectional attention;
  a span example (the rest): a random set of spans of mean length `mean_span`
    covering a share `mask_rate` of the row is replaced by [MASK] and predicted under
    bidirectional attention (`mean_span = 0`: tokens masked independently, BERT).

Spans come from a two-state Markov chain along the row started in its stationary
distribution: a masked token ends its span with probability 1/s, an unmasked token
starts one with probability r / (s (1 - r)). Every position is then masked with
probability exactly r, spans are geometric with mean s, and rate and spans are set
apart (s = 1 / (1 - r) is independent masking). Padding is never masked. A masked
example's targets are its own tokens and its weights 1 on the masked positions only,
so the trainer's normalisation by the global count of weighted tokens (train.py) counts
predicted tokens of both kinds, and accumulation and sharding change nothing. `rho = 1`
is the next-token batch itself.

Held-out evaluation of a masked model: `hidden_log_probs` re-encodes each row once per
position with some tokens hidden: the pseudo-log-likelihood hides one token at a time
(`pll_pattern`), the bidirectional next-token readout hides every token from the
predicted one on (`readout_pattern`).

Generation by editing with a masked model is editing.py's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from lookahead_jax import config as config_lib
from lookahead_jax import model as model_lib

Array = jax.Array
KINDS = ("next_token", "spectrum")
STREAM = 0x6D61736B  # the train step's masks use fold_in(step key, STREAM)
_NEG = -1.0e9


# ----------------------------------------------------------------------------- the spectrum


_DEFAULT = config_lib.defaults("objective")  # the schema declares the defaults


@dataclasses.dataclass(frozen=True)
class Objective:
  """The training objective (config section `objective`; mask_id from the tokenizer)."""

  kind: str = _DEFAULT.kind
  rho: float = _DEFAULT.rho
  suffix: float = _DEFAULT.suffix
  mask_rate: float = _DEFAULT.mask_rate
  mean_span: float = _DEFAULT.mean_span
  mask_id: int = 0

  def check(self) -> None:
    """ValueError (one line, naming the key) for an objective that cannot be sampled."""
    if self.kind not in KINDS:
      raise ValueError(f"objective.kind={self.kind!r}: use one of {', '.join(KINDS)}")
    if not 0.0 <= self.rho <= 1.0:
      raise ValueError(f"objective.rho={self.rho}: must be in [0, 1]")
    if not 0.0 <= self.suffix <= 1.0 - self.rho:
      raise ValueError(f"objective.suffix={self.suffix}: must be in [0, 1 - objective.rho="
                       f"{1.0 - self.rho:g}] (the shares of the three kinds sum to 1)")
    if not 0.0 < self.mask_rate < 1.0:
      raise ValueError(f"objective.mask_rate={self.mask_rate}: must be in (0, 1)")
    if self.mean_span != 0.0 and not self.mean_span >= 1.0:
      raise ValueError(f"objective.mean_span={self.mean_span}: must be 0 (independent "
                       "tokens) or >= 1")
    if self.span_start > 1.0:
      raise ValueError(
          f"objective.mean_span={self.mean_span}: spans this short cannot cover "
          f"objective.mask_rate={self.mask_rate}; use mean_span >= "
          f"{self.mask_rate / (1.0 - self.mask_rate):.3g} (or 0)")

  @property
  def span(self) -> float:
    """s: the mean span length (independent masking: 1 / (1 - r))."""
    return self.mean_span or 1.0 / (1.0 - self.mask_rate)

  @property
  def span_start(self) -> float:
    """P(an unmasked token is followed by a masked one) = r / (s (1 - r))."""
    return self.mask_rate / (self.span * (1.0 - self.mask_rate))


NEXT_TOKEN = Objective()  # plain next-token training


def span_masks(rng: Array, shape: tuple[int, int], objective: Objective) -> Array:
  """bool [b, T]: the Markov chain of spans (module docstring); P(masked) = mask_rate."""
  first, steps = jax.random.split(rng)
  start = jax.random.bernoulli(first, objective.mask_rate, shape[:1])
  u = jax.random.uniform(steps, (shape[1] - 1, shape[0]))

  def step(masked, u_t):
    masked = jnp.where(masked, u_t >= 1.0 / objective.span, u_t < objective.span_start)
    return masked, masked

  _, rest = jax.lax.scan(step, start, u)
  return jnp.concatenate([start[:, None], rest.T], axis=1)


def apply(batch: Mapping[str, Array], rng: Array, objective: Objective) -> dict[str, Array]:
  """The batch of one step under the objective: masks sampled from `rng` (deterministic).

  batch: inputs, targets, segment_ids [b, T] int32, weights [b, T] float32 (and the rest,
  passed through). Next-token training returns the batch as it is; the spectrum returns
  it with masked rows' inputs [MASK] where masked, targets their own tokens, weights 1 on
  masked positions only, and `bidirectional` [b] bool: the rows that are not next-token
  examples (rho = 1: every row a next-token row, the batch's values unchanged).
  """
  if objective.kind == "next_token":
    return dict(batch)
  inputs, seg = batch["inputs"], batch["segment_ids"]
  b, t = inputs.shape
  kind_key, cut_key, span_key = jax.random.split(rng, 3)
  u = jax.random.uniform(kind_key, (b,))
  next_token = u < objective.rho
  suffix = (u < objective.rho + objective.suffix) & ~next_token
  valid = seg > 0
  length = jnp.sum(valid, axis=1)
  cut = jnp.floor(jax.random.uniform(cut_key, (b,)) * length).astype(jnp.int32)
  masked = jnp.where(suffix[:, None], jnp.arange(t)[None] >= cut[:, None],
                     span_masks(span_key, (b, t), objective))
  masked = masked & valid & ~next_token[:, None]
  keep = next_token[:, None]
  return dict(batch, inputs=jnp.where(masked, objective.mask_id, inputs),
              targets=jnp.where(keep, batch["targets"], inputs),
              weights=jnp.where(keep, batch["weights"], masked.astype(batch["weights"].dtype)),
              bidirectional=~next_token)


# ----------------------------------------------------------------------------- held-out rows


def pll_pattern(t: int) -> tuple[Array, Array]:
  """(hide [T, T], predict [T]): copy k hides token k and predicts it."""
  return jnp.eye(t, dtype=bool), jnp.arange(t)


def readout_pattern(t: int) -> tuple[Array, Array]:
  """(hide [T, T], predict [T]): copy k hides tokens k.. (all the future) and predicts k."""
  return jnp.arange(t)[None] >= jnp.arange(t)[:, None], jnp.arange(t)


def hidden_log_probs(params, tokens: Array, segment_ids: Array, positions: Array,
                     hide: Array, predict: Array, *, config: model_lib.Config,
                     mask_id: int) -> Array:
  """log p(tokens[:, predict[k]]) with tokens[:, hide[k]] set to [MASK], bidirectional.

  tokens, segment_ids, positions: [b, T] int32; hide: [K, T] bool; predict: [K] int32.
  Each row is re-encoded K times (one batch of K copies per row, rows in turn).
  Returns [b, K] float32.
  """
  k = hide.shape[0]
  rows = jnp.arange(k)

  def one_row(row):
    tok, seg, pos = row
    logits, _ = model_lib.forward(
        params, jnp.where(hide, mask_id, tok[None]), jnp.broadcast_to(pos, hide.shape),
        config=config, segment_ids=jnp.broadcast_to(seg, hide.shape),
        bidirectional=jnp.ones((k,), bool))
    return jax.nn.log_softmax(logits[rows, predict])[rows, tok[predict]]

  return jax.lax.map(one_row, (tokens, segment_ids, positions))


def held_out_sums(params, batch: Mapping[str, Array], *, config: model_lib.Config,
                  mask_id: int) -> dict[str, Array]:
  """Per-row sums [b] of a batch: PLL (every non-padding token) and the bidirectional
  readout (targets whose next slot is in the same segment): -log p and token counts."""
  tokens, seg, pos = batch["inputs"], batch["segment_ids"], batch["positions"]
  t = tokens.shape[1]
  pll = hidden_log_probs(params, tokens, seg, pos, *pll_pattern(t), config=config,
                         mask_id=mask_id)
  readout = hidden_log_probs(params, tokens, seg, pos, *readout_pattern(t), config=config,
                             mask_id=mask_id)
  valid = (seg > 0).astype(jnp.float32)
  # slot k predicts target k - 1 when slot k continues the segment of slot k - 1
  follows = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
  w = jnp.pad(batch["weights"][:, :-1] * follows, ((0, 0), (1, 0)))
  return {"pll_nll": -jnp.sum(pll * valid, 1), "pll_tokens": jnp.sum(valid, 1),
          "readout_nll": -jnp.sum(readout * w, 1), "readout_tokens": jnp.sum(w, 1)}
