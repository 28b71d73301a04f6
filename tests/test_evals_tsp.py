"""The tsp evaluator: the model's tours and the heuristics', checked and gapped alike."""

import jax
import numpy as np
import pytest

from lookahead_jax import config as config_lib
from lookahead_jax import model as model_lib
from lookahead_jax import settings as settings_lib
from lookahead_jax.data import builders, tsp_tours
from lookahead_jax.evals import tsp as tsp_eval


def test_gaps_of_tours_and_of_non_tours():
  coords = np.array([[[0, 0], [0, 5], [5, 5], [5, 0]]] * 4)
  optimal = np.array([[0, 1, 2, 3]] * 4)
  tours = np.array([[0, 1, 2, 3], [2, 1, 0, 3], [0, 2, 1, 3], [0, 1, 1, 3]])
  got = tsp_eval.gaps(coords, optimal, tours)
  crossed = (10 + 2 * np.hypot(5, 5)) / 20 - 1
  np.testing.assert_allclose(got[:3], [0.0, 0.0, crossed])
  assert np.isnan(got[3])
  row = tsp_eval.summary(got, resamples=200, seed=0)
  assert row["valid"] == 0.75 and row["optimal"] == pytest.approx(2 / 3)
  assert row["gap"] == pytest.approx(crossed / 3)
  lo, hi = row["gap_interval"]
  assert 0.0 <= lo < row["gap"] < hi <= crossed


def test_tsp_tours_are_checked_for_validity_and_gap(tmp_path):
  options = {"train_size": 8, "validation_size": 4, "test_size": 5, "levels": (5,)}
  builders.prepare("tsp", tmp_path, **options)
  config = config_lib.base_config()
  config.data.name, config.data.data_dir = "tsp", str(tmp_path)
  config.data.options.update(options)
  tok = builders.default_tokenizer("tsp", **options)
  config.model.update(vocab_size=tok.vocab_size, max_len=40, num_layers=1, d_model=16,
                      num_heads=2)
  config.data.seq_len, config.eval.batch_size, config.train.global_batch = 32, 8, 8
  config.eval.task_instances, config.eval.widths = 4, (2,)
  config.lookahead.width, config.lookahead.horizon = 2, 3
  settings = settings_lib.validate(config)
  params = model_lib.init(settings.model, jax.random.key(0))
  tours = tsp_eval.tour_figures(params, settings)
  assert set(tours) == set(tsp_eval.METHODS)
  coords, optimal = tsp_eval.instances(settings)[5]
  assert coords.shape == (4, 5, 2)  # the first eval.task_instances of the count
  for method, fn in tsp_tours.HEURISTICS.items():
    row = tours[method][5]
    want = tsp_eval.gaps(coords, optimal, fn(coords))
    assert row["valid"] == 1.0 and row["instances"] == 4
    assert row["gap"] == pytest.approx(want.mean())
  for row in tours["nearest_neighbour"].values():
    # Every kept instance has a nearest-neighbour tour longer than the optimum.
    assert row["gap"] > 0 and row["optimal"] == 0 and row["gap_interval"][0] > 0
  for method in tsp_eval.MODEL_METHODS:
    assert sorted(tours[method]) == [5]
    for row in tours[method].values():
      assert 0.0 <= row["valid"] <= 1.0 and row["instances"] == 4
  text = tsp_eval.table(tours)
  assert "farthest_insertion" in text and "amplified" in text
  # compare's gap: the mean over the valid tours of every city count.
  two = {"greedy": {5: dict(gap=0.1, valid=1.0, instances=4),
                    6: dict(gap=0.4, valid=0.5, instances=4)}}
  assert tsp_eval._mean_gap(two, "greedy") == pytest.approx((0.1 * 4 + 0.4 * 2) / 6)
  evaluator = tsp_eval.Evaluator()
  assert set(evaluator.run_figures(tours, {}, {})) == {c.key for c in evaluator.columns}
