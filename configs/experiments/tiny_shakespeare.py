"""Stunting on tiny Shakespeare (real text, bytes): baseline, each mode, myopic.

    lookahead-jax compare --configs=configs/experiments/tiny_shakespeare.py \
        --workdir=runs/stunting_ts
    lookahead-jax train --config=configs/experiments/tiny_shakespeare.py:v2_penalty \
        --workdir=runs/ts_v2

Reads the Tiny Shakespeare text shipped with the package (config_lib.TINY_SHAKESPEARE;
another file with --config.data.options.paths="('/path/input.txt',)") through the
text_files builder.
Real text has no "needs lookahead" mark: the comparison reports the gains over all tokens.
Tens of minutes per run on a 2-core CPU; minutes on a GPU.
"""

from lookahead_jax import config as config_lib

EXPERIMENTS = config_lib.STUNTING_MODES


def get_config(mode: str = "none"):
  config = config_lib.base_config()
  config.data.name = "text_files"
  config.data.options.paths = (config_lib.TINY_SHAKESPEARE,)
  config.data.seq_len = 128

  config.lookahead.width = 4
  config.lookahead.horizon = 4
  config.lookahead.chunk = 32

  config.model.vocab_size = 258  # bytes + pad + end of document
  config.model.num_layers = 4
  config.model.d_model = 192
  config.model.num_heads = 6

  config.train.steps = 2_000
  config.train.global_batch = 16
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 100
  config.train.log_every = 50
  config.train.val_every = 500
  config.train.checkpoint_every = 500

  config.monitor.dev_width = 8
  return config_lib.experiment(config, mode)
