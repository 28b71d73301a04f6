"""A small byte-level GPT on the rhyme testbed, then the lookahead evaluation suite; a few
minutes on a 2-core CPU (the default run before path_star; the tests start from it).

    lookahead-jax train --config=configs/rhyme.py --workdir=runs/rhyme

Prints the training summary, then the evaluation table (does beam or SMC lookahead make
the model assign higher probability to held-out poems, on the rhyme words that need
lookahead and on the rest?) and saves its plots and JSON report in runs/rhyme/eval/.

Byte-level tokens; the rhyme builder generates its data locally on first use. Any key
can be overridden, e.g. --config.train.steps=200 --config.model.num_layers=2.
"""

from lookahead_jax import config as config_lib


def get_config():
  config = config_lib.base_config()
  config.data.name = "rhyme"
  config.data.options.train_size = 20_000
  config.data.options.validation_size = 1_000
  config.data.options.test_size = 1_000
  config.data.seq_len = 128

  config.model.vocab_size = 258  # bytes + pad + end of document
  config.model.num_layers = 2
  config.model.d_model = 128
  config.model.num_heads = 4

  config.train.steps = 600
  config.train.global_batch = 16
  config.train.learning_rate = 3e-3
  config.train.warmup_steps = 50
  config.train.weight_decay = 0.1
  config.train.log_every = 25
  config.train.val_every = 200
  config.train.val_batches = 8
  config.train.checkpoint_every = 200

  config.lookahead.chunk = 32  # anchors per vmapped chunk: cache-sized steps on a CPU

  # G on fixed held-out batches ten times during training: runs/rhyme/eval/G_trajectory.png
  config.monitor.every = (config.train.get_ref("steps") + 9) // 10

  # After training: the lookahead gain of beam and SMC lookahead on held-out poems.
  config.eval.at_end = True
  config.eval.max_batches = 8
  config.eval.widths = (2, 4)
  config.eval.horizons = (1, 2, 4)
  config.eval.schemes = ("sum",)
  return config
