"""Stunting on the path-star testbed where the model learns the choice during training:
does the baseline's lookahead-specific gain G on two-hop choices rise, then fall as the
model learns them itself? Each stunting mode, distill and myopic against it.

    lookahead-jax train --config=configs/experiments/path_star.py:none --workdir=runs/ps_none
    lookahead-jax compare --configs=configs/experiments/path_star.py --workdir=runs/stunting_ps \
        --seeds=3

Star graphs of degree 2 over 20 node labels, both arms of one graph of 2 or 3 nodes (equal
within a graph, so the goal's depth does not tell its arm), the goal any node of its
arm, the first included (`min_goal_depth=1`), each edge one token in the edge list and in the
path (data/path_star.py). Depth-1 goals are the curriculum: the query names the first
step's target, so the model learns those at once, then two-hop choices (a search back,
goal to source, formed inside the model), then three-hop ones. Marks: the first step of
goals at depth >= 2. The lookahead (beam B = 2, one beam per arm) reaches from the first
step past the longest arm's leaf (H = 6); the dev lookahead is SMC (16 particles,
beta 4), of another kind than the stunting lookahead so that its G does not restate it.
Arms of 1-3 nodes are gone: with equal arms only 6,840 distinct graphs have arms of one
node, so the train split could not hold its share of them. The config starts from
configs/default.py (its graphs with longer arms, its lookahead with a longer horizon) and
states what differs.

What the baseline run is expected to show (written before the rerun of the corrected
instrument): depth-1 first steps learned at once; depth-2 first-step accuracy rising
above 1/2 (every no-search rule is 1/2 with equal arms) during the 3,000 steps; whether G
of the dev lookahead on depth-2 first steps, each side fitted on separate held-out
batches, is positive while that accuracy is near 1/2 and falls as it rises, is what the
run measures. The earlier runs' "G rises then falls" was read against an unfitted
control (tau 1, lam 0.9 on both sides) and arms of unequal length.

A 3-layer model: a 2-layer one leaves the two-hop choice at chance for much longer.
About 6 minutes of a 2-core CPU per baseline run. The modes with a lookahead in the
training step run it only at the answer tokens the loss weighs (in chunks of 4).
"""

from lookahead_jax import config as config_lib

EXPERIMENTS = config_lib.STUNTING_MODES


def get_config(mode: str = "none"):
  config = config_lib.beside(__file__, "../default.py").get_config()
  config.data.options.update(max_arm=3, min_goal_depth=1, train_size=100_000,
                             validation_size=1000, test_size=1000)
  # The longest example is 14 tokens (+ its EOD); rows of data.seq_len 32 pack 2-3.

  config.model.num_layers = 3
  config.model.d_model = 128

  config.lookahead.horizon = 6  # the first step, up to 2 more down an arm, 3 past its leaf
  config.lookahead.chunk = 4  # a row's 6-11 answer tokens run in 2-3 chunks (the others not)

  config.train.steps = 3000
  config.train.global_batch = 48
  config.train.val_batches = 8  # the schema's (default.py: 4)
  config.train.checkpoint_every = 500

  config.eval.at_end = False
  config = config_lib.experiment(config, mode)
  config.monitor.batches = 4
  # The dev lookahead differs from the stunting one (beam) in kind: SMC, 16 particles,
  # tempered by beta (a wider beam of the same horizon on a 2-arm graph restates it).
  config.monitor.dev_width = 16
  if mode == "v4":  # stunting with SMC: the dev lookahead is the other kind, a beam of 16
    config.monitor.dev_kind = "beam"
  config.eval.max_batches = 0  # all 1000 test graphs (about 370 of them marked)
  config.eval.horizons = (6,)
  config.eval.mixtures = ("linear", "loglinear")  # the schema's (default.py: linear)
  return config
