"""Metrics of a run: `workdir/metrics.jsonl` and TensorBoard event files in `workdir/tb`.

metrics.jsonl holds one JSON object per line, {"step": int, name: float, ...}, appended
as the run goes. A resumed run appends too, so steps logged after the last checkpoint of
an interrupted run appear twice; `read` keeps the last record of each (step, names).

The workdir may be a URL (gs://bucket/dir: etils.epath with gcsfs, and tensorboardX with
google-cloud-storage). Cloud objects cannot be appended to, so there metrics.jsonl is
rewritten whole, at most every `upload_every` seconds and when the writer closes.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Mapping

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from lookahead_jax import checkpoint

JSONL = "metrics.jsonl"


class Writer:
  """Writes scalars to metrics.jsonl and TensorBoard; a disabled writer does nothing.

  Only process 0 of a multi-process run writes (pass `enabled=jax.process_index() == 0`).
  """

  def __init__(self, workdir: str, enabled: bool = True, upload_every: float = 30.0):
    self._enabled = enabled
    if enabled:
      path = epath.Path(workdir)
      path.mkdir(parents=True, exist_ok=True)
      self._path, self._remote = path / JSONL, checkpoint.is_url(workdir)
      if self._remote:  # kept whole, rewritten
        self._text = self._path.read_text() if self._path.exists() else ""
        self._upload_every, self._uploaded = upload_every, time.monotonic()
      else:
        self._jsonl = self._path.open("a", encoding="utf-8")
      # Imported here, by the one process that writes events: tensorboardX imports torch
      # when it is installed (2.4 s), which no other command or process needs.
      import tensorboardX  # noqa: PLC0415

      self._tb = tensorboardX.SummaryWriter(os.fspath(path / "tb"))

  def write(self, step: int, values: Mapping[str, float]) -> None:
    """One record of `values` at `step` (non-finite values are written as null)."""
    if not self._enabled:
      return
    values = {k: float(v) for k, v in values.items()}
    record = {"step": int(step), **{k: v if math.isfinite(v) else None for k, v in values.items()}}
    line = json.dumps(record) + "\n"
    if self._remote:
      self._text += line
      if time.monotonic() - self._uploaded >= self._upload_every:
        self._upload()
    else:
      self._jsonl.write(line)
      self._jsonl.flush()
    for name, value in values.items():
      self._tb.add_scalar(name, value, step)

  def _upload(self) -> None:
    self._path.write_text(self._text)
    self._uploaded = time.monotonic()

  def close(self) -> None:
    if self._enabled:
      if self._remote:
        self._upload()
      else:
        self._jsonl.close()
      self._tb.close()


def read(workdir: str) -> list[dict[str, float]]:
  """The records of metrics.jsonl in step order, the last one kept for a repeated step;
  [] when the run has no log (here)."""
  path = epath.Path(workdir) / JSONL
  if not path.exists():
    return []
  records: dict[tuple[int, tuple[str, ...]], dict[str, float]] = {}
  with path.open(encoding="utf-8") as f:
    for line in f:
      record = json.loads(line)
      records[record["step"], tuple(sorted(record))] = record
  return sorted(records.values(), key=lambda r: r["step"])


class StepLog:
  """Per-step metrics on the host, averaged and written every `log_every` steps."""

  def __init__(self, writer: Writer, tokens_per_step: int, start: float):
    self.writer, self.tokens_per_step = writer, tokens_per_step
    self.rows: list[dict[str, float]] = []
    self.last_time, self.paused = start, 0.0
    self.records: list[dict[str, float]] = []

  def add(self, metrics: dict[str, float]) -> None:
    self.rows.append(metrics)

  def flush(self, step: int) -> dict[str, float]:
    """Writes the mean of the rows since the last flush; returns the record.

    Step statistics are averaged over the finite steps (NaN entries, e.g. alignment_cos on
    steps that do not compute it, are left out); counters are summed.
    """
    now = time.perf_counter()
    seconds = max(now - self.last_time - self.paused, 1e-9)
    finite = [r for r in self.rows if not r["nonfinite"]] or self.rows
    counters = ("nonfinite", "skipped", "nonfinite_in_a_row", "learning_rate")
    record = {}
    for key in (k for k in self.rows[0] if k not in counters):
      values = [r[key] for r in finite if not math.isnan(r[key])]
      record[key] = statistics.fmean(values) if values else math.nan
    record.update(learning_rate=self.rows[-1]["learning_rate"],
                  nonfinite=sum(r["nonfinite"] for r in self.rows),
                  skipped=sum(r["skipped"] for r in self.rows),
                  step_time=seconds / len(self.rows),
                  tokens_per_s=self.tokens_per_step * len(self.rows) / seconds)
    self.writer.write(step, record)
    self.records.append(record)
    self.rows, self.last_time, self.paused = [], now, 0.0
    return record


def sum_over_processes(counters: dict[str, int]) -> dict[str, int]:
  """Counters summed over the processes (each counts the documents of its own shard)."""
  if jax.process_count() == 1:
    return counters
  values = np.array(list(counters.values()), np.int64)
  # int32 halves: jax arrays are 32-bit unless x64 is on, and token counts pass 2**31
  halves = np.stack([values >> 31, values & (2**31 - 1)], -1).astype(np.int32)
  gathered = np.asarray(multihost_utils.process_allgather(halves)).astype(np.int64)
  totals = (gathered[..., 0] << 31) + gathered[..., 1]
  return dict(zip(counters, map(int, totals.sum(0))))


class Profile:
  """A jax.profiler trace of the training steps that start at step first .. last-1.

  `step(n, state)` before the step that starts at step n: the trace starts at n == first
  and stops (after the traced steps finished) at n == last, written to `workdir/profile`
  for TensorBoard's profile plugin or Perfetto. first == last: off.
  """

  def __init__(self, workdir: str, first: int, last: int):
    self.dir, self.first, self.last = os.path.join(workdir, "profile"), first, last
    self.active = False

  def step(self, n: int, state) -> None:
    if n == self.first < self.last:
      jax.profiler.start_trace(self.dir)
      self.active = True
    elif n == self.last:
      self.stop(state)

  def stop(self, state=None) -> None:
    """Ends the trace once `state` (the newest step's output) is computed."""
    if self.active:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.active = False
