"""The monitor's G over training: read back from a run's log and plotted."""

import math

from etils import epath

from lookahead_jax import metrics, monitor, report


def test_trajectory_reads_the_monitor_records_and_the_plot_is_saved(tmp_path):
  assert monitor.trajectory(str(tmp_path)) == {"step": [], **{
      k: [] for k in monitor.TRAJECTORY_KEYS}}  # a run that was not trained here
  writer = metrics.Writer(str(tmp_path))
  writer.write(5, {"loss": 2.0})  # a training record: not part of the trajectory
  for step, g in ((10, 0.02), (20, 0.05)):
    writer.write(step, {"monitor_G_dev": g, "monitor_G_stunting": g / 2,
                        "monitor_G_dev_marked": 10 * g, "monitor_G_stunting_marked": math.nan})
  writer.close()
  found = monitor.trajectory(str(tmp_path))
  assert found == {"step": [10, 20], "G_dev": [0.02, 0.05], "G_stunting": [0.01, 0.025],
                   "G_dev_marked": [0.2, 0.5], "G_stunting_marked": [None, None],
                   "future_gain": [None, None]}  # the probes were off
  report.trajectory_plot({"this run": found}, tmp_path)
  assert (epath.Path(tmp_path) / "G_trajectory.png").read_bytes()[:4] == b"\x89PNG"
  assert not (epath.Path(tmp_path) / "probe_trajectory.png").exists()
