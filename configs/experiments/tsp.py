"""TSP of 5-10 cities, 600k training instances with their optimal tours: baseline and stunting.

    lookahead-jax train --config=configs/experiments/tsp.py --workdir=runs/tsp
    lookahead-jax train --config=configs/experiments/tsp.py:curriculum \
        --workdir=runs/tsp_curriculum
    C=configs/experiments/tsp.py
    lookahead-jax compare --configs=$C:none,$C:curriculum --workdir=runs/tsp_cmp \
        --records=results/tsp
    lookahead-jax compare --configs=$C:none,$C:distill,$C:v3_balance \
        --workdir=runs/stunting_tsp --records=results/tsp --seeds=3

Data (data/tsp.py, prepared on first use): 100k training, 500 validation and 1,000 test
instances per city count 5..10 on a 64x64 grid, each kept only where the nearest-neighbour
tour is not optimal, with its exact tour (Held-Karp). Each city is written as its x
token, its y token and its index token, then the tour as city indices from city 0; the
loss scores the tour only (answer_only). The evaluation prints, per city count, the
mean optimality gap with 95% intervals of the model's greedy, beam (4) and amplified
tours beside nearest neighbour, farthest and random insertion on the same 1,000 test
instances, and G of beam lookahead (B 4, H 4) on the marked tour tokens.

What the baseline run shows (docs/results.md "tsp"; record results/tsp/none/seed_0):
997 s of training on the 2 shared cores (1.16 s a step under load; 59,618 instances)
and about 20 minutes of evaluation (amplified sampling on 6,000 instances most of it).
The model learns the pointer (every greedy tour valid) but not the geometry: greedy gaps
21.6% (5 cities) to 80.9% (10), beam the same, against nearest neighbour's 7.1-12.1%
and farthest insertion's 0.10-0.67%; marked-token accuracy flat at ~0.35 from step 150;
G on the marked tokens -0.00007 [-0.0003, +0.00015]. These settings do not yet learn
the task: it needs many more steps than a 10-minute run gives.
"""

from lookahead_jax import config as config_lib

EXPERIMENTS = config_lib.STUNTING_MODES
# The stages of `tsp.py:curriculum`: 5 cities, then one more city count at a time.
LEVELS = (5, 6, 7, 8, 9, 10)
STAGES = tuple("+".join(f"train_n{n}" for n in LEVELS[:k]) for k in range(1, len(LEVELS))) + (
    "train",)


def get_config(mode: str = "none"):
  """A stunting mode, or "curriculum": the baseline trained on STAGES in turn."""
  schedule = mode == "curriculum"
  mode = "none" if schedule else mode
  config = config_lib.base_config()
  config.data.name = "tsp"
  config.data.seq_len = 64  # an instance of n cities is 4n + 1 tokens (+ its EOD): 22-42
  config.data.answer_only = True  # the coordinates are random: no loss on them

  config.model.vocab_size = 141  # 3 symbols + 64 x + 64 y + 10 city tokens
  config.model.num_layers = 4
  config.model.d_model = 128
  config.model.num_heads = 4

  config.lookahead.width = 4
  config.lookahead.horizon = 4
  config.lookahead.chunk = 8

  config.train.steps = 500  # ~118 instances a step: 59k instances, ~10 min of 2 shared cores
  config.train.global_batch = 64
  config.train.learning_rate = 2e-3
  config.train.warmup_steps = 50
  config.train.log_every = 25
  config.train.val_every = 50
  config.train.checkpoint_every = 100

  if schedule:  # each stage an eighth of the steps; the whole mix the last three eighths
    config.data.curriculum = STAGES
    config.data.curriculum_steps = config.train.get_ref("steps") // 8

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
