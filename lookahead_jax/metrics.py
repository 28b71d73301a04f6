"""Metrics of a run: `workdir/metrics.jsonl` and TensorBoard event files in `workdir/tb`.

metrics.jsonl holds one JSON object per line, {"step": int, name: float, ...}, appended
as the run goes. A resumed run appends too, so steps logged after the last checkpoint of
an interrupted run appear twice; `read` keeps the last record of each (step, names).

The workdir may be a URL (gs://bucket/dir: etils.epath with gcsfs, and tensorboardX with
google-cloud-storage). Cloud objects cannot be appended to, so there metrics.jsonl is
rewritten whole, at most every `upload_every` seconds and when the writer closes.

`workdir/version.json` records the code a run was trained with (`code_version`, written
by `write_version` when training starts or resumes), so that figures from different code
can be told apart (compare.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import statistics
import subprocess
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from lookahead_jax import checkpoint

JSONL = "metrics.jsonl"
VERSION = "version.json"
UNKNOWN = "unknown"  # the commit outside a git checkout (an installed wheel)


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
    """One record of `values` at `step` (non-finite values are written as null to the
    JSONL log and left out of TensorBoard)."""
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
      if math.isfinite(value):  # TensorBoard has no null: a non-finite value is left out
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


def _git_version(root: str) -> dict[str, Any]:
  """The code version of the git checkout whose top level is `root` (see code_version)."""

  def git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", root, *args], capture_output=True, check=True,
                          timeout=60).stdout

  try:
    top = git("rev-parse", "--show-toplevel").decode().strip()
    if os.path.realpath(top) != os.path.realpath(root):  # the package is not this checkout's
      raise ValueError(top)
    commit = git("rev-parse", "HEAD").decode().strip()
    changes = git("diff", "HEAD", "--binary")
    untracked = [p for p in git("ls-files", "--others", "--exclude-standard", "-z").split(b"\0")
                 if p]
  except (OSError, subprocess.SubprocessError, ValueError):
    return {"commit": UNKNOWN, "dirty": None, "diff": None, "short": UNKNOWN}
  digest = hashlib.sha1(changes)
  for name in sorted(untracked):  # new files count, ignored ones (runs, caches) do not
    path = os.path.join(root, os.fsdecode(name))
    digest.update(name + b"\0")
    if os.path.isfile(path) and os.path.getsize(path) <= 1 << 20:
      with open(path, "rb") as f:
        digest.update(f.read())
  dirty = bool(changes or untracked)
  diff = digest.hexdigest()[:12] if dirty else None
  return {"commit": commit, "dirty": dirty, "diff": diff,
          "short": commit[:7] + (f"+{diff[:4]}" if dirty else "")}


@functools.cache
def _this_version() -> dict[str, Any]:
  return _git_version(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def code_version() -> dict[str, Any]:
  """The version of the code this process runs: {"commit": the git commit of the checkout
  the package was imported from, "dirty": whether the tree differs from it (changes to
  tracked files, or files git does not ignore), "diff": a hash of those differences (None
  when clean), "short": the commit's first 7 digits, with "+" and the hash's first 4 when
  dirty}. Commit and short "unknown", dirty None, outside a git checkout (an installed
  package). Read once per process: a process runs the code it imported at its start."""
  return dict(_this_version())


def version_label(version: dict[str, Any] | None) -> str:
  """A recorded version as short text: "?" when none was recorded, and each earlier
  version of a resumed run before the last, "old/new"."""
  if not version:
    return "?"
  return "/".join([*(v.get("short", UNKNOWN) for v in version.get("earlier", ())),
                   version.get("short", UNKNOWN)])


def read_version(workdir: str) -> dict[str, Any] | None:
  """The code version recorded in workdir/version.json; None when the run has none."""
  path = epath.Path(workdir) / VERSION
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except ValueError:  # a write cut short
    return None


def write_version(workdir: str, enabled: bool = True) -> dict[str, Any]:
  """Records `code_version()` in workdir/version.json when a run's training starts or
  resumes, and returns the record. A run resumed under other code keeps the versions it
  was trained with before in "earlier" (oldest first), so that no run is credited to one
  version it was only partly trained with. Only the writing process (`enabled`) writes."""
  version = code_version()
  old = read_version(workdir)
  if old is not None:
    earlier = old.pop("earlier", [])
    if old == version:
      return dict(old, earlier=earlier) if earlier else old
    version = dict(version, earlier=[*earlier, old])
  if enabled:
    path = epath.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / VERSION).write_text(json.dumps(version, indent=2) + "\n")
  return version
