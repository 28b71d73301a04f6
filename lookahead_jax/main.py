"""Command line: `lookahead-jax COMMAND --workdir=DIR [--config=CONFIG.py] [--config.KEY=VALUE]`.

    lookahead-jax train --config=configs/default.py --workdir=/tmp/run --config.train.steps=200
    lookahead-jax compare --configs=configs/experiments/rhyme.py --workdir=/tmp/cmp --seeds=3

Every command overrides config keys one way, `--config.KEY=VALUE` (compare: in every run it
compares). A bad config stops with a one-line error before anything compiles.
"""

import collections
import os
import re
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from lookahead_jax import compare, editing, evaluate, sharding, train
from lookahead_jax import config as config_lib
from lookahead_jax import settings as settings_lib
from lookahead_jax.data import builders
from lookahead_jax.evals import generation

Command = collections.namedtuple("Command", "run flags help")
# Each command: the function that runs it, the flags it reads, one line of help.
COMMANDS = {
    "train": Command(train.command, ("config",), "train, resuming from the workdir's newest "
                     "checkpoint; with eval.at_end, then the evaluation suite"),
    "eval": Command(evaluate.command, ("config",), "the evaluation suite on the workdir's "
                    "newest checkpoint (else the pretrained or fresh parameters)"),
    "decode": Command(generation.decode, (
        "config", "prompt", "sampler", "max_new_tokens", "temperature", "top_k", "top_p",
        "beams", "rounds", "span", "population"), "print a continuation of each --prompt by "
        "--sampler (greedy, sample, beam, amplified: from the lookahead mixture; edit, ga: "
        "editing with a masked model)"),
    "generate-report": Command(generation.command, ("config",), "what each sampler does to "
                               "held-out prompts (evals/generation.py)"),
    "compare": Command(compare.command, ("configs", "overrides", "seeds", "records",
                                         "records_only"),
                       "train and evaluate stunting runs side by side (compare.py)"),
}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, tb/.")
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
flags.DEFINE_string(
    "configs", None, "compare: comma-separated configs, path.py:ARG for one run or path.py for "
    "every run in the file's EXPERIMENTS.")
flags.DEFINE_integer("seeds", 1, "compare: seeds per run (config.seed, +1, ...).")
flags.DEFINE_string(
    "records", "", "compare: the runs' records (committed, e.g. results/path_star): a run "
    "with one is not trained again; the table and plots are written there.")
flags.DEFINE_bool(
    "records_only", False, "compare: tabulate the runs that have a record and train none "
    "(the others are named and left out), e.g. while a comparison's runs are still going.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  name, overrides = (argv[1] if len(argv) > 1 else ""), argv[2:]
  command = COMMANDS.get(name)
  if command is None:
    raise app.UsageError(f"give one command, {' | '.join(COMMANDS)}; got {argv[1:2]}")
  unknown = [arg for arg in overrides
             if "overrides" not in command.flags or not arg.startswith("--config.")]
  if unknown:
    raise app.UsageError(f"{name} does not take {' '.join(unknown)}")
  if not flags.FLAGS["verbosity"].present:  # orbax logs every save in a dozen INFO lines
    logging.set_verbosity(logging.WARNING)
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    # Runs of one shape (seeds, modes of a comparison, a resumed run) compile once.
    jax.config.update("jax_compilation_cache_dir", os.path.join(
        os.path.expanduser("~"), ".cache", "lookahead_jax", "jax_compilation_cache"))
  sharding.maybe_initialize_distributed()
  values = {"overrides": [arg[len("--config."):] for arg in overrides]}
  values.update({flag: flags.FLAGS[flag].value for flag in command.flags if flag not in values})
  try:
    settings_lib.check_workdir(_WORKDIR.value)
    if "config" in command.flags and _CONFIG.value is None:
      raise config_lib.ConfigError(f"{name} needs --config=CONFIG.py (e.g. configs/default.py)")
    command.run(_WORKDIR.value, **{flag: values[flag] for flag in command.flags})
  except (config_lib.ConfigError, train.NonFiniteError) as e:
    sys.exit(f"error: {e}")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing; the command and compare's --config.KEY=VALUE are left over. An
  unknown or renamed config key is a one-line error."""
  try:
    return flags.FLAGS(argv, known_only=True)
  except flags.Error as e:  # a value that does not parse, a missing required flag
    sys.exit(f"error: {e}")
  except (AttributeError, KeyError) as e:  # an unknown key: the schema is locked
    renamed = config_lib.renamed_key_error(e)
    if renamed is not None:
      sys.exit(f"error: {renamed}")
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
  sharding.set_cpu_compiler_flags()  # before JAX starts its backends
  builders.quiet_tfds_notices()
  # absl's --help prints __main__'s docstring and the flags of the module named argv[0];
  # the console script's __main__ is a stub, so it gets this module's.
  sys.modules["__main__"].__doc__ = "\n".join([
      __doc__, "Commands:", *(f"  {name:<16} {c.help}" for name, c in COMMANDS.items()),
      "\nStunting modes (--config.stunting.mode):",
      *(f"  {mode:<11} {line}" for mode, line in config_lib.STUNTING_MODES.items())])
  for flag in flags.FLAGS.get_key_flags_for_module(sys.modules[__name__]):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
