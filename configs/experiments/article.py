"""Stunting on the article testbed ("It is an elephant."): baseline, each mode, myopic.

    lookahead-jax compare --configs=configs/experiments/article.py --workdir=runs/stunting_article
    lookahead-jax train --config=configs/experiments/article.py:v1_token --workdir=runs/a_v1

The byte after "a" ("n" or a space) must anticipate the noun, whose first letter lies at
most three bytes further: inside a 4-token byte-level lookahead. A couple of minutes per
run on a 2-core CPU.
"""

from lookahead_jax import config as config_lib

EXPERIMENTS = config_lib.STUNTING_MODES


def get_config(mode: str = "none"):
  config = config_lib.base_config()
  config.data.name = "article"
  config.data.options.train_size = 20_000
  config.data.options.validation_size = 1_000
  config.data.options.test_size = 1_000
  config.data.seq_len = 96

  config.lookahead.width = 4
  config.lookahead.horizon = 4
  config.lookahead.chunk = 32

  config.model.vocab_size = 258  # bytes + pad + end of document
  config.model.num_layers = 2
  config.model.d_model = 128
  config.model.num_heads = 4

  config.train.steps = 300
  config.train.global_batch = 16
  config.train.learning_rate = 3e-3
  config.train.warmup_steps = 30
  config.train.log_every = 25
  config.train.val_every = 0
  config.train.checkpoint_every = 100

  config.monitor.dev_width = 8
  return config_lib.experiment(config, mode)
