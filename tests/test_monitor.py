"""The monitor's G over training: read back from a run's log and plotted."""

import math

from etils import epath

from lookahead_jax import metrics, monitor, report


def test_trajectory_reads_the_monitor_records_and_the_plot_is_saved(tmp_path):
  assert monitor.trajectory(metrics.read(str(tmp_path))) == {"step": [], **{
      k: [] for k in monitor.TRAJECTORY_KEYS}}  # a run that was not trained here
  writer = metrics.Writer(str(tmp_path))
  writer.write(5, {"loss": 2.0})  # a training record: not part of the trajectory
  for step, g in ((10, 0.02), (20, 0.05)):
    writer.write(step, {"monitor_G_dev": g, "monitor_G_stunting": g / 2,
                        "monitor_G_dev_marked": 10 * g, "monitor_G_stunting_marked": math.nan})
  writer.close()
  found = monitor.trajectory(metrics.read(str(tmp_path)))
  assert found == {"step": [10, 20], "G_dev": [0.02, 0.05], "G_stunting": [0.01, 0.025],
                   "G_dev_marked": [0.2, 0.5], "G_stunting_marked": [None, None],
                   "G_dev_lo": [None, None], "G_dev_hi": [None, None],
                   "accuracy_marked": [None, None],
                   "future_gain": [None, None]}  # the probes were off
  report.trajectory_plot({"this run": found}, tmp_path)
  assert (epath.Path(tmp_path) / "G_trajectory.png").read_bytes()[:4] == b"\x89PNG"
  assert not (epath.Path(tmp_path) / "probe_trajectory.png").exists()


def _gains(g, lo, hi):
  return {"monitor_G_dev": g, "monitor_G_dev_marked": g, "monitor_G_dev_lo": lo,
          "monitor_G_dev_hi": hi}


def test_the_warning_fires_only_after_g_had_been_clearly_positive(caplog):
  from lookahead_jax import config as config_lib

  config = config_lib.base_config()
  config.stunting.monitor_patience = 2
  never = monitor.Monitor(config, None, None)  # monitor_every = 0: nothing is built
  never.part = "marked"
  caplog.set_level("INFO", logger="absl")  # absl's verbosity sets that logger's level
  for step in range(1, 8):  # G never positive, or positive with an interval reaching 0
    never._warn(10 * step, _gains(-0.05, -0.1, 0.0) if step % 2 else _gains(0.02, -0.01, 0.05))
  assert [r.levelname for r in caplog.records] == ["INFO"]  # "not helped yet", once
  assert "has not helped yet" in caplog.records[0].getMessage()
  caplog.clear()
  helped = monitor.Monitor(config, None, None)
  helped.part = "marked"
  for step, gains in enumerate([_gains(0.1, 0.05, 0.15), _gains(0.03, -0.01, 0.07),
                                _gains(-0.01, -0.05, 0.03), _gains(-0.02, -0.06, 0.02)]):
    helped._warn(step, gains)
  warnings = [r for r in caplog.records if r.levelname == "WARNING"]
  assert len(warnings) == 1 and "step 3" in warnings[0].getMessage()
  assert "was clearly positive earlier" in warnings[0].getMessage()


def test_an_interval_from_sums_is_the_normal_interval_of_the_mean():
  import numpy as np

  x = np.random.default_rng(0).normal(0.2, 1.0, 500)
  mean, lo, hi = monitor.interval(x.sum(), (x * x).sum(), len(x))
  se = x.std(ddof=1) / np.sqrt(len(x))
  assert mean == np.float64(x.mean()).item() or abs(mean - x.mean()) < 1e-12
  assert abs(lo - (x.mean() - 1.96 * se)) < 1e-9 and abs(hi - (x.mean() + 1.96 * se)) < 1e-9
  assert all(math.isnan(v) for v in monitor.interval(0.0, 0.0, 0))


def test_held_out_figures_split_by_mark_group(tiny_config, tiny_params):
  import jax
  import jax.numpy as jnp
  import numpy as np

  from lookahead_jax import lookahead as la_lib
  from lookahead_jax import model as model_lib
  from lookahead_jax import stunting as stunting_lib

  rng = np.random.default_rng(0)
  b, t = 3, 10
  tokens = rng.integers(2, tiny_config.vocab_size, (b, t + 1)).astype(np.int32)
  groups = np.zeros((b, t), np.int32)
  groups[0, 2] = groups[1, 5] = groups[2, 7] = 2
  groups[0, 6] = groups[2, 3] = 3
  batch = {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:]),
           "weights": jnp.ones((b, t)), "segment_ids": jnp.ones((b, t), jnp.int32),
           "positions": jnp.broadcast_to(jnp.arange(t), (b, t)),
           "mark_group": jnp.asarray(groups)}
  la = la_lib.Lookahead(width=2, horizon=3)
  stunt = stunting_lib.Stunting(mode="none", lookahead=None, lam=0.5)
  out = jax.device_get(monitor.held_out_gains(tiny_params, batch, jax.random.key(0),
                                              config=tiny_config, lookaheads={"dev": la},
                                              stunting=stunt, groups=(2, 3)))
  logits, _ = model_lib.forward(tiny_params, batch["inputs"], batch["positions"],
                               config=tiny_config)
  right = np.asarray(logits.argmax(-1)) == tokens[:, 1:]
  for g in (2, 3):
    assert out[f"accuracy_marked_{g}"] == np.float32(right[groups == g].mean())
  assert out["accuracy_marked"] == np.float32(right[groups > 0].mean())
  per_group = [out[f"G_dev_marked_{g}"] * (groups == g).sum() for g in (2, 3)]
  assert abs(out["G_dev_marked"] - sum(per_group) / (groups > 0).sum()) < 1e-5
  assert out["count"] == 5  # the headline part: the marked tokens
  assert abs(out["sum_dev"] / 5 - out["G_dev_marked"]) < 1e-5
