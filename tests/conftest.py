"""Shared fixtures: tiny models whose compiled functions every test module reuses."""

import gc
import os
import tempfile

# 8 simulated CPU devices for the sharding tests; set before jax initialises its backend.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# One persistent compilation cache for the test workers and the processes tests start
# (the same tiny train step is compiled by many `lookahead-jax` subprocesses).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"lookahead-jax-tests-{os.getuid()}"))
# Every compile goes in, not only those over a second: the many small jitted helpers of
# each process a test starts are then loaded instead of compiled again.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax
import pytest

from lookahead_jax import model as model_lib
from lookahead_jax import sharding

sharding.set_cpu_compiler_flags()  # as every command does, before JAX starts its backends


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drops every compiled program when a test module ends (the next module loads what it
  shares from the persistent cache). XLA:CPU maps each program's code in many small
  pieces, about 1,000 memory maps a train step; a worker that kept the programs of a
  whole run passed the kernel's limit of 65,530 maps (vm.max_map_count) and crashed in
  CI; one module, test_stunting.py, peaks at about 32,000 maps."""
  yield
  jax.clear_caches()
  gc.collect()


@pytest.fixture(scope="session")
def tiny_config():
  """A 2-layer model over a 16-token vocabulary."""
  return model_lib.Config(vocab_size=16, max_len=32, num_layers=2, d_model=32, num_heads=4)


@pytest.fixture(scope="session")
def tiny_params(tiny_config):
  return model_lib.init(tiny_config, jax.random.key(0))


@pytest.fixture(scope="session")
def sharp_config():
  """A 3-token vocabulary, for exhaustive enumeration of continuations."""
  return model_lib.Config(vocab_size=3, max_len=16, num_layers=2, d_model=16, num_heads=2)


@pytest.fixture(scope="session")
def sharp_params(sharp_config):
  """Scaled-up weights: peaked, far from uniform next-token distributions."""
  params = model_lib.init(sharp_config, jax.random.key(1))
  return jax.tree.map(lambda x: 4.0 * x, params)


@pytest.fixture(scope="session")
def forward():
  """`model.forward`, jitted once for the whole session."""
  return jax.jit(model_lib.forward, static_argnames=("config", "myopic", "internals"))


@pytest.fixture(scope="session")
def gpt2_style_dir(tmp_path_factory):
  """A small GPT-2-style tokenizer (byte-level BPE, <|endoftext|>) trained on testbed text.

  The directory holds tokenizer.json and GPT-2's vocab.json + merges.txt.
  """
  import numpy as np
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

  from lookahead_jax.data import article, rhyme

  rng = np.random.default_rng(0)
  corpus = [article.article_document(rng)[0] for _ in range(300)]
  corpus += [rhyme.rhyme_document(rng)[0] for _ in range(300)]
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.post_processor = processors.ByteLevel(trim_offsets=False)
  tok.train_from_iterator(corpus, trainers.BpeTrainer(
      vocab_size=500, special_tokens=["<|endoftext|>"], show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  path = tmp_path_factory.mktemp("gpt2_style")
  tok.save(str(path / "tokenizer.json"))
  tok.model.save(str(path))
  return path


# ----------------------------------------------------------------------------- training

REPO = os.path.join(os.path.dirname(__file__), "..")
RHYME_CONFIG = os.path.join(REPO, "configs", "rhyme.py")
RHYME_TEST_OPTIONS = {"train_size": 2000, "validation_size": 100, "test_size": 100}


def load_config(path, overrides=None, argument=None):
  """A config file's get_config([argument]) with flattened overrides ({"train.steps": 5}).

  `argument` is what follows the path in --config=path:argument.
  """
  from lookahead_jax import config as config_lib

  module = config_lib.load_file(path)
  config = module.get_config() if argument is None else module.get_config(argument)
  config.update_from_flattened_dict(dict(overrides or {}))
  return config


@pytest.fixture(scope="session")
def rhyme_data_dir(tmp_path_factory):
  """A data dir holding a small rhyme dataset (RHYME_TEST_OPTIONS), prepared once."""
  from lookahead_jax.data import builders

  path = tmp_path_factory.mktemp("tfds_rhyme")
  builders.prepare("rhyme", path, **RHYME_TEST_OPTIONS)
  return str(path)


@pytest.fixture(scope="session")
def tiny_run(rhyme_data_dir):
  """Overrides of configs/rhyme.py for a tiny model trained for a few seconds.

  The same dict gives in-process configs (`load_config`) and command-line flags.
  """
  overrides = {
      "data.data_dir": rhyme_data_dir, "data.seq_len": 32,  # model.max_len: 32 + 4
      "model.num_layers": 2, "model.d_model": 32, "model.num_heads": 4,
      "train.global_batch": 8, "train.steps": 8, "train.warmup_steps": 2,
      "train.log_every": 2, "train.val_every": 0, "train.val_batches": 2,
      "train.checkpoint_every": 4,
      "eval.at_end": False,  # tests that evaluate ask for it
      "monitor.every": 0,  # tests that monitor ask for it
  }
  overrides.update({f"data.options.{k}": v for k, v in RHYME_TEST_OPTIONS.items()})
  return overrides


def command(name, workdir, overrides, *extra):
  """`python -m lookahead_jax.main NAME --config=configs/rhyme.py` with the overrides."""
  import sys

  return [sys.executable, "-m", "lookahead_jax.main", name, f"--config={RHYME_CONFIG}",
          f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in overrides.items()), *extra]


PATH_STAR_OPTIONS = {"degree": 2, "min_arm": 1, "max_arm": 3, "min_goal_depth": 1,
                     "num_nodes": 8, "edge_tokens": True, "train_size": 8,
                     "validation_size": 8, "test_size": 24}


def tiny_path_star(data_dir):
  """A base config on small path-star graphs (PATH_STAR_OPTIONS) in `data_dir`, for a
  1-layer model; the test modules add their lookahead and evaluation settings."""
  from lookahead_jax import config as config_lib

  config = config_lib.base_config()
  config.data.name = "path_star"
  config.data.data_dir = str(data_dir)
  config.data.options.update(PATH_STAR_OPTIONS)
  config.model.update(vocab_size=6 + 8 + 64, num_layers=1, d_model=16, num_heads=2)
  config.data.seq_len, config.eval.batch_size, config.train.global_batch = 16, 8, 8
  return config
