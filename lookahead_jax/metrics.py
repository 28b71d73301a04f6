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
import time
from collections.abc import Mapping, Sequence

import tensorboardX
from etils import epath

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
      self._path, self._remote = path / JSONL, "://" in os.fspath(workdir)
      if self._remote:  # kept whole, rewritten
        self._text = self._path.read_text() if self._path.exists() else ""
        self._upload_every, self._uploaded = upload_every, time.monotonic()
      else:
        self._jsonl = self._path.open("a", encoding="utf-8")
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
  """The records of metrics.jsonl in step order, the last one kept for a repeated step."""
  records: dict[tuple[int, tuple[str, ...]], dict[str, float]] = {}
  with (epath.Path(workdir) / JSONL).open(encoding="utf-8") as f:
    for line in f:
      record = json.loads(line)
      records[record["step"], tuple(sorted(record))] = record
  return sorted(records.values(), key=lambda r: r["step"])


def table(rows: Sequence[tuple[str, str]], title: str) -> str:
  """A two-column text table: name, value."""
  width = max(len(name) for name, _ in rows)
  lines = [title, "-" * len(title)]
  lines += [f"{name:<{width}}  {value}" for name, value in rows]
  return "\n".join(lines)
