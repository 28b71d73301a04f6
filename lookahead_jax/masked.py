"""The masked objective (docs/design.md section 8): the mask spectrum, its loss and its
pseudo-log-likelihood, and generation by editing and by a genetic algorithm.

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

Generation keeps the first tokens (the prompt) and edits the rest: `edit` resamples one
span per move in random order, rounds of sweeps; `genetic` evolves a population
(mutation: mask a span and resample it; crossover: splice two parents at a position;
fitness: the text's mean pseudo-log-likelihood; elitist selection). Both report the
plausibility of every round and return the best text they saw.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from lookahead_jax import model as model_lib

Array = jax.Array
KINDS = ("next_token", "spectrum")
STREAM = 0x6D61736B  # the train step's masks use fold_in(step key, STREAM)
_NEG = -1.0e9


# ----------------------------------------------------------------------------- the spectrum


@dataclasses.dataclass(frozen=True)
class Objective:
  """The training objective (config section `objective`; mask_id from the tokenizer)."""

  kind: str = "next_token"
  rho: float = 1.0
  suffix: float = 0.0
  mask_rate: float = 0.15
  mean_span: float = 0.0
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


# ----------------------------------------------------------------------------- generation


@dataclasses.dataclass(frozen=True)
class Editor:
  """What generation by editing needs: the model, the special ids, the allowed tokens.

  vocab: the tokenizer's vocabulary size (ids at or past it, and pad, EOD, [MASK], are
  never sampled).
  """

  config: model_lib.Config
  mask_id: int
  vocab: int
  banned: tuple[int, ...]

  def logits_mask(self) -> Array:
    ids = jnp.arange(self.config.vocab_size)
    return (ids < self.vocab) & ~jnp.isin(ids, jnp.asarray(self.banned))


@functools.partial(jax.jit, static_argnames="editor")
def plausibility(params, tokens: Array, editor: Editor) -> Array:
  """[b] mean pseudo-log-likelihood per token of full rows tokens [b, L] (nats)."""
  b, length = tokens.shape
  ones = jnp.ones((b, length), jnp.int32)
  lp = hidden_log_probs(params, tokens, ones, jnp.broadcast_to(jnp.arange(length), (b, length)),
                        *pll_pattern(length), config=editor.config, mask_id=editor.mask_id)
  return lp.mean(-1)


def resample(params, tokens: Array, hide: Array, rng: Array, temperature, editor: Editor
             ) -> Array:
  """tokens [b, L] with the positions hide [b, L] masked and drawn from the model at once."""
  b, length = tokens.shape
  logits, _ = model_lib.forward(
      params, jnp.where(hide, editor.mask_id, tokens),
      jnp.broadcast_to(jnp.arange(length), (b, length)), config=editor.config,
      segment_ids=jnp.ones((b, length), jnp.int32), bidirectional=jnp.ones((b,), bool))
  logits = jnp.where(editor.logits_mask(), logits / jnp.maximum(temperature, 1e-6), _NEG)
  drawn = jax.random.categorical(rng, logits).astype(tokens.dtype)
  return jnp.where(hide, drawn, tokens)


def _span(length: int, start: Array, span: int) -> Array:
  """bool [b, L]: positions start[b] .. start[b] + span - 1."""
  i = jnp.arange(length)[None]
  return (i >= start[:, None]) & (i < start[:, None] + span)


@functools.partial(jax.jit, static_argnames=("prompt_len", "span", "editor"))
def edit_round(params, tokens: Array, rng: Array, temperature, *, prompt_len: int, span: int,
               editor: Editor) -> Array:
  """One sweep of Gibbs-style moves over tokens [b, L]: the editable positions
  prompt_len.. are cut into spans of `span`, visited in a random order, each masked and
  resampled given the rest."""
  length = tokens.shape[1]
  starts = prompt_len + span * jnp.arange(-(-(length - prompt_len) // span))
  order_key, draw_key = jax.random.split(rng)
  starts = jax.random.permutation(order_key, starts)

  def move(tokens, xs):
    start, key = xs
    hide = _span(length, jnp.full((tokens.shape[0],), start), span)
    return resample(params, tokens, hide, key, temperature, editor), None

  keys = jax.random.split(draw_key, starts.shape[0])
  return jax.lax.scan(move, tokens, (starts, keys))[0]


def _fill(params, prompt: np.ndarray, rows: int, new_tokens: int, rng: Array, temperature,
          editor: Editor, span: int) -> Array:
  """rows copies of prompt + new_tokens [MASK]s, every mask then drawn once (a sweep)."""
  tokens = jnp.concatenate([jnp.broadcast_to(jnp.asarray(prompt, jnp.int32), (rows, len(prompt))),
                            jnp.full((rows, new_tokens), editor.mask_id, jnp.int32)], axis=1)
  return edit_round(params, tokens, rng, temperature, prompt_len=len(prompt), span=span,
                    editor=editor)


def _report(progress: tqdm.tqdm, log: Callable[[str], None] | None, what: str, r: int,
            value: float) -> None:
  progress.set_postfix(plausibility=f"{value:.4f}")
  progress.update()
  if log is not None:
    log(f"{what} round {r}: plausibility {value:.4f} nats/token")


def edit(params, prompt: np.ndarray, new_tokens: int, rng: Array, *, editor: Editor,
         rounds: int = 4, span: int = 1, temperature: float = 1.0,
         log: Callable[[str], None] | None = print) -> tuple[np.ndarray, list[float]]:
  """Generation by editing: prompt [P] ids, then new_tokens drawn left unfixed.

  Round 0 fills the masks; every round then resamples each span once. Returns the most
  plausible text seen [P + new_tokens] and the plausibility of every round.
  """
  fill_key, rng = jax.random.split(rng)
  tokens = _fill(params, prompt, 1, new_tokens, fill_key, temperature, editor, span)
  history, best, best_score = [], None, -np.inf
  with tqdm.tqdm(total=rounds + 1, desc="edit", unit="round") as progress:
    for r in range(rounds + 1):
      if r:
        tokens = edit_round(params, tokens, jax.random.fold_in(rng, r), temperature,
                            prompt_len=len(prompt), span=span, editor=editor)
      score = float(plausibility(params, tokens, editor)[0])
      history.append(score)
      if score > best_score:
        best, best_score = np.asarray(tokens[0]), score
      _report(progress, log, "edit", r, score)
  return best, history


@functools.partial(jax.jit, static_argnames=("prompt_len", "span", "elite", "editor"))
def ga_round(params, population: Array, fitness: Array, rng: Array, temperature, *,
             prompt_len: int, span: int, elite: int, editor: Editor) -> tuple[Array, Array]:
  """One generation: the `elite` fittest of population [P, L] (fitness [P]) stay as they
  are; the others are replaced by children: two parents by tournaments of two, spliced
  at a uniform editable position, then one span masked and resampled. Returns the new
  population and its fitness."""
  size, length = population.shape
  children = size - elite
  keys = jax.random.split(rng, 5)
  order = jnp.argsort(-fitness)
  pairs = jax.random.randint(keys[0], (2, children, 2), 0, size)
  parents = jnp.where(fitness[pairs[..., 0]] >= fitness[pairs[..., 1]], pairs[..., 0],
                      pairs[..., 1])  # [2, children]
  cut = jax.random.randint(keys[1], (children,), prompt_len, length + 1)
  left = jnp.arange(length)[None] < cut[:, None]
  child = jnp.where(left, population[parents[0]], population[parents[1]])
  start = jax.random.randint(keys[2], (children,), prompt_len, length)
  child = resample(params, child, _span(length, start, span), keys[3], temperature, editor)
  population = jnp.concatenate([population[order[:elite]], child])
  fitness = jnp.concatenate([fitness[order[:elite]], plausibility(params, child, editor)])
  return population, fitness


def genetic(params, prompt: np.ndarray, new_tokens: int, rng: Array, *, editor: Editor,
            rounds: int = 8, population: int = 16, span: int = 2, temperature: float = 1.0,
            log: Callable[[str], None] | None = print) -> tuple[np.ndarray, list[float]]:
  """Generation by a genetic algorithm over texts prompt [P] + new_tokens.

  The population starts from independent fills (one sweep each); a quarter of it (at
  least one) is kept each round. Returns the fittest text [P + new_tokens] and the best
  fitness of every round (round 0: the initial population), which never decreases.
  """
  fill_key, rng = jax.random.split(rng)
  pop = _fill(params, prompt, population, new_tokens, fill_key, temperature, editor, span)
  fitness = plausibility(params, pop, editor)
  elite = max(1, population // 4)
  history = []
  with tqdm.tqdm(total=rounds + 1, desc="ga", unit="round") as progress:
    for r in range(rounds + 1):
      if r:
        pop, fitness = ga_round(params, pop, fitness, jax.random.fold_in(rng, r), temperature,
                                prompt_len=len(prompt), span=span, elite=elite, editor=editor)
      history.append(float(jnp.max(fitness)))
      _report(progress, log, "ga", r, history[-1])
  return np.asarray(pop[jnp.argmax(fitness)]), history
