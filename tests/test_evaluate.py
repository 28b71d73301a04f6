"""The evaluation suite: grid sums, tau/lam chosen on validation, the report, TSP tours."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import DEFAULT_CONFIG, load_config
from lookahead_jax import evaluate
from lookahead_jax import lookahead as la_lib
from lookahead_jax import model as model_lib
from lookahead_jax import train
from lookahead_jax.data import builders, tsp

GRID = {"eval.kinds": ("beam", "smc"), "eval.widths": (2,), "eval.horizons": (1, 3),
        "eval.schemes": ("sum", "max"), "eval.mixtures": ("linear", "loglinear"),
        "eval.temperatures": (0.5, 2.0), "eval.lams": (0.1, 0.6), "eval.batch_size": 8,
        "eval.max_batches": 1}


def test_grid_sums_equal_the_gain_computed_directly(tiny_config, tiny_params):
  rng = np.random.default_rng(0)
  b, t = 3, 10
  tokens = rng.integers(2, tiny_config.vocab_size, (b, t + 1)).astype(np.int32)
  batch = {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:]),
           "weights": jnp.asarray((rng.random((b, t)) < 0.8).astype(np.float32)),
           "segment_ids": jnp.ones((b, t), jnp.int32),
           "positions": jnp.broadcast_to(jnp.arange(t), (b, t)),
           "needs_lookahead": jnp.asarray(rng.random((b, t)) < 0.3)}
  grid = evaluate.Grid(("sum", "max"), ("linear", "loglinear"), (0.5, 2.0), (0.1, 0.6))
  lookahead = la_lib.Lookahead(width=3, horizon=2)
  pick = jnp.array([[[1, 0], [0, 1]], [[1, 1], [0, 0]]], jnp.int32)
  sums = jax.jit(lambda p, x: evaluate.batch_sums(p, x, jax.random.key(0), 1.0, pick,
                                                  config=tiny_config, lookahead=lookahead,
                                                  grid=grid))(tiny_params, batch)
  logits, paths = la_lib.paths(tiny_params, batch["inputs"], batch["positions"],
                               config=tiny_config, lookahead=lookahead)
  log_p = jax.nn.log_softmax(logits)
  log_p_y = la_lib.token_log_prob(log_p, batch["targets"])
  w, mark = batch["weights"], batch["needs_lookahead"]
  np.testing.assert_allclose(sums["nll"], [-jnp.sum(log_p_y * m) for m in (w, w * mark,
                                                                          w * ~mark)], rtol=1e-5)
  np.testing.assert_allclose(sums["tokens"], [w.sum(), (w * mark).sum(), (w * ~mark).sum()])
  for si, scheme in enumerate(grid.schemes):
    for mi, mixture in enumerate(grid.mixtures):
      for ti, tau in enumerate(grid.temperatures):
        for li, lam in enumerate(grid.lams):
          amp = la_lib.amplify(paths, tau, scheme)
          diff = la_lib.mix_at(amp, log_p, batch["targets"], lam, mixture) - log_p_y
          for part, mask in enumerate((w, w * mark, w * ~mark)):
            np.testing.assert_allclose(sums["gain"][si, mi, ti, li, part], jnp.sum(diff * mask),
                                       atol=1e-4, rtol=1e-4)
            np.testing.assert_allclose(sums["helps"][si, mi, ti, li, part],
                                       jnp.sum((diff > 0) * mask), atol=1e-6)
          if (ti, li) == tuple(pick[si, mi]):
            np.testing.assert_allclose(sums["token_gain"][si, mi], diff * w, atol=1e-5)


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory):
  config = load_config(DEFAULT_CONFIG, {**tiny_run, **GRID})
  workdir = str(tmp_path_factory.mktemp("eval"))
  params = model_lib.init(train.model_config(config), jax.random.key(0))
  return evaluate.run(config, workdir, params=params), workdir


def test_report_table_json_and_plots(report, capsys):
  result, workdir = report
  out = os.path.join(workdir, "eval")
  with open(os.path.join(out, "report.json")) as f:
    saved = json.load(f)
  assert saved["rows"] == result["rows"]
  assert len(result["rows"]) == 4 * 2 * 2  # (kind, horizon) x scheme x mixture
  for name in ("gain_vs_horizon", "gain_vs_width", "token_gain_hist"):
    with open(os.path.join(out, name + ".png"), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  # The testbed's "needs lookahead" tokens are reported apart from the rest.
  assert result["tokens"]["test_marked"] > 0
  for row in result["rows"]:
    assert np.isfinite([row["test_gain"], row["test_gain_marked"], row["test_gain_unmarked"]]).all()
    assert row["test_nll_amplified"] == pytest.approx(result["naive"]["test_nll"] - row["test_gain"])
  text = evaluate.table(result)
  assert "marked" in text and "Best on validation" in text


def test_tau_and_lam_are_chosen_on_validation(report):
  result, _ = report
  grid = result["grid"]
  for row in result["rows"]:
    setting = next(g for g in result["validation_grids"] if
                   (g["kind"], g["width"], g["horizon"]) == (row["kind"], row["width"],
                                                            row["horizon"]))
    gains = np.asarray(setting["validation_gain"])[grid["schemes"].index(row["scheme"]),
                                                    grid["mixtures"].index(row["mixture"])]
    ti, li = np.unravel_index(np.argmax(gains), gains.shape)
    assert (grid["temperatures"][ti], grid["lams"][li]) == (row["temperature"], row["lam"])
    assert row["validation_gain"] == pytest.approx(gains.max(), abs=1e-6)
  best = max(result["rows"], key=lambda r: r["validation_gain"])
  assert result["best"] == best


def test_tsp_tours_are_checked_for_validity_and_gap(tmp_path):
  options = {"train_size": 8, "validation_size": 4, "test_size": 4, "levels": (5, 6)}
  builders.prepare("tsp", tmp_path, **options)
  config = train.base_config()
  config.data.name, config.data.data_dir = "tsp", str(tmp_path)
  config.data.options.update(options)
  tok = builders.default_tokenizer("tsp", **options)
  model_cfg = model_lib.Config(vocab_size=tok.vocab_size, max_len=24, num_layers=1, d_model=16,
                               num_heads=2)
  params = model_lib.init(model_cfg, jax.random.key(0))
  tours = evaluate.tsp_tours(params, config, model_cfg, "test", limit=8, beam_size=2)
  assert set(tours) == {"greedy", "beam", "nearest_neighbour"}
  assert sorted(tours["beam"]) == [5, 6]
  for n, nn in tours["nearest_neighbour"].items():
    # Every kept instance has a nearest-neighbour tour longer than the optimum.
    assert nn["instances"] == 4 and nn["valid"] == 1.0 and nn["gap"] > 0 and nn["optimal"] == 0
  for method in ("greedy", "beam"):
    for n, row in tours[method].items():
      assert 0.0 <= row["valid"] <= 1.0 and row["instances"] == 4
  text = evaluate.tsp_table(tours)
  assert "nearest_neighbour" in text
  # The gap function the report uses agrees with a direct computation.
  record = builders.data_source("tsp", "test", str(tmp_path), **options)[0]
  assert tsp.optimality_gap(record["coords"], record["tour"], record["tour"]) == 0.0
