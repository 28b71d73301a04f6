"""TSP of 5-10 cities learned from nearest-neighbour tours first, then optimal ones.

    lookahead-jax train --config=configs/experiments/tsp.py --workdir=runs/tsp
    lookahead-jax train --config=configs/experiments/tsp.py:mix --workdir=runs/tsp_mix
    C=configs/experiments/tsp.py
    lookahead-jax compare --configs=$C:none,$C:distill,$C:v3_balance \
        --workdir=runs/stunting_tsp --records=results/tsp --seeds=3

Data (data/tsp.py, prepared on first use, ~3 minutes): 100k training, 500 validation and
1,000 test instances per city count 5..10 on a 64x64 grid, each kept only where the
nearest-neighbour tour is not optimal, with its exact tour (Held-Karp); the training and
validation instances also with their nearest-neighbour tour (train_nearest_n{n}). Each
city is written as its x token, its y token and its index token, then the tour as city
indices from city 0; the loss scores the tour only (answer_only). The model reads the
coordinates as numbers too (model.numeric_features).

Curriculum (every mode but `mix`, STAGES): the nearest-neighbour tours of 5 cities, then
one more city count each twelfth of the steps, then the optimal tours of the whole mix for
the second half. With the optimal tours alone the model never reads the coordinates (it
stays at an index prior); the greedy rule's local choices teach it to. `mix`
(MIX_STAGES): the nearest-neighbour tours of all counts for the first half, then the
same optimal stage: the comparison over city counts the source asks for.

The evaluation prints, per city count, the mean optimality gap with 95% intervals of the
model's greedy, beam (4), amplified and MCTS (K 4, H 4, 12 model calls a step) tours beside
nearest neighbour, farthest and random insertion on the same 1,000 test instances, and G
of beam lookahead (B 4, H 4) on the marked tour tokens (the cities chosen while more than
one is left).

What the run shows (docs/results.md "tsp"; record results/tsp/none/seed_0): 2,182 s of
training alone on the 2 cores (0.67 s a step, 738k instances seen), then 7 minutes of
evaluation. Greedy gaps 3.55% (5 cities) to 34.9% (10), below nearest neighbour's at 5
and 6 cities (7.09%, 8.27%) and above it from 7 on (12.1% at 10); farthest insertion
0.10-0.67%; beam below greedy at every count; G on the marked tokens +0.0003 [-0.0007,
+0.0014]; the validation loss was still falling at the end. `:distill` (record
results/tsp/distill/seed_0; 1.65 s a step, 94 minutes of training): greedy gaps 3.18% to
20.0%, test NLL 0.4119 against 0.5195, G +0.0000 (both sides fitted to lam 0).
`:v3_balance` (record results/tsp/v3_balance/seed_0; 1.65 s a step, 86 minutes of training
on an AMD EPYC): greedy gaps 3.53% to 32.6%, test NLL 0.5212, G on the marked tokens
-0.0002 [-0.0013, +0.0009]: where the baseline lands. MCTS decoding on it: 3.46% to 36.3%,
no better than greedy.
"""

from lookahead_jax import config as config_lib

EXPERIMENTS = config_lib.STUNTING_MODES
LEVELS = (5, 6, 7, 8, 9, 10)


def _splits(prefix: str, levels) -> str:
  return "+".join(f"{prefix}_n{n}" for n in levels)


# The curriculum: the nearest-neighbour tours of 5 cities, then one more city count at a
# time up to 10; then the optimal tours of the whole mix for the second half of the run.
STAGES = tuple(_splits("train_nearest", LEVELS[:k]) for k in range(1, len(LEVELS) + 1)) + (
    "train",)
# `mix`: the same two targets, each on the whole mix of city counts from its start.
MIX_STAGES = (_splits("train_nearest", LEVELS), "train")


def get_config(mode: str = "none"):
  """A stunting mode trained on the curriculum, or "mix": the baseline without it."""
  mix = mode == "mix"
  mode = "none" if mix else mode
  config = config_lib.base_config()
  config.data.name = "tsp"
  config.data.seq_len = 64  # an instance of n cities is 4n + 1 tokens (+ its EOD): 22-42
  config.data.answer_only = True  # the coordinates are random: no loss on them

  config.model.vocab_size = 141  # 3 symbols + 64 x + 64 y + 10 city tokens
  config.model.num_layers = 4
  config.model.d_model = 128
  config.model.num_heads = 4
  config.model.numeric_features = 8  # coordinates read as numbers (Fourier features)

  config.lookahead.width = 4
  config.lookahead.horizon = 4
  config.lookahead.chunk = 8

  config.train.steps = 3000
  config.train.global_batch = 128  # rows of 64 tokens: ~260 instances of the mix a step
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 100
  config.train.log_every = 25
  config.train.val_every = 150
  config.train.checkpoint_every = 250

  stages = MIX_STAGES if mix else STAGES
  config.data.curriculum = stages
  # The optimal tours for the second half of the run; the nearest-neighbour stages share
  # the first half.
  config.data.curriculum_steps = config.train.get_ref("steps") // (2 * (len(stages) - 1))

  config = config_lib.experiment(config, mode)
  config.probes.enabled = False
  config.monitor.dev_width = 8
  config.eval.at_end = True
  config.eval.task_instances = 1000  # per city count
  config.eval.batch_size = 32
  config.eval.max_batches = 16  # 512 rows of each split for G
  config.eval.kinds = ("beam",)
  config.eval.widths = (4,)
  config.eval.horizons = (4,)
  config.eval.schemes = ("sum",)
  return config
