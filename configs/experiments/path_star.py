"""Stunting on the path-star testbed (Bachmann & Nagarajan 2024): baseline, each mode.

    lookahead-jax compare --configs=configs/experiments/path_star.py \
        --workdir=runs/stunting_path_star --seeds=3
    lookahead-jax train --config=configs/experiments/path_star.py:v1_token --workdir=runs/ps_v1

Star graphs of degree 2 with arms of 2-4 nodes (lengths vary, so the end of the path is
placed by "this node is the goal", not by a count) over 50 node labels; the prefix lists
the shuffled edges, then source and goal, then the path and an end-of-path token, in the
testbed's own 56-token vocabulary (data/path_star.py). The tokens that need lookahead
are the first node after the source: a model that has not learned the search is right
half of the time. Lookahead from the source needs H = 5 tokens (the first node, up to
three more, the end of path) to reach the token that tells the goal's arm from the
other. The comparison adds the first-node and whole-path accuracy of greedy and beam
decoding. Minutes per run on a 2-core CPU.
"""

from lookahead_jax import config as config_lib

EXPERIMENTS = config_lib.STUNTING_MODES


def get_config(mode: str = "none"):
  config = config_lib.base_config()
  config.data.name = "path_star"
  config.data.options.update(degree=2, path_length=5, num_nodes=50, vary_lengths=True,
                             goal_anywhere=False,
                             train_size=50_000, validation_size=500, test_size=500)
  config.data.seq_len = 48  # an example is at most 35 tokens (+ its EOD)

  config.lookahead.width = 4
  config.lookahead.horizon = 5  # n_1 .. the leaf of a 4-node arm, then the end of path
  config.lookahead.chunk = 48

  config.model.vocab_size = 56  # 6 symbols + 50 node labels
  config.model.num_layers = 2
  config.model.d_model = 128
  config.model.num_heads = 4

  config.train.steps = 2000
  config.train.global_batch = 32
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 100
  config.train.log_every = 50
  config.train.val_every = 0
  config.train.checkpoint_every = 500

  config.stunting.dev_width = 8
  config.eval.widths = (2, 4)
  config.eval.horizons = (1, 3, 5)
  config.eval.tsp_instances = 500  # graphs decoded for the path accuracies
  return config_lib.experiment(config, mode)
