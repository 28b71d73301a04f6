"""The evaluation suite: grid sums, tau/lam chosen on validation, the report, TSP tours."""

import functools
import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

from lookahead_jax import compare, evals, evaluate, fit, stats
from lookahead_jax import lookahead as la_lib
from lookahead_jax import model as model_lib
from lookahead_jax import report as report_lib
from lookahead_jax import settings as settings_lib
from lookahead_jax.evals import gain
from lookahead_jax.evals import masked as masked_eval

from conftest import RHYME_CONFIG, load_config

GRID = {"eval.kinds": ("beam", "smc"), "eval.widths": (2,), "eval.horizons": (1, 3),
        "eval.schemes": ("sum", "max"), "eval.mixtures": ("linear", "loglinear"),
        "eval.batch_size": 8,
        "eval.max_batches": 1}


def _random_batch(config, b=3, t=10, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(2, config.vocab_size, (b, t + 1)).astype(np.int32)
  return {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:]),
          "weights": jnp.asarray((rng.random((b, t)) < 0.8).astype(np.float32)),
          "segment_ids": jnp.ones((b, t), jnp.int32),
          "positions": jnp.broadcast_to(jnp.arange(t), (b, t)),
          "needs_lookahead": jnp.asarray(rng.random((b, t)) < 0.3)}


def test_the_cache_at_the_scored_anchors_equals_the_full_lookahead_masked(tiny_config,
                                                                           tiny_params):
  """The evaluation runs its lookahead at the anchors the loss weighs only; there its paths,
  and so every figure, are those of the lookahead at every anchor."""
  batch = _random_batch(tiny_config)
  lookahead = la_lib.Lookahead(width=3, horizon=2)
  cache = jax.jit(functools.partial(gain.batch_cache, config=tiny_config,
                                    lookahead=lookahead, control_width=4, loglinear=True))(
      tiny_params, batch, jax.random.key(0), 1.0)
  logits, found, _ = la_lib.teacher_forced_paths(
      tiny_params, batch["inputs"], batch["positions"], config=tiny_config, lookahead=lookahead)
  log_p = jax.nn.log_softmax(logits)
  full = fit.pass_cache(log_p, found, batch["targets"], True)
  scored = np.asarray(batch["weights"]) > 0
  got = cache["caches"][gain.LOOKAHEAD].replace(shared=cache["control"].shared)  # host_split
  for name in ("log_p_y", "first", "score", "log_p_k", "shared"):
    np.testing.assert_allclose(np.asarray(getattr(got, name))[scored],
                               np.asarray(getattr(full, name))[scored], atol=1e-5)
  assert not np.asarray(got.valid)[~scored].any()
  top, _ = jax.lax.top_k(log_p, 4)
  np.testing.assert_allclose(np.asarray(cache["control"].score)[scored],
                             np.asarray(top)[scored], atol=1e-6)


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory):
  config = load_config(RHYME_CONFIG, {**tiny_run, **GRID})
  workdir = str(tmp_path_factory.mktemp("eval"))
  settings = settings_lib.validate(config)
  params = model_lib.init(settings.model, jax.random.key(0))
  return evaluate.run(settings, workdir, params=params), workdir


