"""Stunting on the path-star testbed (Bachmann & Nagarajan 2024): baseline, each mode.

    lookahead-jax train --config=configs/experiments/path_star.py:none --workdir=runs/ps_none \
        --config.eval.at_end=True
    lookahead-jax compare --configs=configs/experiments/path_star.py --workdir=runs/stunting_ps \
        --seeds=3

Star graphs of degree 2 over 20 node labels, arms of 2-4 nodes (`vary_lengths`, so the
end of the path cannot be placed by counting); the goal is any node of its arm from the
second on (`goal_anywhere`), so only "end after the goal" predicts the end-of-path token
(not "end at a leaf"). The prefix lists the shuffled edges, then source and goal, then
the path and an end-of-path token, in the testbed's own 26-token vocabulary
(data/path_star.py). The loss (and every evaluation) scores the path only
(`data.answer_only`): the edge list is random. The token that needs lookahead is the
first node after the source: a model that has not learned the search is right half of
the time. Lookahead from the source needs H = 5 tokens (up to four nodes of the wrong
arm, then the token after its leaf, which no training path shows) to tell the goal's
arm from the other. The evaluation adds the first-node and whole-path accuracy of greedy
and beam decoding and the teacher-forced accuracy at each step of the path.

Chosen for: of the settings tried on 2 cores (README "Results"), the one whose baseline
learned most of the path (whole-path accuracy 0.30 after 2000 steps, against 0.07 with
fixed arm lengths and batch 32 after 5000). It still does not learn the edge look-up
well enough for lookahead to help (G about 0). About 35 minutes of a 2-core CPU per
baseline run; the stunted modes cost several times more.
"""

from lookahead_jax import config as config_lib

EXPERIMENTS = config_lib.STUNTING_MODES


def get_config(mode: str = "none"):
  config = config_lib.base_config()
  config.data.name = "path_star"
  config.data.options.update(degree=2, path_length=5, num_nodes=20, vary_lengths=True,
                             goal_anywhere=True, train_size=50_000, validation_size=500,
                             test_size=500)
  config.data.seq_len = 48  # an example is 34 tokens (+ its EOD)
  config.data.answer_only = True  # no loss on the random edge list

  config.lookahead.width = 4
  config.lookahead.horizon = 5  # n_1 .. the leaf of the wrong arm, then one token past it
  config.lookahead.chunk = 48

  config.model.vocab_size = 26  # 6 symbols + 20 node labels
  config.model.num_layers = 2
  config.model.d_model = 128
  config.model.num_heads = 4

  config.train.steps = 2000
  config.train.global_batch = 128
  config.train.learning_rate = 2e-3
  config.train.warmup_steps = 100
  config.train.log_every = 50
  config.train.val_every = 0
  config.train.checkpoint_every = 500

  config.stunting.dev_width = 8
  config.eval.widths = (2, 4)
  config.eval.horizons = (1, 3, 5)
  config.eval.tsp_instances = 500  # graphs decoded for the path accuracies
  return config_lib.experiment(config, mode)
