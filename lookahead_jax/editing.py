"""Generation by editing with a masked model (docs/design.md section 8).

A masked model (objective.kind="spectrum", masked.py) keeps the first tokens (the
prompt) and edits the rest: `edit` fills the continuation, then resamples one span per
move in random order, rounds of sweeps (Gibbs-style); `genetic` evolves a population
(mutation: mask a span and resample it; crossover: splice two parents at a position;
fitness: the text's mean pseudo-log-likelihood; elitist selection). Both report the
plausibility of every round and return the best text they saw. `print_edits` is what
`lookahead-jax decode --sampler=edit|ga` prints.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from lookahead_jax import model as model_lib
from lookahead_jax.masked import hidden_log_probs, pll_pattern

Array = jax.Array
_NEG = -1.0e9
METHODS = ("edit", "ga")


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


def print_edits(params, tokenizer, model_cfg: model_lib.Config, texts: list[str],
                prompts: list[list[int]], new_tokens: int, rng: Array, *, method: str,
                rounds: int, span: int, temperature: float, population: int) -> None:
  """Prints the most plausible text `method` ("edit" or "ga") found for each prompt."""
  editor = Editor(config=model_cfg, mask_id=tokenizer.mask_id, vocab=tokenizer.vocab_size,
                  banned=(tokenizer.pad_id, tokenizer.eod_id, tokenizer.mask_id))
  kwargs = dict(editor=editor, rounds=rounds, span=span, temperature=temperature)
  if method == "ga":
    kwargs["population"] = population
  search = edit if method == "edit" else genetic
  for r, (text, ids) in enumerate(zip(texts, prompts)):
    best, history = search(params, np.asarray(ids, np.int32), new_tokens,
                           jax.random.fold_in(rng, r), **kwargs)
    print(f"--- {method}, {text!r} (plausibility {max(history):.4f} nats/token):\n"
          f"{text}{tokenizer.decode(best[len(ids):].tolist())}")
