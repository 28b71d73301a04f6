"""The training monitor: G fitted on some held-out batches and reported, pooled with row
intervals, on others; its log read back and plotted; the dev lookahead's independence."""

import math
import types

import jax
import numpy as np
import pytest
from etils import epath

from lookahead_jax import aot, fit, metrics, monitor, report, sharding
from lookahead_jax import config as config_lib
from lookahead_jax import lookahead as la_lib
from lookahead_jax import settings as settings_lib
from lookahead_jax import stunting as stunting_lib
from lookahead_jax.data import tokenizers

B, T = 8, 10  # rows (a multiple of the 8 simulated devices) and tokens of a batch


def test_trajectory_reads_the_monitor_records_and_the_plot_is_saved(tmp_path):
  assert monitor.trajectory(metrics.read(str(tmp_path))) == {"step": [], **{
      k: [] for k in monitor.TRAJECTORY_KEYS}}  # a run that was not trained here
  writer = metrics.Writer(str(tmp_path))
  writer.write(5, {"loss": 2.0})  # a training record: not part of the trajectory
  for step, g, lo, hi in ((10, 0.02, 0.01, 0.03), (20, 0.05, 0.04, 0.06)):
    writer.write(step, {"monitor_G_dev": g, "monitor_G_dev_lo": lo,
                        "monitor_G_dev_hi": hi, "monitor_G_stunting": g / 2,
                        "monitor_G_dev_marked": 10 * g, "monitor_accuracy_marked_2": 0.5,
                        "monitor_accuracy_marked_2_lo": 0.4, "monitor_accuracy_marked_2_hi": 0.6,
                        "monitor_G_dev_marked_2": g, "monitor_control_width": 2.0})
  writer.close()
  found = monitor.trajectory(metrics.read(str(tmp_path)))
  none = [None, None]
  expected = {k: none for k in monitor.TRAJECTORY_KEYS}  # the probes were off, ...
  expected.update(step=[10, 20], G_dev=[0.02, 0.05], G_dev_lo=[0.01, 0.04],
                  G_dev_hi=[0.03, 0.06], G_stunting=[0.01, 0.025],
                  G_dev_marked=[0.2, 0.5], control_width=[2.0, 2.0],
                  accuracy_marked_2=[0.5, 0.5], accuracy_marked_2_lo=[0.4, 0.4],
                  accuracy_marked_2_hi=[0.6, 0.6], G_dev_marked_2=[0.02, 0.05])
  assert found == expected
  report.trajectory_plot({"this run": found}, tmp_path)
  for name in ("G_trajectory.png", "accuracy_trajectory.png"):  # bands from _lo and _hi
    assert (epath.Path(tmp_path) / name).read_bytes()[:4] == b"\x89PNG"
  assert not (epath.Path(tmp_path) / "probe_trajectory.png").exists()


def _gains(g, lo, hi):
  return {"monitor_G_dev": g, "monitor_G_dev_marked": g, "monitor_G_dev_marked_lo": lo,
          "monitor_G_dev_marked_hi": hi}


def test_the_warning_fires_only_after_g_had_been_clearly_positive(caplog):
  config = config_lib.base_config()
  config.monitor.patience = 2
  settings = settings_lib.derive(config, tokenizers.ByteTokenizer())
  never = monitor.Monitor(settings, None)  # monitor.every = 0: nothing is built
  never.part = "marked"
  caplog.set_level("INFO", logger="absl")  # absl's verbosity sets that logger's level
  never._warn(0, {"monitor_G_dev": 0.3})  # no marked figure (no fit): nothing said
  for step in range(1, 8):  # G never positive, or positive with an interval reaching 0
    never._warn(10 * step, _gains(-0.05, -0.1, 0.0) if step % 2 else _gains(0.02, -0.01, 0.05))
  assert [r.levelname for r in caplog.records] == ["INFO"]  # "not helped yet", once
  assert "has not helped yet" in caplog.records[0].getMessage()
  caplog.clear()
  helped = monitor.Monitor(settings, None)
  helped.part = "marked"
  for step, gains in enumerate([_gains(0.1, 0.05, 0.15), _gains(0.03, -0.01, 0.07),
                                _gains(-0.01, -0.05, 0.03), _gains(-0.02, -0.06, 0.02)]):
    helped._warn(step, gains)
  warnings = [r for r in caplog.records if r.levelname == "WARNING"]
  assert len(warnings) == 1 and "step 3" in warnings[0].getMessage()
  assert "was clearly positive earlier" in warnings[0].getMessage()


