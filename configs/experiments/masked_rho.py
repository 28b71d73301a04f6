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
the readout. It starts from configs/experiments/rhyme.py's baseline run (data, tokenizer,
model, schedule); the model has one more embedding, [MASK]; no stunting, no monitoring.
"""

from lookahead_jax import config as config_lib

RHO = {"rho_1": 1.0, "rho_0.5": 0.5, "rho_0.1": 0.1, "bert": 0.0}
EXPERIMENTS = ("rho_1", "rho_0.5", "rho_0.1")


def get_config(mode: str = "rho_1"):
  config = config_lib.beside(__file__, "rhyme.py").get_config("none")
  config.model.vocab_size = 385  # 384 pieces and [MASK]
  config.objective.kind = "spectrum"
  config.objective.rho = RHO[mode]
  config.objective.mask_rate = 0.15
  config.objective.mean_span = 0.0  # tokens masked independently, as in BERT
  config.monitor.every = 0
  return config
