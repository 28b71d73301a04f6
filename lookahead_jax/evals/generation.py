"""The generation report: what greedy, beam, plain and amplified sampling do to text.

    lookahead-jax generate-report --config=configs/default.py --workdir=runs/default

The first `generate.prompts` documents of eval.test_split give the prompts, the same for
every sampler: on a text dataset, [EOD] + the first `generate.prompt_tokens` tokens of
each document long enough to continue; on a testbed, its task (path_star: the graph and
the query; tsp: the cities; rhyme: a poem's first line, which its second must rhyme
with). Each sampler (`decoding.SAMPLERS`: greedy, beam of `generate.beams`, plain
sampling at `generate.temperature` and `generate.top_p`, sampling from the amplified
mixture p~ of the config's lookahead with its lam and tau) continues each prompt by up to
`generate.new_tokens` tokens; a continuation ends before its first EOD. Per sampler,
beside the held-out continuation of the same prompts:

  seq_rep_4     share of a continuation's 4-grams that repeat an earlier 4-gram of it,
                1 - unique / all (Welleck et al. 2020); mean over prompts
  rep_l         share of continuation tokens found among the `generate.rep_window` tokens
                before them (the prompt included); mean over prompts
  distinct_1/2  unique n-grams / all n-grams, over all continuations together (Li et al.
                2016); interval: delete-a-group jackknife over prompts
  nll           the model's own teacher-forced NLL per token of the continuations, given
                their prompts (naive p, also for amplified samples); ratio of sums,
                bootstrap interval over prompts
  tok_s         new-token slots (prompts x new_tokens) per second, after a warm-up call
  success       the testbed's own figures: path_star `goal` (the path reaches the goal);
                tsp `valid` (a tour of every city) and `gap` (its optimality gap); rhyme
                `rhymed` (the second line ends in a rhyme of the first line's colour)

Means over prompts carry a 95% t-interval. Writes workdir/generate/report.json,
table.md and seq_rep_vs_nll.png (report.py).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from etils import epath
from ml_collections import ConfigDict
from tqdm import tqdm

from lookahead_jax import config as config_lib
from lookahead_jax import decoding, editing, report, stats
from lookahead_jax import lookahead as lookahead_lib
from lookahead_jax import model as model_lib
from lookahead_jax import settings as settings_lib
from lookahead_jax import state as state_lib
from lookahead_jax.config import ConfigError
from lookahead_jax.data import builders, pipeline, registry
from lookahead_jax.settings import Settings

# `lookahead-jax decode`'s flags (`decode`'s parameters of these names)
flags.DEFINE_multi_string("prompt", ["A poem:\n"], "decode: prompt text (repeatable).")
flags.DEFINE_enum(
    "sampler", "greedy", [*config_lib.SAMPLERS, *editing.METHODS],
    "decode: method; amplified samples from the mixture of p and the config's lookahead q; "
    "edit (Gibbs-style resampling of spans) and ga (a genetic algorithm) edit the text after "
    "the prompt with a masked model's bidirectional mode (editing.py).")
flags.DEFINE_integer("max_new_tokens", 64, "decode: tokens to generate.")
flags.DEFINE_float("temperature", 1.0, "decode --sampler=sample, edit, ga: temperature.")
flags.DEFINE_integer("top_k", 0, "decode --sampler=sample: top-k (0: all).")
flags.DEFINE_float("top_p", 1.0, "decode --sampler=sample: nucleus mass (1: all).")
flags.DEFINE_integer("beams", 4, "decode --sampler=beam: beam width.")
flags.DEFINE_integer("rounds", 8, "decode --sampler=edit, ga: rounds after the fill.")
flags.DEFINE_integer("span", 1, "decode --sampler=edit, ga: tokens resampled per move.")
flags.DEFINE_integer("population", 16, "decode --sampler=ga: texts per round.")

REFERENCE = "held_out"  # the row of the true continuations
JACKKNIFE_GROUPS = 16


# ----------------------------------------------------------------------------- text figures


def ngrams(tokens: Sequence[int], n: int) -> list[tuple[int, ...]]:
  return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def seq_rep(tokens: Sequence[int], n: int = 4) -> float:
  """1 - unique / all n-grams of one continuation (NaN when it has none)."""
  grams = ngrams(tokens, n)
  return 1.0 - len(set(grams)) / len(grams) if grams else float("nan")


def rep_l(context: Sequence[int], tokens: Sequence[int], window: int) -> float:
  """Share of `tokens` found among the `window` tokens before each (context first)."""
  seq = list(context) + list(tokens)
  start = len(context)
  hits = [seq[i] in seq[max(0, i - window):i] for i in range(start, len(seq))]
  return float(np.mean(hits)) if hits else float("nan")


def distinct(continuations: Sequence[Sequence[int]], n: int) -> float:
  """Unique n-grams / all n-grams over all continuations together (NaN without any)."""
  grams = [g for c in continuations for g in ngrams(c, n)]
  return len(set(grams)) / len(grams) if grams else float("nan")


def continuation(row: Sequence[int], eod_id: int, pad_id: int) -> list[int]:
  """The generated tokens before the first EOD (or padding)."""
  out = []
  for t in map(int, row):
    if t in (eod_id, pad_id):
      break
    out.append(t)
  return out


# ----------------------------------------------------------------------------- prompts


def prompts(settings: Settings) -> dict[str, Any]:
  """The report's prompts from eval.test_split: {"prompts": [EOD] + prompt ids,
  "references": the held-out continuations, "records": the documents (for the judges)}.

  Raises ConfigError when the split does not exist or gives no prompt.
  """
  d, g, tok = settings.data, settings.generate, settings.tokenizer
  split = settings.eval.test_split
  testbed = registry.get(d.name)
  try:
    records = builders.data_source(d.name, split, d.data_dir, **d.options)
  except ValueError as e:
    raise ConfigError(f"eval.test_split={split!r}: {e}; the report needs a "
                      "held-out split (set eval.test_split)") from None
  to_ids = pipeline.document_fn(d.name, tok, d.text_key)
  out: dict[str, list] = {"prompts": [], "references": [], "records": []}
  for i in range(len(records)):
    if len(out["prompts"]) == g.prompts:
      break
    if testbed is not None and testbed.prompt is not None:  # the testbed's own prompt
      found = testbed.prompt(tok, records[i])
      if found is None:
        continue
      ids, cut = found
    else:
      ids = to_ids(records[i])[0].tolist()
      cut = tok.prompt_length(ids) if registry.own_vocabulary(d.name) else g.prompt_tokens
    if len(ids) <= cut:
      continue
    out["prompts"].append([tok.eod_id] + ids[:cut])
    out["references"].append(ids[cut:cut + g.new_tokens])
    out["records"].append(records[i])
  if not out["prompts"]:
    raise ConfigError(f"eval.test_split={split!r} has no document longer "
                      f"than a prompt; lower generate.prompt_tokens={g.prompt_tokens}")
  return out


# ----------------------------------------------------------------------------- samplers


def continue_prompts(sampler: str, params, tokens, lengths, rng, new_tokens: int, *,
                     settings: Settings, beams: int, temperature: float, top_k: int = 0,
                     top_p: float = 1.0) -> jax.Array:
  """Continuations [b, new_tokens] of left-padded prompts [b, P] (lengths [b]) by one of
  `lookahead.SAMPLERS`; after a row's EOD, padding. `decode` prints these."""
  tok = settings.tokenizer
  kwargs = dict(config=settings.model, max_new_tokens=new_tokens, pad_id=tok.pad_id)
  if sampler == "beam":
    return decoding.beam_search(params, tokens, lengths, beam_size=beams, eos_id=tok.eod_id,
                                **kwargs).sequences[:, 0]
  if sampler == "amplified":
    mix = settings.mixture
    return lookahead_lib.sample_amplified(
        params, tokens, rng, lengths, mix.temperature, mix.lam, mix.beta,
        lookahead=settings.lookahead, scheme=mix.scheme, mixture=mix.mixture, **kwargs)
  return decoding.generate(params, tokens, rng, lengths,
                           0.0 if sampler == "greedy" else temperature, top_k, top_p,
                           eos_id=tok.eod_id, **kwargs)


