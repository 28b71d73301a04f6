"""The mask spectrum on the rhyme testbed: next-token training (rho = 1) against mixes of
next-token and masked (BERT-style) examples, rho = 0.5 and 0.1 (docs/design.md section 8).

    lookahead-jax compare --configs=configs/experiments/masked_rho.py \
        --workdir=runs/masked_rho --seeds=2
    lookahead-jax train --config=configs/experiments/masked_rho.py:bert --workdir=runs/bert

One run per entry of EXPERIMENTS: rho_R trains a share R of the examples as next-token
examples (causal attention) and the rest with 15% of their tokens masked independently
(bidirectional attention), one parameter set. The causal mode of every run is a
next-token model, so the comparison reads its test NLL and G like any GPT's, beside the
pseudo-NLL (every token hidden in turn) and the bidirectional next-token readout (every
future token hidden). `bert` (rho = 0) is not in EXPERIMENTS: its causal mode is never
trained, so its test NLL and G say nothing; train and `eval` it for the pseudo-NLL and
the readout. Data, tokenizer, model and schedule are those of configs/experiments/rhyme.py
(the model has one more embedding, [MASK]); no stunting, no monitoring.
"""

from lookahead_jax import config as config_lib

RHO = {"rho_1": 1.0, "rho_0.5": 0.5, "rho_0.1": 0.1, "bert": 0.0}
EXPERIMENTS = ("rho_1", "rho_0.5", "rho_0.1")


def get_config(mode: str = "rho_1"):
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

  config.model.vocab_size = 385  # 384 pieces and [MASK]
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

  config.objective.kind = "spectrum"
  config.objective.rho = RHO[mode]
  config.objective.mask_rate = 0.15
  config.objective.mean_span = 0.0  # tokens masked independently, as in BERT

  config.monitor.dev_width = 8  # the dev lookahead: SMC with 8 particles
  config = config_lib.experiment(config, "none")
  config.monitor.every = 0
  return config
