"""Default: a small GPT on the path-star testbed, then the lookahead evaluation suite;
3 to 4 minutes on a 2-core CPU (3 min 13 s to 3 min 41 s on a fresh machine, 2.5 min again).

    lookahead-jax train --config=configs/default.py --workdir=runs/default

Star graphs of degree 2 over 20 node labels, both arms of a graph of one length (2-5
nodes, drawn per graph), the goal any node of its arm from the second; each edge is one
token, in the edge list and in the path (data/path_star.py). A 2-layer model learns the
walk (copy the edge that leaves the last edge's target) in a few hundred steps but not
the first step, which needs a search back from the goal: it stays near chance (1/2, as
every rule that picks an arm without a search). Beam lookahead from the first step (one
beam per arm, H = 8: past the longest arm's leaf) is scored against the best horizon-1
sharpening of p, each side fitted on 512 validation graphs, on 2,048 test graphs (G's
interval on the first steps about 0.06 nats wide). What the run shows (three seeds,
docs/results.md): looking ahead beats sharpening there, G +0.320 [+0.223, +0.417] nats,
because this model is a verifier: down a wrong arm it neither ends the path nor goes on
confidently past the leaf, so the beam that reaches the goal scores higher. At d_model
128 it is not, and G is -0.022 [-0.080, +0.036]. The report leads with G, its interval,
the first-step accuracy per goal depth against the no-search rules, the verifier-strength
figures, and saves the trajectory of G over training (runs/default/eval/G_trajectory.png).

Any key can be overridden, e.g. --config.train.steps=1000 --config.model.num_layers=3.
"""

from lookahead_jax import config as config_lib


def get_config():
  config = config_lib.base_config()
  config.data.name = "path_star"
  config.data.options.update(degree=2, num_nodes=20, min_arm=2, max_arm=5, min_goal_depth=2,
                             leaf_goals=True, edge_tokens=True, train_size=50_000,
                             validation_size=512, test_size=2048)
  config.data.seq_len = 32  # the longest example is 20 tokens (+ its EOD); rows pack 1-2
  config.data.answer_only = True  # no loss on the random edge list

  config.model.vocab_size = 426  # 6 symbols + 20 node labels + 400 edge tokens
  config.model.num_layers = 2
  config.model.d_model = 96  # at 128 the model is a weaker verifier (docs/results.md)
  config.model.num_heads = 4

  config.lookahead.width = 2  # one beam per arm
  config.lookahead.horizon = 8  # the first step, up to 4 more down an arm, 3 past its leaf
  config.lookahead.lam = 0.9  # the stunted step's and the amplified sampler's mixture weight
  config.lookahead.length_penalty = 0.0  # a path that reaches its end early is not rescaled
  # Anchors per vmapped chunk: a row's answer tokens run in 1-2 chunks of 8 (the same
  # figures as one chunk of all 32 positions; the monitor's SMC lookahead in half the time).
  config.lookahead.chunk = 8

  config.train.steps = 1500
  config.train.global_batch = 32
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 100
  config.train.log_every = 50
  config.train.val_every = 0  # the validation loss at the end only
  config.train.val_batches = 4
  config.train.checkpoint_every = 0  # at the end (and on SIGTERM) only

  # G on fixed held-out batches four times during training: runs/default/eval/
  # G_trajectory.png and accuracy_trajectory.png
  config.monitor.every = (config.train.get_ref("steps") + 3) // 4
  config.monitor.batches = 2
  # The dev lookahead differs from the stunting one in kind (a wider beam of the same
  # horizon on a 2-arm graph would restate it): SMC, 8 particles, tempered by beta.
  config.monitor.dev_kind = "smc"
  config.monitor.dev_width = 8
  config.lookahead.beta = 4.0

  # After training: G of beam lookahead on the first steps of held-out graphs.
  config.eval.at_end = True
  config.eval.kinds = ("beam",)
  config.eval.widths = (2,)
  config.eval.horizons = (8,)  # its horizon-1 control comes with it
  config.eval.schemes = ("sum",)
  config.eval.mixtures = ("linear",)
  config.eval.batch_size = 32
  return config
