"""Stunting on the TSP testbed (optimal tours of 5-10 cities): baseline, each mode, myopic.

    lookahead-jax compare --configs=configs/experiments/tsp.py --workdir=runs/stunting_tsp
    lookahead-jax train --config=configs/experiments/tsp.py:v3_project --workdir=runs/tsp_v3p

Each example is the cities' coordinates, then the optimal tour (kept only where the
nearest-neighbour tour is not optimal), in the testbed's own 23-token vocabulary. The
comparison adds the validity and optimality gap of greedy and beam-decoded tours. A few
minutes per run on a 2-core CPU.
"""

from lookahead_jax import config as config_lib

EXPERIMENTS = config_lib.STUNTING_MODES


def get_config(mode: str = "none"):
  config = config_lib.base_config()
  config.data.name = "tsp"
  config.data.seq_len = 64  # an instance of n cities is 3n + 1 tokens (+ its EODs)

  config.lookahead.width = 4
  config.lookahead.horizon = 4
  config.lookahead.chunk = 32

  config.model.vocab_size = 23  # the tsp vocabulary for a 10 x 10 grid and 10 cities
  config.model.num_layers = 3
  config.model.d_model = 128
  config.model.num_heads = 4

  config.train.steps = 600
  config.train.global_batch = 16
  config.train.learning_rate = 2e-3
  config.train.warmup_steps = 50
  config.train.log_every = 25
  config.train.val_every = 0
  config.train.checkpoint_every = 200

  config.stunting.dev_width = 8
  config.eval.tsp_instances = 300
  return config_lib.experiment(config, mode)
