"""Command line: `lookahead-jax COMMAND --config=CONFIG.py --workdir=DIR [--config.KEY=VALUE]`.

    lookahead-jax train --config=configs/default.py --workdir=/tmp/rhyme --config.train.steps=200
    lookahead-jax eval --config=configs/default.py --workdir=/tmp/rhyme
    lookahead-jax decode --config=configs/default.py --workdir=/tmp/rhyme --prompt="Cheddar is"
    lookahead-jax compare --configs=configs/experiments/rhyme.py --workdir=/tmp/stunting --seeds=3

train resumes from the workdir's newest checkpoint (and runs the evaluation suite after
its last step when eval.at_end); eval runs the evaluation suite on it; decode prints
continuations of --prompt (greedy, sampled, beam search, or sampled from the
lookahead-amplified mixture p~ with the config's lookahead section); compare trains
and evaluates several stunting runs and writes one comparison table and plot. A bad
config stops with a one-line error before anything compiles.
"""

import os
import re
import sys

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from lookahead_jax import compare, decoding, evaluate, sharding, train
from lookahead_jax import config as config_lib
from lookahead_jax import lookahead as lookahead_lib

COMMANDS = ("train", "eval", "decode", "compare")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, tb/.")
_PROMPTS = flags.DEFINE_multi_string("prompt", ["A poem:\n"], "decode: prompt text (repeatable).")
_SAMPLER = flags.DEFINE_enum(
    "sampler", "greedy", ["greedy", "sample", "beam", "amplified"],
    "decode: method; amplified samples from the mixture of p and the config's lookahead q.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 64, "decode: tokens to generate.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "decode --sampler=sample: temperature.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "decode --sampler=sample: top-k (0: all).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "decode --sampler=sample: nucleus mass (1: all).")
_BEAMS = flags.DEFINE_integer("beams", 4, "decode --sampler=beam: beam width.")
_CONFIGS = flags.DEFINE_string(
    "configs", None, "compare: comma-separated configs, path.py:ARG for one run or path.py for "
    "every run in the file's EXPERIMENTS.")
_SET = flags.DEFINE_multi_string("set", [], "compare: KEY=VALUE applied to every config.")
_SEEDS = flags.DEFINE_integer("seeds", 1, "compare: seeds per run (config.seed, +1, ...).")
flags.mark_flags_as_required(["workdir"])


def decode(config, settings: config_lib.Settings, workdir: str) -> None:
  """Prints a continuation of each --prompt (parameters: train.load_params)."""
  model_cfg, tokenizer = settings.model, settings.tokenizer
  params, _ = train.load_params(config, settings, workdir)
  prompts = [[tokenizer.eod_id] + tokenizer.encode(text) for text in _PROMPTS.value]
  width = max(map(len, prompts))
  new_tokens = min(_MAX_NEW_TOKENS.value, model_cfg.max_len - width)
  if new_tokens < 1:
    raise config_lib.ConfigError(f"--prompt: the longest prompt has {width} tokens, which "
                                 f"leaves no room in model.max_len={model_cfg.max_len}; shorten it")
  tokens = np.full((len(prompts), width), tokenizer.pad_id, np.int32)
  for row, ids in enumerate(prompts):
    tokens[row, width - len(ids):] = ids  # left-padded
  lengths = np.array(list(map(len, prompts)), np.int32)
  kwargs = dict(config=model_cfg, max_new_tokens=new_tokens, eos_id=tokenizer.eod_id,
                pad_id=tokenizer.pad_id)
  if _SAMPLER.value == "beam":
    out = decoding.beam_search(params, tokens, lengths, beam_size=_BEAMS.value,
                               **kwargs).sequences[:, 0]
  elif _SAMPLER.value == "amplified":
    la = config.lookahead
    out = lookahead_lib.sample_amplified(
        params, tokens, jax.random.key(config.seed), lengths, la.temperature, la.lam, la.beta,
        config=model_cfg, lookahead=settings.lookahead,
        max_new_tokens=new_tokens, scheme=la.scheme, mixture=la.mixture, pad_id=tokenizer.pad_id)
  else:
    temperature = 0.0 if _SAMPLER.value == "greedy" else _TEMPERATURE.value
    out = decoding.generate(params, tokens, jax.random.key(config.seed), lengths, temperature,
                            _TOP_K.value, _TOP_P.value, **kwargs)
  for text, row in zip(_PROMPTS.value, np.asarray(out)):
    print(f"--- {_SAMPLER.value}, {text!r}:\n{text}{tokenizer.decode(row.tolist())}")


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f"give one command, {' | '.join(COMMANDS)}; got {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:  # orbax logs every save in a dozen INFO lines
    logging.set_verbosity(logging.WARNING)
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    # Runs of one shape (seeds, modes of a comparison, a resumed run) compile once.
    jax.config.update("jax_compilation_cache_dir", os.path.join(
        os.path.expanduser("~"), ".cache", "lookahead_jax", "jax_compilation_cache"))
  sharding.maybe_initialize_distributed()
  config, workdir = _CONFIG.value, _WORKDIR.value
  try:
    config_lib.check_workdir(workdir)
    if argv[1] == "compare":
      compare.run(_CONFIGS.value or "", workdir, _SET.value, _SEEDS.value)
      return
    if config is None:
      raise config_lib.ConfigError(f"{argv[1]} needs --config=CONFIG.py (e.g. configs/default.py)")
    settings = config_lib.validate(config)
    if argv[1] == "decode":
      decode(config, settings, workdir)
      return
    if argv[1] == "train":
      summary = train.train_and_evaluate(config, settings, workdir)
      if summary["preempted"] or not config.eval.at_end:
        return
    evaluate.run(config, settings, workdir)
  except (config_lib.ConfigError, train.NonFiniteError) as e:
    sys.exit(f"error: {e}")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing; overriding a key that the config does not have is a one-line error."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:  # a value that does not parse, a missing required flag
    sys.exit(f"error: {e}")
  except (AttributeError, KeyError) as e:  # an unknown key: the schema is locked
    overrides = [arg[len("--config."):].split("=")[0] for arg in argv
                 if arg.startswith("--config.")]
    # config_flags names the missing key first; the locked schema says 'Key "name" ...'
    unknown = re.findall(r'Key "(\w+)"', str(e))[:1] or re.findall(r"\w+", str(e))[:1]
    named = [key for key in overrides if set(unknown) & set(key.split("."))]
    where = (" or ".join(named) if named
             else f"{unknown[0] if unknown else '?'} (in the config file)")
    sys.exit(f"error: unknown config key {where}: the keys and their defaults are in "
             "lookahead_jax/config.py (base_config) and the config file")


def run():
  """The `lookahead-jax` console script."""
  # absl's --help prints __main__'s docstring and the flags of the module named argv[0];
  # the console script's __main__ is a stub, so it gets this module's.
  sys.modules["__main__"].__doc__ = __doc__
  for flag in flags.FLAGS.get_key_flags_for_module(sys.modules[__name__]):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
