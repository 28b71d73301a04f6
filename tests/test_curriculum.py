"""The curriculum: the stages it promises at each step, moving on by accuracy, resuming."""

import os

import numpy as np
import pytest

from lookahead_jax import config as config_lib
from lookahead_jax import settings as settings_lib
from lookahead_jax.data import builders, curriculum, pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_TSP = {"levels": (4, 5, 6), "grid_size": 5, "train_size": 12, "validation_size": 2,
            "test_size": 2}


@pytest.fixture(scope="module")
def make(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  builders.prepare("tsp", data_dir, **TINY_TSP)

  def batches(split):
    return pipeline.make_iterator("tsp", split, seq_len=32, global_batch_size=2,
                                  data_dir=data_dir, options=TINY_TSP, process_index=0,
                                  process_count=1, prefetch=0)

  return batches


def _sizes(batch):
  """City counts of the instances that start in a batch: 4n+2 pairs per instance."""
  sizes = set()
  for seg, pos in zip(batch["segment_ids"], batch["positions"]):
    for s in set(seg[seg > 0].tolist()):
      sizes.add((int(pos[seg == s].max()) + 1 - 2) // 4)
  return sizes


def test_stages_by_steps_yield_the_promised_sizes(make):
  stages = ("train_n4", "train_n5", "train_n4+train_n6")
  it = curriculum.Curriculum(stages, make, steps=3, accuracy=0.0)
  seen = [_sizes(next(it)) for _ in range(12)]
  assert all(s == {4} for s in seen[:3]) and all(s == {5} for s in seen[3:6])
  assert all(s <= {4, 6} for s in seen[6:]) and set().union(*seen[6:]) == {4, 6}
  assert it.stage == 2  # the last stage lasts
  counts = it.counters()
  assert counts["documents"] >= 12 and counts["tokens_in"] >= counts["tokens_out"] > 0


def test_stages_by_accuracy(make):
  it = curriculum.Curriculum(("train_n4", "train_n5"), make, steps=0, accuracy=0.9)
  assert all(_sizes(next(it)) == {4} for _ in range(5))
  assert not it.observe(0.89) and it.stage == 0
  assert it.observe(0.9) and it.stage == 1
  assert _sizes(next(it)) == {5}
  assert not it.observe(1.0) and it.stage == 1  # no stage after the last


def test_state_resumes_in_the_same_stage_at_the_same_place(make):
  stages = ("train_n4", "train_n5+train_n6")
  it = curriculum.Curriculum(stages, make, steps=2, accuracy=0.0)
  for _ in range(3):
    next(it)
  state = it.get_state()
  want = [next(it) for _ in range(3)]
  again = curriculum.Curriculum(stages, make, steps=2, accuracy=0.0)
  again.set_state(state)
  assert again.stage == 1
  for a, b in zip(want, (next(again) for _ in range(3))):
    for key in pipeline.BATCH_KEYS:
      np.testing.assert_array_equal(a[key], b[key])
  assert again.counters() == it.counters()


def test_validation_split_and_config_errors():
  assert curriculum.validation_split("train_n5+train_n6", "train", "validation") == (
      "validation_n5+validation_n6")
  config = config_lib.base_config()
  config.data.curriculum = ("train_n5", "test_n6")
  config.data.curriculum_steps = 10
  with pytest.raises(config_lib.ConfigError, match=r"\['test_n6'\] of stage 'test_n6'"):
    settings_lib.validate(config)
  config.data.curriculum = ("train_n5", "train_n6")
  config.data.curriculum_steps = 0
  with pytest.raises(config_lib.ConfigError, match="set data.curriculum_steps or"):
    settings_lib.validate(config)
  config.data.curriculum_accuracy, config.train.val_every = 0.9, 0
  with pytest.raises(config_lib.ConfigError, match="set train.val_every > 0"):
    settings_lib.validate(config)


@pytest.mark.parametrize("mode", ["none", "mix"])
def test_tsp_experiment_trains_nearest_tours_first_and_optimal_tours_the_second_half(mode):
  """configs/experiments/tsp.py: the nearest-neighbour stages share the first half of the
  steps (the curriculum adds one city count a stage, `mix` has them all from the start);
  the optimal tours of all city counts the second half, also when the steps change."""
  module = config_lib.load_file(os.path.join(REPO, "configs", "experiments", "tsp.py"))
  config = module.get_config(mode)
  config.train.steps = 1200
  stages, per_stage = config.data.curriculum, config.data.curriculum_steps
  assert stages[-1] == "train" and per_stage * (len(stages) - 1) == 600
  levels = [sorted(int(t.rsplit("_n", 1)[1]) for t in s.split("+")) for s in stages[:-1]]
  assert all(t.startswith("train_nearest_n") for s in stages[:-1] for t in s.split("+"))
  if mode == "mix":
    assert levels == [list(module.LEVELS)]
  else:
    assert levels == [list(module.LEVELS[:k]) for k in range(1, len(module.LEVELS) + 1)]
  assert [curriculum.validation_split(s, "train", "validation") for s in stages[:1]] == [
      "validation_nearest_n5" if mode == "none" else
      "+".join(f"validation_nearest_n{n}" for n in module.LEVELS)]
