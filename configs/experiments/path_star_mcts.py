"""MCTS lookahead on the default path-star run (docs/design.md section 10): G of MCTS
beside beam at equal model calls, and AlphaZero-style policy improvement (distill toward
the search's improved policy).

    lookahead-jax train --config=configs/experiments/path_star_mcts.py:none --workdir=runs/ps_mcts
    lookahead-jax train --config=configs/experiments/path_star_mcts.py:distill \
        --workdir=runs/ps_mcts_distill
    lookahead-jax train --config=configs/experiments/path_star_mcts.py:ida \
        --workdir=runs/ps_mcts_ida
    lookahead-jax compare --configs=configs/experiments/path_star_mcts.py \
        --workdir=runs/compare_ps_mcts --seeds=3

The graphs, model and training of configs/default.py (degree 2, arms of 2-5 nodes, a
2-layer model, 2,000 steps). The lookahead is MCTS (mcts.py): two children a node (one
per arm at the first step), a tree 7 tokens deep (H = 8, past the longest arm's leaf),
14 simulations (K(H-1): the model calls of the width-2 beam it is compared with), q the
root's improved policy (Gumbel MuZero). The evaluation scores beam and MCTS on the same
test graphs, each against the best horizon-1 sharpening (the control is the same for
both); `--config.lookahead.policy=visits` scores the visit distribution instead.

Runs (EXPERIMENTS): "none", the baseline (MCTS only in the evaluation and as the
monitor's stunting lookahead, rewarded by log-probabilities); "distill", the policy
trained toward the mixture of p and q_MCTS at every answer token (loss + KL(q~_MCTS ||
p)): AlphaZero-style improvement with the search as the teacher; its G over training (the
monitor's, beam as the dev lookahead) shows whether the search is being learned inside.
"ida", distill with the value and is-done heads trained beside the policy (heads.py): the
value toward the task's return of the model's own greedy H-token continuation from each
answer token, the done head toward the answer's end; the search values its leaves and
ends its paths with them, so the teacher improves as the heads learn.

distill and ida reward the search with the task's return (`lookahead.reward = "task"`,
mcts.py): a path that ends earns 1 when the answer, its tokens so far and the path up to
END_PATH, walks the prompt's edges from the source to the goal, else 0; a step earns
nothing, and without a value head (distill) an unfinished leaf is worth 0. Why: rewarded
by the model's own log-probabilities, the search only amplifies what the policy already
believes, and three IDA runs trained toward it learned to end the path at its first step
(first-step accuracy 0.0-0.016 against the baseline's 0.52, docs/results.md, MCTS). The
tree (H - 1 = 7 tokens) holds the longest answer, max_arm = 5 edges and END_PATH, so
every search can reach an ending. The evaluation's MCTS rewards by the return too (its
beam, the monitor's dev beam and the baseline's search by log-probabilities).
Cost: the distill step runs the search at every answer token, about 9 s a step on a
2-core CPU shared at a load average of 10 (docs/results.md), and ida's also a beam of
the search's width and depth for the value targets (4-10 s a step at a load of 8-10), so the
IDA runs want an accelerator or hours.
"""

from lookahead_jax import config as config_lib

EXPERIMENTS = ("none", "distill", "ida")


def get_config(mode: str = "none"):
  config = config_lib.beside(__file__, "../default.py").get_config()
  config.model.d_model = 128

  # MCTS of the default run's width (children a node) and horizon; simulations and policy
  # at their defaults: K(H-1) = 14 model calls (beam B=2 H=8's), Gumbel MuZero's policy.
  config.lookahead.kind = "mcts"
  config.lookahead.chunk = 32

  config.train.steps = 2000
  config.train.checkpoint_every = 500

  config.eval.at_end = False
  config = config_lib.experiment(config, "distill" if mode == "ida" else mode)
  if mode != "none":
    # Trained toward the search, the search is rewarded by the task's return (module
    # docstring): rewarded by log-probabilities, the policy learned to end the path at its
    # first step (docs/results.md, MCTS). Its tree, H - 1 tokens, holds the longest answer.
    config.lookahead.reward = "task"
    # The beams (the dev lookahead's, the value targets' greedy path) compare paths that
    # end early at their mean log-prob per token over H.
    config.lookahead.length_penalty = 1.0
  config.model.value_head = config.model.done_head = mode == "ida"
  config.monitor.dev_kind = "beam"  # the dev lookahead: beam of the same width and horizon
  config.monitor.dev_width = 2
  config.eval.max_batches = 0  # path_star's figures use every test graph
  config.eval.kinds = ("beam", "mcts")  # the beam it is compared with; its control with them
  return config
