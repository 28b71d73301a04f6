"""Metrics of a run: `workdir/metrics.jsonl` and TensorBoard event files in `workdir/tb`.

metrics.jsonl holds one JSON object per line, {"step": int, name: float, ...}, appended
as the run goes. A resumed run appends too, so steps logged after the last checkpoint of
an interrupted run appear twice; `read` keeps the last record of each (step, names).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence

import tensorboardX

JSONL = "metrics.jsonl"


class Writer:
  """Writes scalars to metrics.jsonl and TensorBoard; a disabled writer does nothing.

  Only process 0 of a multi-process run writes (pass `enabled=jax.process_index() == 0`).
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self._enabled = enabled
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, JSONL), "a", encoding="utf-8")
      self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tb"))

  def write(self, step: int, values: Mapping[str, float]) -> None:
    """One record of `values` at `step` (non-finite values are written as null)."""
    if not self._enabled:
      return
    values = {k: float(v) for k, v in values.items()}
    record = {"step": int(step), **{k: v if math.isfinite(v) else None for k, v in values.items()}}
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    for name, value in values.items():
      self._tb.add_scalar(name, value, step)

  def close(self) -> None:
    if self._enabled:
      self._jsonl.close()
      self._tb.close()


def read(workdir: str) -> list[dict[str, float]]:
  """The records of metrics.jsonl in step order, the last one kept for a repeated step."""
  records: dict[tuple[int, tuple[str, ...]], dict[str, float]] = {}
  with open(os.path.join(workdir, JSONL), encoding="utf-8") as f:
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
