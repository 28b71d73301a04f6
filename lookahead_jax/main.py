"""Command line: `lookahead-jax COMMAND --workdir=DIR [--config=CONFIG.py] [--config.KEY=VALUE]`.

    lookahead-jax train --config=configs/default.py --workdir=/tmp/run --config.train.steps=200
    lookahead-jax compare --configs=configs/experiments/rhyme.py --workdir=/tmp/cmp --seeds=3

Every command overrides config keys one way, `--config.KEY=VALUE` (compare: in every run it
compares). A bad config stops with a one-line error before anything compiles.
"""

import inspect
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from lookahead_jax import aot, compare, evaluate, sharding, train
from lookahead_jax import config as config_lib
from lookahead_jax import settings as settings_lib
from lookahead_jax.data import builders
from lookahead_jax.evals import generation

# Each command: the function that runs it (its parameters after the workdir are the flags it
# reads; "overrides": the --config.KEY=VALUE left over) and one line of help.
COMMANDS = {
    "train": (train.command, "train (resuming from the newest checkpoint), then eval.at_end"),
    "eval": (evaluate.command, "the evaluation suite on the newest checkpoint"),
    "decode": (generation.decode, "continue each --prompt with --sampler"),
    "generate-report": (generation.command, "the samplers on held-out prompts"),
    "compare": (compare.command, "train and evaluate stunting runs side by side"),
}
_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, tb/.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  name, overrides = (argv[1] if len(argv) > 1 else ""), argv[2:]
  if name not in COMMANDS:
    raise app.UsageError(f"give one command, {' | '.join(COMMANDS)}; got {argv[1:2]}")
  command = COMMANDS[name][0]
  reads = list(inspect.signature(command).parameters)[1:]
  unknown = [arg for arg in overrides
             if "overrides" not in reads or not arg.startswith("--config.")]
  if unknown:
    raise app.UsageError(f"{name} does not take {' '.join(unknown)}")
  if not flags.FLAGS["verbosity"].present:  # orbax logs every save in a dozen INFO lines
    logging.set_verbosity(logging.WARNING)
  aot.use_cache()
  sharding.maybe_initialize_distributed()
  values = {flag: [arg[len("--config."):] for arg in overrides] if flag == "overrides"
            else flags.FLAGS[flag].value for flag in reads}
  try:
    settings_lib.check_workdir(_WORKDIR.value)
    if "config" in reads and _CONFIG.value is None:
      raise config_lib.ConfigError(f"{name} needs --config=CONFIG.py (e.g. configs/default.py)")
    command(_WORKDIR.value, **values)
  except (config_lib.ConfigError, train.NonFiniteError) as e:
    sys.exit(f"error: {e}")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing; the command and compare's --config.KEY=VALUE are left over."""
  try:
    return flags.FLAGS(argv, known_only=True)
  except flags.Error as e:  # a value that does not parse, a missing required flag
    sys.exit(f"error: {e}")
  except (AttributeError, KeyError) as e:  # an unknown key: the schema is locked
    sys.exit(f"error: {config_lib.unknown_key_error(e, argv)}")


def run():
  """The `lookahead-jax` console script."""
  sharding.set_cpu_compiler_flags()  # before JAX starts its backends
  builders.quiet_tfds_notices()
  # absl's --help prints __main__'s docstring and the key flags of the module named argv[0]
  # (the console script's stub): the commands' modules' flags.
  sys.modules["__main__"].__doc__ = "\n".join([
      __doc__, "Commands:", *(f"  {name:<16} {c[1]}" for name, c in COMMANDS.items()),
      "\nStunting modes (--config.stunting.mode):",
      *(f"  {mode:<11} {line}" for mode, line in config_lib.STUNTING_MODES.items())])
  for module in (sys.modules[__name__], generation, compare):
    for flag in flags.FLAGS.get_key_flags_for_module(module):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