def test_pooled_is_the_token_weighted_mean_with_an_interval_over_rows():
  rng = np.random.default_rng(0)
  rows = np.repeat([3, 7, 8, 20], [1, 30, 5, 2])  # row ids need not be 0..R-1
  values = rng.normal(0.2, 1.0, len(rows))
  mean, lo, hi = monitor.pooled(values, rows, resamples=500)
  assert abs(mean - values.mean()) < 1e-12 and lo < mean < hi
  # All tokens of a row move together: one row holding every token has no spread.
  np.testing.assert_allclose(monitor.pooled(values, np.zeros(len(values), int), 100)[1:],
                             (mean, mean), rtol=1e-12)
  assert all(math.isnan(v) for v in monitor.pooled(values[:0], rows[:0], 100))


# ----------------------------------------------------------------------------- the monitor


def _batches(forward, config, params, scored, seed, marks=True):
  """Batches [B, T] whose sequences follow the model's argmax 70% of the time (so that
  sharpening and lookahead both move the NLL), `scored` tokens weighted in each (rows
  first), marks of groups 2 and 3 on some of them."""
  rng = np.random.default_rng(seed)
  out = []
  for n in scored:
    tokens = np.zeros((B, T + 1), np.int32)
    tokens[:, 0] = rng.integers(2, config.vocab_size, B)
    positions = np.broadcast_to(np.arange(T + 1), (B, T + 1))
    for t in range(T):
      logits = np.asarray(forward(params, tokens, positions, config=config)[0])[:, t]
      tokens[:, t + 1] = np.where(rng.random(B) < 0.7, logits.argmax(-1),
                                  rng.integers(2, config.vocab_size, B))
    weights = np.zeros((B, T), np.float32)
    weights.flat[:n] = 1.0
    group = np.zeros((B, T), np.int32)
    if marks:
      group.flat[0:n:3], group.flat[1:n:4] = 2, 3
    out.append({"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": weights,
                "segment_ids": np.ones((B, T), np.int32),
                "positions": np.asarray(positions[:, :-1], np.int32), "mark_group": group})
  return out


@pytest.fixture(scope="module")
def setup(tiny_config, tiny_params, forward):
  """Settings and a mesh for a monitor of a tiny model (sharpened weights) with
  a beam B=2 H=3 stunting lookahead and a beam B=3 H=2 dev lookahead (another horizon)."""
  config = config_lib.base_config()
  config.monitor.every = 1
  config.eval.bootstrap = 200
  sections = settings_lib.derive(config, tokenizers.ByteTokenizer())
  settings = types.SimpleNamespace(
      monitor=sections.monitor, eval=sections.eval, seed=sections.seed, data=sections.data,
      model=tiny_config, mixture=la_lib.Mixture(),
      stunting=stunting_lib.Stunting(mode="none", lookahead=None),
      monitor_lookahead=la_lib.Lookahead(width=2, horizon=3),
      dev_lookahead=la_lib.Lookahead(width=3, horizon=2), probes=None, tokenizer=None)
  params = jax.tree.map(lambda x: 3.0 * x, tiny_params)
  report = _batches(forward, tiny_config, params, (80, 9), seed=0)  # unequal token counts
  fitting = _batches(forward, tiny_config, params, (70, 50), seed=1)
  return settings, sharding.make_mesh(), params, report, fitting


def _run(setup, report, fitting):
  settings, mesh, params = setup[:3]
  m = monitor.Monitor(settings, mesh, batches=([dict(b) for b in report],
                                               [dict(b) for b in fitting]))
  return m, m(1, params)


def _outs(m, params):
  return [jax.tree.map(sharding.gather, m.fn(params, b, jax.random.fold_in(m.rng, i)))
          for i, b in enumerate(m.batches)]


def test_figures_pool_every_token_of_the_report_batches(setup):
  params, report, fitting = setup[2:]
  m, record = _run(setup, report, fitting)
  outs = _outs(m, params)
  fits = monitor.fit_settings(monitor.host_tokens(outs[2:]), m.parts, scheme="sum",
                              mixture="linear", control_widths=m.control_widths)
  per_batch = []  # (tokens, mean g, marked tokens, mean g on them, accuracy on them)
  for out in outs[:2]:
    tokens = monitor.host_tokens([out])
    g = {part: fit.log_mixture_at(tokens.lookaheads["dev"], fits[part]["dev"], scheme="sum",
                                  mixture="linear")[:tokens.n]
         - fit.log_mixture_at(tokens.control, fits[part]["control"], scheme="sum",
                              mixture="linear")[:tokens.n] for part in ("all", "marked")}
    marked = tokens.group > 0
    per_batch.append((tokens.n, g["all"].mean(), marked.sum(), g["marked"][marked].mean(),
                      tokens.right[marked].mean()))
  n, g, n_marked, g_marked, accuracy = np.array(per_batch).T
  assert list(n) == [80, 9]  # the batches' scored tokens
  for key, value, count in (("G_dev", g, n), ("G_dev_marked", g_marked, n_marked),
                            ("accuracy_marked", accuracy, n_marked)):
    pooled = float((value * count).sum() / count.sum())
    assert abs(record[f"monitor_{key}"] - pooled) < 1e-6, key
    assert abs(value.mean() - pooled) > 1e-3, key  # not the mean of the batches' means
    assert record[f"monitor_{key}_lo"] < pooled < record[f"monitor_{key}_hi"], key