def test_a_masked_models_pseudo_nll_and_readout_are_per_token_means_with_intervals(tiny_run):
  from lookahead_jax import masked, sharding
  from lookahead_jax.data import pipeline

  config = load_config(RHYME_CONFIG, {**tiny_run, **GRID, "objective.kind": "spectrum",
                                        "model.vocab_size": 259, "eval.max_batches": 2})
  settings = settings_lib.validate(config)
  params = model_lib.init(settings.model, jax.random.key(0))
  batches = list(itertools.islice(pipeline.make_ordered_iterator(
      settings.data.name, "test", **dict(settings.pipeline, global_batch_size=8)), 2))
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
    assert row["test_nll_amplified"] == pytest.approx(
        result["naive"]["test_nll"] - row["test"]["all"]["gain"])
  text = report_lib.eval_table(result)
  # The report leads with G on the marked tokens, its interval, the verdict of that
  # interval, tau and lam of both sides and sharpening's gain.
  best = result["best"]["test"]["marked"]
  first = text.splitlines()[0]
  assert first == report_lib.headline(result)
  verdict = ("No lookahead setting helps here: the best one's fitted lam is on its bound 0, "
             "so q_H mixes nothing into p and G is float noise"
             if "lam=0" in result["best"]["on_bound"] else
             "Looking ahead beats sharpening here" if best["G_ci"][0] > 0 else
             "Looking ahead does worse than sharpening here" if best["G_ci"][1] < 0 else
             "No lookahead setting beats its control here: the interval contains 0")
  assert first.startswith(f"{verdict}. Lookahead-specific gain G on the tokens marked as "
                          f"needing lookahead: {best['G']:+.4f} [{best['G_ci'][0]:+.4f}, ")
  assert f"gain(q_1) {best['control']:+.4f}" in first
  b = result["best"]
  assert f"q_H at tau {b['temperature']:.3g}, lam {b['lam']:.4g}" in first
  assert f"q_1, top-{b['control_width']} of p at tau {b['control_temperature']:.3g}" in first
  assert "G marked" in text
  assert text.splitlines()[2].split()[5] == "G"  # the table leads with G
  # The probes, fit on validation and scored on test, beside G (test_probes pins them).
  assert saved["probes"]["splits"] == ["validation", "test"]
  assert "future-token gain over the floor" in report_lib.probes_table(result["probes"])


def test_settings_within_float_noise_of_the_best_tie_and_the_first_in_the_grid_wins():
  gains = np.array([[0.1, 0.3, 0.3 + 0.5 * gain.TIE, 0.2],  # a tie: the first
                    [0.1, 0.3, 0.3 + 2.0 * gain.TIE, np.nan],  # clearly better: it
                    [np.nan, -0.2, -0.1, -0.1]])  # NaN never wins; exact ties: the first
  np.testing.assert_array_equal(gain.first_best(gains), [1, 2, 2])


def test_each_part_is_fitted_on_its_own_tokens_and_horizon_1_never_beats_its_control(report):
  result, _ = report
  for row in result["rows"]:
    fits = {part: row["test"][part]["fit_H"] for part in ("all", "marked", "unmarked")}
    assert row["temperature"] == fits["marked"]["temperature"]  # the headline's part
    assert row["validation_gain"] == pytest.approx(fits["marked"]["validation_gain"])
    if row["horizon"] == 1 and row["kind"] == "beam":
      # q_H is then p's top-B, one member of the control family: the fitted family's best
      # control does at least as well on validation.
      assert row["validation_G"] <= 1e-6
  # The headline row: the best by validation G among the rows that look ahead (H > 1).
  ahead = [r for r in result["rows"] if r["horizon"] > 1]
  assert result["best"] == max(ahead, key=lambda r: r["validation_G"])


def test_the_headline_never_names_a_horizon_1_row():
  rows = [{"horizon": 1, "validation_G": 0.0}, {"horizon": 3, "validation_G": -0.2},
          {"horizon": 2, "validation_G": -0.1}, {"horizon": 1, "validation_G": 0.5}]
  assert gain.headline_row(rows) == 2  # the best that looks ahead, though below 0
  assert gain.headline_row(rows[:1] + rows[3:]) == 1  # only horizon-1 rows: the best