@functools.partial(jax.jit, static_argnames=("config",))
def _nll_sums(params, tokens, starts, stops, *, config: model_lib.Config):
  """tokens [b, T] right-padded; per row the NLL sum of tokens[starts:stops] given the rest."""
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
  logits, _ = model_lib.forward(params, tokens, positions, config=config)
  log_p = lookahead_lib.token_log_prob(jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32)),
                                       tokens[:, 1:])
  t = jnp.arange(1, tokens.shape[1])
  scored = (t >= starts[:, None]) & (t < stops[:, None])
  return -jnp.sum(jnp.where(scored, log_p, 0.0), axis=1)


def nll(params, prompts: list[list[int]], conts: list[list[int]], *, settings: Settings,
        batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(NLL sums [n], token counts [n]) of each continuation given its prompt, teacher forced."""
  width, pad = settings.model.max_len, settings.tokenizer.pad_id
  sums = []
  for i in range(0, len(prompts), batch_size):
    rows = [p + c for p, c in zip(prompts[i:i + batch_size], conts[i:i + batch_size])]
    starts = [len(p) for p in prompts[i:i + batch_size]]
    real = len(rows)
    rows += [rows[0]] * (batch_size - real)  # one compiled shape
    starts += [starts[0]] * (batch_size - real)
    tokens = np.full((batch_size, width), pad, np.int32)
    for r, ids in enumerate(rows):
      tokens[r, :len(ids)] = ids
    out = _nll_sums(params, jnp.asarray(tokens), jnp.asarray(starts, np.int32),
                    jnp.asarray([len(r) for r in rows], np.int32), config=settings.model)
    sums.append(np.asarray(out)[:real])
  return np.concatenate(sums).astype(np.float64), np.asarray([len(c) for c in conts], np.float64)


# ----------------------------------------------------------------------------- the report


def _mean(values) -> dict[str, Any]:
  mean, lo, hi = stats.t_interval(values)
  return {"mean": mean, "ci": [lo, hi]}


def figures(prompts_: list[list[int]], conts: list[list[int]], sums: np.ndarray,
            counts: np.ndarray, window: int, bootstrap: int, seed: int) -> dict[str, Any]:
  """The text figures of the module docstring for one sampler's continuations."""
  weights = stats.resample_counts(len(conts), bootstrap, seed)
  lo, hi = stats.bootstrap_ratio(sums, counts, weights)
  out = {"seq_rep_4": _mean([seq_rep(c, 4) for c in conts]),
         "rep_l": _mean([rep_l(p, c, window) for p, c in zip(prompts_, conts)]),
         "nll": {"mean": float(sums.sum() / max(counts.sum(), 1)), "ci": [float(lo), float(hi)]},
         "length": _mean([len(c) for c in conts])}
  for n in (1, 2):
    est, lo, hi = stats.jackknife(lambda idx, n=n: distinct([conts[i] for i in idx], n),
                                  len(conts), JACKKNIFE_GROUPS)
    out[f"distinct_{n}"] = {"mean": est, "ci": [max(lo, 0.0), min(hi, 1.0)]}  # a share
  return out


def run(params, found: dict[str, Any], settings: Settings, workdir: str) -> dict[str, Any]:
  """The report of the module docstring on the prompts `found` (from `prompts`); written
  to workdir/generate (process 0)."""
  g, tok, testbed = settings.generate, settings.tokenizer, registry.get(settings.data.name)
  ids = found["prompts"]
  tokens, lengths = decoding.left_pad(ids, tok.pad_id)
  new_tokens = min(g.new_tokens, settings.model.max_len - tokens.shape[1])
  if new_tokens < 1:
    raise ConfigError(f"the longest prompt has {tokens.shape[1]} tokens, which leaves no room "
                      f"in model.max_len={settings.model.max_len}; lower generate.prompt_tokens")
  n, b = len(ids), g.batch_size
  pad = (-n) % b  # whole batches: one compiled shape per sampler
  tokens = np.concatenate([tokens, np.repeat(tokens[:1], pad, 0)])
  lengths = np.concatenate([lengths, np.repeat(lengths[:1], pad, 0)])
  rows: dict[str, dict[str, Any]] = {}
  samples: dict[str, list[str]] = {}
  refs = [r[:new_tokens] for r in found["references"]]
  for sampler in [REFERENCE, *g.samplers]:
    if sampler == REFERENCE:
      conts, seconds = refs, None
    else:
      call = functools.partial(continue_prompts, sampler, params, new_tokens=new_tokens,
                               settings=settings, beams=g.beams,
                               temperature=g.temperature, top_p=g.top_p)
      key = jax.random.key(g.seed)
      jax.block_until_ready(call(tokens[:b], lengths[:b], key))  # compiles
      start, out = time.perf_counter(), []
      for i in tqdm(range(0, len(tokens), b), desc=sampler, unit="batch",
                    disable=jax.process_index() != 0):
        out.append(np.asarray(call(tokens[i:i + b], lengths[i:i + b], jax.random.fold_in(key, i))))
      seconds = time.perf_counter() - start
      conts = [continuation(row, tok.eod_id, tok.pad_id) for row in np.concatenate(out)[:n]]
    sums, counts = nll(params, ids, conts, settings=settings, batch_size=b)
    row = figures(ids, conts, sums, counts, g.rep_window, settings.eval.bootstrap,
                  settings.eval.seed)
    if seconds is not None:
      row["tok_s"] = len(tokens) * new_tokens / seconds
    if testbed is not None and testbed.judge is not None:  # the testbed's own success
      for key, values in testbed.judge(tok, found["records"], conts).items():
        row[key] = _mean(values)
    rows[sampler] = row
    samples[sampler] = [tok.decode(c) for c in conts[:3]]
  out = {"rows": rows, "samples": samples, "prompts": n, "new_tokens": new_tokens,
         "prompt_texts": [tok.decode(p[1:]) for p in ids[:3]], "dataset": settings.data.name,
         "judge_columns": [list(c) for c in (testbed.judge_columns if testbed else ())]}
  if jax.process_index() == 0:
    report.write_generation(out, epath.Path(workdir) / "generate")
  return out


def command(workdir: str, config: ConfigDict) -> None:
  """`lookahead-jax generate-report`: prints the report's table (`run` on the workdir's
  parameters) and where it was written."""
  settings = settings_lib.prepare_and_validate(config)
  found = prompts(settings)  # a missing test split stops here
  params, _ = state_lib.load_params(settings, workdir)
  gen = run(params, found, settings, workdir)
  if jax.process_index() == 0:
    print(report.generation_table(gen))
    print(f"command: {' '.join(sys.argv)}\nwritten to {os.path.join(workdir, 'generate')}")


def decode(workdir: str, config: ConfigDict, prompt: list[str], sampler: str,
           max_new_tokens: int, temperature: float, top_k: int, top_p: float, beams: int,
           rounds: int, span: int, population: int) -> None:
  """`lookahead-jax decode`: prints a continuation of each text of `prompt` by `sampler`
  (`continue_prompts`, or editing.METHODS with a masked model) on the workdir's parameters
  (state_lib.load_params)."""
  settings = settings_lib.prepare_and_validate(config)
  model_cfg, tokenizer = settings.model, settings.tokenizer
  if sampler in editing.METHODS:
    _check_editing(settings, sampler, rounds, span, population)
  params, _ = state_lib.load_params(settings, workdir)
  ids = [[tokenizer.eod_id] + tokenizer.encode(text) for text in prompt]
  width = max(map(len, ids))
  new_tokens = min(max_new_tokens, model_cfg.max_len - width)
  if new_tokens < 1:
    raise ConfigError(f"--prompt: the longest prompt has {width} tokens, which leaves no room "
                      f"in model.max_len={model_cfg.max_len}; shorten it")
  tokens, lengths = decoding.left_pad(ids, tokenizer.pad_id)
  if sampler in editing.METHODS:
    editing.print_edits(params, tokenizer, model_cfg, prompt, ids, new_tokens,
                        jax.random.key(settings.seed), method=sampler, rounds=rounds, span=span,
                        temperature=temperature, population=population)
    return
  out = continue_prompts(sampler, params, tokens, lengths, jax.random.key(settings.seed),
                         new_tokens, settings=settings, beams=beams,
                         temperature=temperature, top_k=top_k, top_p=top_p)
  for text, row in zip(prompt, np.asarray(out)):
    print(f"--- {sampler}, {text!r}:\n{text}{tokenizer.decode(row.tolist())}")


def _check_editing(settings: Settings, sampler: str, rounds: int, span: int,
                   population: int) -> None:
  """decode --sampler=edit, ga: a model with [MASK] and sensible flags (one-line errors)."""
  if settings.model.vocab_size <= settings.tokenizer.mask_id or span < 1 or rounds < 0:
    raise ConfigError(
        f"--sampler={sampler} needs a model with [MASK] (model.vocab_size > "
        f"{settings.tokenizer.mask_id}, trained with objective.kind='spectrum'), --span >= 1 "
        "and --rounds >= 0")
  if sampler == "ga" and population < 2:
    raise ConfigError(f"--population={population}: give at least 2")
