"""The evaluation suite: grid sums, tau/lam chosen on validation, the report, TSP tours."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

from lookahead_jax import config as config_lib
from lookahead_jax import evaluate
from lookahead_jax import lookahead as la_lib
from lookahead_jax import model as model_lib
from lookahead_jax import report as report_lib
from lookahead_jax.evals import masked as masked_eval

from conftest import RHYME_CONFIG, load_config

GRID = {"eval.kinds": ("beam", "smc"), "eval.widths": (2,), "eval.horizons": (1, 3),
        "eval.schemes": ("sum", "max"), "eval.mixtures": ("linear", "loglinear"),
        "eval.temperatures": (0.5, 2.0), "eval.lams": (0.1, 0.6), "eval.batch_size": 8,
        "eval.max_batches": 1}


def _random_batch(config, b=3, t=10, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(2, config.vocab_size, (b, t + 1)).astype(np.int32)
  return {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:]),
          "weights": jnp.asarray((rng.random((b, t)) < 0.8).astype(np.float32)),
          "segment_ids": jnp.ones((b, t), jnp.int32),
          "positions": jnp.broadcast_to(jnp.arange(t), (b, t)),
          "needs_lookahead": jnp.asarray(rng.random((b, t)) < 0.3)}


GRID_POINTS = evaluate.Grid(("sum", "max"), ("linear", "loglinear"), (0.5, 2.0), (0.1, 0.6))
PICK = jnp.array([[[[1, 0], [0, 1]], [[1, 1], [0, 0]]],   # lookahead
                  [[[0, 0], [1, 1]], [[0, 1], [1, 0]]]], jnp.int32)  # control


def _sums(params, batch, config, lookahead, pick=PICK):
  return jax.jit(lambda p, x: evaluate.batch_sums(p, x, jax.random.key(0), 1.0, pick,
                                                  config=config, lookahead=lookahead,
                                                  grid=GRID_POINTS))(params, batch)


def test_grid_sums_equal_the_gains_of_the_lookahead_and_its_control(tiny_config, tiny_params):
  batch = _random_batch(tiny_config)
  lookahead = la_lib.Lookahead(width=3, horizon=2)
  sums = _sums(tiny_params, batch, tiny_config, lookahead)
  logits, found, control = la_lib.teacher_forced_paths(
      tiny_params, batch["inputs"], batch["positions"], config=tiny_config, lookahead=lookahead)
  log_p = jax.nn.log_softmax(logits)
  log_p_y = la_lib.token_log_prob(log_p, batch["targets"])
  w, mark = batch["weights"], batch["needs_lookahead"]
  masks = (w, w * mark, w * ~mark)
  np.testing.assert_allclose(sums["nll"], [-jnp.sum(log_p_y * m) for m in masks], rtol=1e-5)
  np.testing.assert_allclose(sums["tokens"], [m.sum() for m in masks])
  np.testing.assert_allclose(sums["row_tokens"], np.stack([m.sum(1) for m in masks], -1))
  chosen = {}
  for side, paths in enumerate((found, control)):
    for si, scheme in enumerate(GRID_POINTS.schemes):
      for mi, mixture in enumerate(GRID_POINTS.mixtures):
        for ti, tau in enumerate(GRID_POINTS.temperatures):
          for li, lam in enumerate(GRID_POINTS.lams):
            amp = la_lib.amplify(paths, tau, scheme)
            diff = la_lib.mix_at(amp, log_p, batch["targets"], lam, mixture) - log_p_y
            for part, mask in enumerate(masks):
              at = (side, si, mi, ti, li, part)
              np.testing.assert_allclose(sums["gain"][at], jnp.sum(diff * mask), atol=1e-4,
                                         rtol=1e-4)
              np.testing.assert_allclose(sums["helps"][at], jnp.sum((diff > 0) * mask),
                                         atol=1e-6)
            if (ti, li) == tuple(PICK[side, si, mi]):
              chosen[side, si, mi] = diff
              for part, mask in enumerate(masks):
                np.testing.assert_allclose(sums["row_gain"][side, si, mi, :, part],
                                           jnp.sum(diff * mask, axis=1), atol=1e-4)
  for si in range(2):
    for mi in range(2):
      np.testing.assert_allclose(sums["token_G"][si, mi],
                                 (chosen[0, si, mi] - chosen[1, si, mi]) * w, atol=1e-5)


@pytest.mark.parametrize("kind", ["beam", "smc"])
def test_at_horizon_one_the_lookahead_specific_gain_is_zero(tiny_config, tiny_params, kind):
  """H = 1 looks at nothing ahead: q_1 is the lookahead itself, so G = 0 everywhere."""
  batch = _random_batch(tiny_config, seed=1)
  same = jnp.stack([PICK[0], PICK[0]])  # the same grid point on both sides
  sums = _sums(tiny_params, batch, tiny_config, la_lib.Lookahead(kind=kind, width=3, horizon=1),
               same)
  np.testing.assert_allclose(sums["gain"][0], sums["gain"][1], atol=1e-5)
  np.testing.assert_allclose(sums["token_G"], 0.0, atol=1e-6)


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory):
  config = load_config(RHYME_CONFIG, {**tiny_run, **GRID})
  workdir = str(tmp_path_factory.mktemp("eval"))
  settings = config_lib.validate(config)
  params = model_lib.init(settings.model, jax.random.key(0))
  return evaluate.run(config, settings, workdir, params=params), workdir


def test_a_masked_models_pseudo_nll_and_readout_are_per_token_means_with_intervals(tiny_run):
  from lookahead_jax import masked, sharding
  from lookahead_jax.data import pipeline

  config = load_config(RHYME_CONFIG, {**tiny_run, **GRID, "objective.kind": "spectrum",
                                        "model.vocab_size": 259, "eval.max_batches": 2})
  settings = config_lib.validate(config)
  params = model_lib.init(settings.model, jax.random.key(0))
  batches = list(itertools.islice(pipeline.make_ordered_iterator(
      config.data.name, "test", **dict(settings.data, global_batch_size=8)), 2))
  out = masked_eval.masked_nll(params, settings, batches, sharding.make_mesh(), 200, 0)
  sums = [masked.held_out_sums(params, b, config=settings.model, mask_id=258) for b in batches]
  for key in ("pll", "readout"):
    nll = sum(float(s[f"{key}_nll"].sum()) for s in sums)
    tokens = sum(float(s[f"{key}_tokens"].sum()) for s in sums)
    np.testing.assert_allclose(out[f"{key}_nll"], nll / tokens, rtol=1e-5)
    lo, hi = out[f"{key}_nll_ci"]
    assert lo < out[f"{key}_nll"] < hi
  assert out["pll_nll"] > np.log(258) - 1  # fresh parameters: near uniform


def test_report_table_json_and_plots(report, capsys):
  result, workdir = report
  out = epath.Path(workdir) / "eval"
  saved = json.loads((out / "report.json").read_text())
  assert saved["rows"] == result["rows"]
  assert len(result["rows"]) == 4 * 2 * 2  # (kind, horizon) x scheme x mixture
  for name in ("G_vs_horizon", "G_vs_width", "token_G_hist", "probes"):
    assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # The testbed's "needs lookahead" tokens are reported apart from the rest.
  assert result["tokens"]["test_marked"] > 0
  for row in result["rows"]:
    for part in ("all", "marked", "unmarked"):
      t = row["test"][part]
      assert t["G"] == pytest.approx(t["gain"] - t["control"], abs=1e-6)
      for key in ("gain", "control", "G"):
        lo, hi = t[key + "_ci"]
        assert lo <= t[key] + 1e-9 and t[key] <= hi + 1e-9
    if row["horizon"] == 1:  # nothing ahead: no lookahead-specific gain
      assert row["test"]["all"]["G"] == pytest.approx(0.0, abs=1e-5)
    assert row["test_nll_amplified"] == pytest.approx(
        result["naive"]["test_nll"] - row["test"]["all"]["gain"])
  text = report_lib.eval_table(result)
  # The report leads with G on the marked tokens, its interval, the verdict of that
  # interval, tau and lam of both sides and sharpening's gain.
  best = result["best"]["test"]["marked"]
  first = text.splitlines()[0]
  assert first == report_lib.headline(result)
  verdict = ("Looking ahead beats sharpening here" if best["G_ci"][0] > 0 else
             "Looking ahead does worse than sharpening here" if best["G_ci"][1] < 0 else
             "No lookahead setting beats its control here: the interval contains 0")
  assert first.startswith(f"{verdict}. Lookahead-specific gain G on the tokens marked as "
                          f"needing lookahead: {best['G']:+.4f} [{best['G_ci'][0]:+.4f}, ")
  assert f"gain(q_1) {best['control']:+.4f}" in first
  b = result["best"]
  assert (f"q_H at tau {b['temperature']:g}, lam {b['lam']:g}; its horizon-1 control q_1 at "
          f"tau {b['control_temperature']:g}, lam {b['control_lam']:g}") in first
  assert "G marked" in text
  assert text.splitlines()[2].split()[5] == "G"  # the table leads with G
  # The probes, fit on validation and scored on test, beside G (test_probes pins them).
  assert saved["probes"]["splits"] == ["validation", "test"]
  assert "future-token gain over the floor" in report_lib.probes_table(result["probes"])


def test_settings_within_float_noise_of_the_best_tie_and_the_first_in_the_grid_wins():
  gains = np.array([[0.1, 0.3, 0.3 + 0.5 * evaluate.TIE, 0.2],  # a tie: the first
                    [0.1, 0.3, 0.3 + 2.0 * evaluate.TIE, np.nan],  # clearly better: it
                    [np.nan, -0.2, -0.1, -0.1]])  # NaN never wins; exact ties: the first
  np.testing.assert_array_equal(evaluate.first_best(gains), [1, 2, 2])


def test_tau_and_lam_are_chosen_on_validation_for_each_side(report):
  result, _ = report
  grid = result["grid"]
  for row in result["rows"]:
    setting = next(g for g in result["validation_grids"] if
                   (g["kind"], g["width"], g["horizon"]) == (row["kind"], row["width"],
                                                            row["horizon"]))
    at = (grid["schemes"].index(row["scheme"]), grid["mixtures"].index(row["mixture"]))
    for side, prefix, key in ((0, "", "validation_gain"), (1, "control_", "validation_control")):
      gains = np.asarray(setting["validation_gain"])[(side, *at)]  # on row["chosen_on"]
      ti, li = np.unravel_index(np.argmax(gains), gains.shape)
      assert (grid["temperatures"][ti], grid["lams"][li]) == (row[prefix + "temperature"],
                                                              row[prefix + "lam"])
      assert row[key] == pytest.approx(gains.max(), abs=1e-6)
  # The headline row: the best by validation G among the rows that look ahead (H > 1).
  ahead = [r for r in result["rows"] if r["horizon"] > 1]
  assert result["best"] == max(ahead, key=lambda r: r["validation_G"])


def test_the_headline_never_names_a_horizon_1_row():
  rows = [{"horizon": 1, "validation_G": 0.0}, {"horizon": 3, "validation_G": -0.2},
          {"horizon": 2, "validation_G": -0.1}, {"horizon": 1, "validation_G": 0.5}]
  assert evaluate.headline_row(rows) == 2  # the best that looks ahead, though below 0
  assert evaluate.headline_row(rows[:1] + rows[3:]) == 1  # only horizon-1 rows: the best


def test_g_per_mark_group_has_a_bootstrap_interval_over_tokens():
  rng = np.random.default_rng(0)
  token_g = rng.normal(0.1, 0.05, 400)
  groups = np.repeat([0, 2, 3, 2], 100)
  out = evaluate.group_gains(token_g, groups, 500, 0)
  assert sorted(out) == ["2", "3"]
  for g, n in (("2", 200), ("3", 100)):
    values = token_g[groups == int(g)]
    assert out[g]["tokens"] == n and out[g]["G"] == pytest.approx(values.mean())
    lo, hi = out[g]["G_ci"]
    half = 1.96 * values.std() / np.sqrt(n)
    assert lo < values.mean() < hi and hi - lo == pytest.approx(2 * half, rel=0.25)
  assert evaluate.group_gains(token_g, np.zeros(400, int), 10, 0) == {}