def test_a_headline_whose_lookahead_mixes_nothing_in_gets_no_verdict_from_float_noise():
  """A distill run on tsp (results/tsp/distill/seed_0): both sides fitted to lam 1e-6, on
  the bound 0, and G +1.5e-7 [+4.9e-8, +2.7e-7]. The interval is above 0, but q_H's
  mixture is p itself, so the headline must not say that looking ahead beats sharpening."""
  fit = {"temperature": 2.0, "lam": 1e-6, "on_bound": ["lam=0"]}
  best = {"kind": "beam", "width": 4, "horizon": 4, "scheme": "sum", "mixture": "loglinear",
          **fit, **{"control_" + k: v for k, v in fit.items()}, "control_width": 1,
          "test_helps": 0.19,
          "test": {"marked": {"G": 1.5e-7, "G_ci": [4.9e-8, 2.7e-7], "gain": -9.1e-8,
                              "control": -2.4e-7},
                   "all": {"G": 1e-8, "G_ci": [0.0, 2e-8]}}}
  report = {"best": best, "tokens": {"test_marked": 5225}}
  assert report_lib.headline(report).startswith(
      "No lookahead setting helps here: the best one's fitted lam is on its bound 0")
  best["on_bound"] = []  # the same interval where q_H does mix in: the interval's verdict
  assert report_lib.headline(report).startswith("Looking ahead beats sharpening here")


def test_group_intervals_resample_rows():
  """Two marks in one row move together: the interval that resamples rows is wider than
  one that resamples tokens, and the point value is the token mean."""
  rng = np.random.default_rng(0)
  row_effect = rng.normal(0.1, 0.2, 200)
  token_g = np.repeat(row_effect, 2) + rng.normal(0.0, 0.02, 400)  # two marks a row
  rows = np.repeat(np.arange(200), 2)
  groups = np.full(400, 2)
  groups[::4] = 0  # some unmarked tokens, left out
  out = gain.group_gains(token_g, groups, rows, stats.resample_counts(200, 1000, 0))
  keep = groups == 2
  assert out["2"]["G"] == pytest.approx(token_g[keep].mean())
  by_token = gain.group_gains(token_g[keep], groups[keep], np.arange(keep.sum()),
                                  stats.resample_counts(int(keep.sum()), 1000, 0))
  width = lambda o: o["2"]["G_ci"][1] - o["2"]["G_ci"][0]
  assert width(out) > 1.2 * width(by_token)
  assert gain.group_gains(token_g, np.zeros(400, int), rows,
                              stats.resample_counts(200, 10, 0)) == {}


def test_an_evaluator_of_ones_own_is_one_file_and_one_config_line(tiny_run, tmp_path, capsys):
  """tests/toy_evaluator.py, named in eval.evaluators: evaluate.run runs it after the gain
  grid (its figures read the headline row), prints its table, and compare shows and pairs
  its column."""
  config = load_config(RHYME_CONFIG, {**tiny_run, **GRID, "eval.kinds": ("beam",),
                                      "eval.horizons": (2,), "eval.schemes": ("sum",),
                                      "eval.mixtures": ("linear",)})
  config.eval.evaluators = (*config.eval.evaluators, "toy_evaluator")  # the one config line
  settings = settings_lib.validate(config)
  params = model_lib.init(settings.model, jax.random.key(0))
  out = evaluate.run(settings, str(tmp_path), params=params)
  norm = float(np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(params))))
  assert out["toy"]["param_norm"] == pytest.approx(norm)
  assert out["toy"]["headline_G"] == out["best"]["test"]["all"]["G"]
  assert f"toy: parameter norm {norm:.3f} on rhyme" in capsys.readouterr().out
  evaluators = evals.build(config.eval.evaluators)
  runs = {mode: [{"seed": 0, "param_norm": norm + shift, "step_time": 1.0, "version": {},
                  "trajectory": {"step": []}}]
          for mode, shift in (("none", 0.0), ("v1_token", 1.0))}
  rows = compare.tabulate(runs, str(tmp_path), "rhyme", evaluators=evaluators)
  assert rows[1]["param_norm_vs_baseline"] == pytest.approx(1.0)
  assert "parameter norm vs none" in (epath.Path(tmp_path) / "compare.md").read_text()
  config.eval.evaluators = ("gain", "no_such_evaluator")
  with pytest.raises(settings_lib.ConfigError, match="eval.evaluators: 'no_such_evaluator' is "
                     "not an evaluator module"):
    settings_lib.validate(config)
