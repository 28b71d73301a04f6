"""Orbax checkpoints of the train state and the data iterator: save, restore, fallback.

workdir/checkpoints/<step>/ holds three items: "state" (the train state, orbax
StandardSave: sharded arrays, each process writes its shards), "data" (the grain
iterator state of every process) and "layout" ({"process_count": N}, the number of
processes that saved the data item). Orbax writes a step into a temporary directory and
renames it when complete, so an interrupted save is never a step. A step that fails to
restore is reported in one line, set aside in workdir/checkpoints_unreadable/, and the
next older one is restored.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils


def is_url(workdir: str | os.PathLike) -> bool:
  """Whether the workdir is a URL (gs://bucket/dir, any scheme://), not a local path."""
  return "://" in os.fspath(workdir)


def absolute(workdir: str | os.PathLike) -> epath.Path:
  """The workdir as an absolute path; a URL as it is."""
  workdir = os.fspath(workdir)
  return epath.Path(workdir if is_url(workdir) else os.path.abspath(workdir))


def manager(workdir: str | os.PathLike, keep: int | None = None,
            create: bool = False) -> ocp.CheckpointManager:
  """The CheckpointManager of workdir/checkpoints.

  create (training): asynchronous saves, the newest `keep` kept, temporary directories
  of interrupted saves removed. Otherwise (reading checkpoints): nothing is created,
  kept or removed.
  """
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep if create else None, create=create, enable_async_checkpointing=True,
      cleanup_tmp_directories=create)
  return ocp.CheckpointManager(absolute(workdir) / "checkpoints", options=options)


def save(mngr: ocp.CheckpointManager, state: Any, iterator: Any) -> None:
  """Starts saving state and iterator at state.step; returns once the save is under way."""
  mngr.save(int(state.step), args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator),
      layout=ocp.args.JsonSave({"process_count": jax.process_count()})), force=True)


def _saved_by(mngr: ocp.CheckpointManager, step: int) -> int | None:
  """How many processes saved the step's data item (None: not recorded or unreadable)."""
  try:
    layout = mngr.restore(step, args=ocp.args.Composite(layout=ocp.args.JsonRestore()))
    return int(layout["layout"]["process_count"])
  except Exception:  # pylint: disable=broad-except  (a step without the item, or corrupt)
    return None


def restore(mngr: ocp.CheckpointManager, abstract: Any,
            make_iterator: Callable[[], Any] | None = None,
            ) -> tuple[Any, Any | None, list[int]] | None:
  """The newest readable checkpoint: (state, iterator or None, unreadable newer steps).

  abstract: the state's ShapeDtypeStructs with shardings (where the arrays go).
  make_iterator: a fresh input iterator to restore into (None: the state only). A step
  saved by another number of processes restores the state, and the iterator starts over.
  Returns None when there is no readable checkpoint.
  """
  bad = []
  for step in sorted(mngr.all_steps(), reverse=True):
    items = {"state": ocp.args.StandardRestore(abstract)}
    saved_by = _saved_by(mngr, step) if make_iterator is not None else None
    new_layout = saved_by is not None and saved_by != jax.process_count()
    if make_iterator is not None and not new_layout:
      items["data"] = grain.checkpoint.CheckpointRestore(make_iterator())
    try:
      restored = mngr.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except  (orbax, tensorstore, json errors)
      first_line = (str(e).strip().splitlines() or [""])[0][:300]
      logging.warning("checkpoint step %d is unreadable, skipping it (%s: %s)", step,
                      type(e).__name__, first_line)
      bad.append(step)
      continue
    if new_layout:
      # Each process saved the position of its own document shard (p::N); with another
      # process count the shards are other documents, so no saved position applies.
      logging.warning("checkpoint step %d was saved by %d processes and this run has %d: "
                      "its parameters and optimizer state are restored, and the input "
                      "pipeline starts over in the new layout (another order of the data)",
                      step, saved_by, jax.process_count())
      return restored["state"], make_iterator(), bad
    return restored["state"], restored.get("data"), bad
  return None


def set_aside(workdir: str | os.PathLike, steps: list[int], mngr: ocp.CheckpointManager) -> None:
  """Moves unreadable steps to workdir/checkpoints_unreadable/ so new saves can take them."""
  if jax.process_index() == 0:
    target = epath.Path(workdir) / "checkpoints_unreadable"
    target.mkdir(parents=True, exist_ok=True)
    if is_url(workdir):  # cloud storage has no empty directories to move into
      (target / "README.txt").write_text("Checkpoint steps that could not be restored.\n")
    for step in steps:
      dest = target / f"{step}-{int(time.time())}"
      (epath.Path(mngr.directory) / str(step)).rename(dest)
      logging.warning("moved unreadable checkpoint step %d to %s", step, dest)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("set aside unreadable checkpoints")
  mngr.reload()


def kept_steps(workdir: str | os.PathLike) -> list[int]:
  """The steps in workdir/checkpoints, oldest first."""
  steps_dir = epath.Path(workdir) / "checkpoints"
  if not steps_dir.is_dir():
    return []
  return sorted(int(p.name) for p in steps_dir.iterdir() if p.name.isdigit())
