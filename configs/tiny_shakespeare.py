"""Tiny Shakespeare, byte-level: a 4-layer GPT, about an hour on a laptop CPU.

    lookahead-jax train --config=configs/tiny_shakespeare.py --workdir=/tmp/lookahead/shakespeare

reads the Tiny Shakespeare text shipped with the package (config_lib.TINY_SHAKESPEARE; set
another file with --config.data.options.paths=/path/to/input.txt) through the text_files builder,
which cuts it into train/validation/test as TFDS tiny_shakespeare does and into
documents at blank lines. With TFDS tiny_shakespeare prepared as ArrayRecord in the data
dir (one document per split), use it instead:

    lookahead-jax train --config=configs/tiny_shakespeare.py:tfds --workdir=/tmp/lookahead/tfds
"""

from lookahead_jax import config as config_lib


def get_config(source: str = "text_files"):
  """source: "text_files" (a local .txt file) or "tfds" (the prepared TFDS dataset)."""
  config = config_lib.base_config()
  if source == "tfds":
    config.data.name = "tiny_shakespeare"
  elif source == "text_files":
    config.data.name = "text_files"
    config.data.options.paths = (config_lib.TINY_SHAKESPEARE,)
  else:
    raise ValueError(f"configs/tiny_shakespeare.py:{source}: use text_files or tfds")
  config.data.seq_len = 256

  config.model.vocab_size = 258  # bytes + pad + end of document
  config.model.num_layers = 4
  config.model.d_model = 256
  config.model.num_heads = 4
  config.model.dropout = 0.1

  config.train.steps = 5_000
  config.train.global_batch = 32
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 200
  config.train.log_every = 50
  config.train.val_every = 500
  config.train.val_batches = 16
  config.train.checkpoint_every = 500
  return config
