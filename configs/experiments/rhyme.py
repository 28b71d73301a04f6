"""Stunting on the rhyme testbed: the baseline, each stunting mode and myopic training.

    lookahead-jax compare --configs=configs/experiments/rhyme.py --workdir=runs/stunting_rhyme
    lookahead-jax train --config=configs/experiments/rhyme.py:v3_balance --workdir=runs/v3

One run per entry of EXPERIMENTS (the argument after the colon); the runs share data,
tokenizer, model, seed and schedule, so a comparison isolates the stunting mode. Tokens
are SentencePiece pieces trained on the poems (a rhyme lies a few pieces ahead of the
word that must anticipate it, within the lookahead's horizon; with bytes it lies 20-30
tokens ahead). A couple of minutes per run on a 2-core CPU.
"""

from lookahead_jax import config as config_lib

EXPERIMENTS = config_lib.STUNTING_MODES


def get_config(mode: str = "none"):
  config = config_lib.base_config()
  config.data.name = "rhyme"
  config.data.options.train_size = 20_000
  config.data.options.validation_size = 1_000
  config.data.options.test_size = 1_000
  config.data.tokenizer = "sentencepiece:384"
  config.data.seq_len = 64

  config.lookahead.width = 4
  config.lookahead.horizon = 6
  config.lookahead.chunk = 32

  config.model.vocab_size = 384
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

  config.monitor.dev_width = 8  # the dev lookahead: SMC with 8 particles
  return config_lib.experiment(config, mode)
