"""The tsp evaluator: decoded tours checked for validity and optimality gap."""

import jax
import pytest

from lookahead_jax import config as config_lib
from lookahead_jax import model as model_lib
from lookahead_jax.data import builders, tsp
from lookahead_jax.evals import tsp as tsp_eval


def test_tsp_tours_are_checked_for_validity_and_gap(tmp_path):
  options = {"train_size": 8, "validation_size": 4, "test_size": 4, "levels": (5, 6)}
  builders.prepare("tsp", tmp_path, **options)
  config = config_lib.base_config()
  config.data.name, config.data.data_dir = "tsp", str(tmp_path)
  config.data.options.update(options)
  tok = builders.default_tokenizer("tsp", **options)
  config.model.update(vocab_size=tok.vocab_size, max_len=24, num_layers=1, d_model=16,
                      num_heads=2)
  config.data.seq_len, config.eval.batch_size, config.train.global_batch = 20, 8, 8
  config.eval.tsp_instances, config.eval.widths = 8, (2,)
  settings = config_lib.validate(config)
  params = model_lib.init(settings.model, jax.random.key(0))
  tours = tsp_eval.evaluate(params, config, settings, None)
  assert set(tours) == {"greedy", "beam", "nearest_neighbour"}
  assert sorted(tours["beam"]) == [5, 6]
  for nn in tours["nearest_neighbour"].values():
    # Every kept instance has a nearest-neighbour tour longer than the optimum.
    assert nn["instances"] == 4 and nn["valid"] == 1.0 and nn["gap"] > 0 and nn["optimal"] == 0
  for method in ("greedy", "beam"):
    for row in tours[method].values():
      assert 0.0 <= row["valid"] <= 1.0 and row["instances"] == 4
  text = tsp_eval.table(tours)
  assert "nearest_neighbour" in text
  # compare's gap: the mean over the valid tours of every city count.
  nn = tours["nearest_neighbour"]
  assert tsp_eval._mean_gap(tours, "nearest_neighbour") == pytest.approx(
      (nn[5]["gap"] + nn[6]["gap"]) / 2)
  assert set(tsp_eval.columns(tours, {})) == {key for key, _, _ in tsp_eval.COLUMNS}
  # The gap function the report uses agrees with a direct computation.
  record = builders.data_source("tsp", "test", str(tmp_path), **options)[0]
  assert tsp.optimality_gap(record["coords"], record["tour"], record["tour"]) == 0.0