def test_a_check_with_the_passes_compiled_ahead_is_the_same_check(setup):
  settings, mesh, params, report, fitting = setup
  _, record = _run(setup, report, fitting)
  m = monitor.Monitor(settings, mesh, batches=([dict(b) for b in report],
                                               [dict(b) for b in fitting]))
  placed = jax.device_put(params, sharding.replicated(mesh))  # as training places them
  with aot.Ahead() as ahead:
    m.compile_ahead(ahead, aot.abstract(placed))
    assert isinstance(m.compiled.result(), jax.stages.Compiled)
  assert m(1, placed) == record


def test_tau_and_lam_are_fitted_on_the_fit_batches_not_the_report_batches(setup):
  forward_batches = setup[3:]
  report, fitting = forward_batches
  _, record = _run(setup, report, fitting)
  settings = {k: v for k, v in record.items() if k[len("monitor_"):] in monitor.SETTING_KEYS}
  assert set(settings) == {f"monitor_{k}" for k in monitor.SETTING_KEYS}
  _, other_report = _run(setup, fitting[:1] + report[1:], fitting)  # other report batches
  assert {k: other_report[k] for k in settings} == settings
  assert other_report["monitor_G_dev"] != record["monitor_G_dev"]
  _, other_fit = _run(setup, report, report)  # fitted on the report batches themselves
  assert {k: other_fit[k] for k in settings} != settings
  assert other_fit["monitor_G_dev_marked"] != record["monitor_G_dev_marked"]


def test_per_depth_figures_have_intervals_and_no_nan_reaches_tensorboard(setup, tmp_path,
                                                                          monkeypatch):
  report, fitting = setup[3:]
  _, record = _run(setup, report, fitting)
  for key in ("G_dev_marked", "G_stunting_marked", "accuracy_marked"):
    for g in (2, 3):
      value, lo, hi = (record[f"monitor_{key}_{g}{end}"] for end in ("", "_lo", "_hi"))
      assert lo <= value <= hi and lo < hi, (key, g)
  # Fit batches without a marked token: no fit of the marked part, so no G on marked
  # tokens; the accuracy, which needs no fit, stays. Nothing NaN is in the record.
  unmarked = [dict(b, mark_group=np.zeros_like(b["mark_group"])) for b in fitting]
  _, partial = _run(setup, report, unmarked)
  assert not any(k.startswith(("monitor_G_dev_marked", "monitor_G_stunting_marked"))
                 for k in partial)
  assert "monitor_accuracy_marked_2_lo" in partial and "monitor_G_dev_lo" in partial
  assert all(math.isfinite(v) for v in {**record, **partial}.values())
  # The writer leaves any non-finite value (a probe's, say) out of TensorBoard.
  writer = metrics.Writer(str(tmp_path))
  scalars = []
  monkeypatch.setattr(writer._tb, "add_scalar", lambda k, v, step: scalars.append((k, v)))
  writer.write(1, {**partial, "monitor_icl_score": math.nan, "x": math.inf})
  writer.close()
  assert scalars and all(math.isfinite(v) for _, v in scalars)
  assert {k for k, _ in scalars} == set(partial)
  assert metrics.read(str(tmp_path))[0]["monitor_icl_score"] is None  # null in the JSONL


# ----------------------------------------------------------------------------- dev lookahead


def test_the_dev_lookahead_differs_from_the_stunting_one_in_kind_or_horizon(tiny_config):
  config = config_lib.base_config()
  config.lookahead.kind, config.lookahead.horizon = "beam", 4
  lookahead = settings_lib._lookahead(config, None)
  assert settings_lib._dev_lookahead(config, lookahead).kind == "smc"  # "": the other kind
  config.stunting.mode = "v4"  # stunting with SMC: the dev lookahead is a beam
  assert settings_lib._dev_lookahead(config, lookahead).kind == "beam"
  settings_lib._check_stunting(config, tiny_config)
  config.monitor.dev_kind = "smc"  # SMC of v4's own horizon: the stunting signal again
  with pytest.raises(config_lib.ConfigError, match=r"monitor.dev_kind/dev_horizon=\('smc', 0\)"
                     r".*smc H=4.*set monitor.dev_kind=''"):
    settings_lib._check_stunting(config, tiny_config)
  config.monitor.dev_horizon = 2  # another horizon: independent
  settings_lib._check_stunting(config, tiny_config)
  config.stunting.mode, config.monitor.dev_kind, config.monitor.dev_horizon = "none", "beam", 0
  with pytest.raises(config_lib.ConfigError, match="restates the stunting signal"):
    settings_lib._check_stunting(config, tiny_config)  # a wider beam of the same horizon
