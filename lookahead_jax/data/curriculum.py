"""A curriculum over training splits: stages trained in order, moving on by steps or by
validation accuracy (config: data.curriculum, data.curriculum_steps,
data.curriculum_accuracy).

A stage is a split expression of the training data (tsp: "train_n5", then
"train_n5+train_n6", ...). The trainer draws its batches from `Curriculum`, a grain
iterator over the current stage's batches whose checkpointed state holds the stage, the
batches drawn in it and the stage's own iterator state, so a killed run resumes in the
same stage at the same place. It moves on to the next stage

  - by steps: after `steps` batches of a stage (0: never by steps);
  - by accuracy: when the trainer reports (`observe`) a validation accuracy of at least
    `accuracy` on the stage's validation splits (`validation_split`: every term's
    training split name replaced by the validation split's; 0: never by accuracy);

whichever comes first; the last stage lasts until the end of training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grain
import numpy as np

from lookahead_jax.data import pipeline


def check(stages: Sequence[str], steps: int, accuracy: float, train_split: str,
          val_every: int) -> None:
  """Raises ValueError (one line, naming the key) for a curriculum that cannot run."""
  if not stages:
    return
  for stage in stages:
    bad = [t for t in stage.split("+") if not t.strip().startswith(train_split)]
    if bad:
      raise ValueError(f"data.curriculum: the term(s) {bad} of stage {stage!r} do not start "
                       f"with data.train_split={train_split!r}, so the stage has no "
                       f"validation split; write each stage from {train_split!r} splits")
  if steps < 0 or not 0.0 <= accuracy <= 1.0:
    raise ValueError(f"data.curriculum_steps={steps} must be >= 0 and "
                     f"data.curriculum_accuracy={accuracy} in [0, 1]")
  if not steps and not accuracy:
    raise ValueError("data.curriculum: set data.curriculum_steps or data.curriculum_accuracy "
                     "(> 0) so the stages can move on")
  if accuracy and not val_every:
    raise ValueError(f"data.curriculum_accuracy={accuracy} is read at each validation: set "
                     f"train.val_every > 0")


def validation_split(stage: str, train_split: str, val_split: str) -> str:
  """The stage's validation splits: "train_n5+train_n6" -> "validation_n5+validation_n6"."""
  return "+".join(val_split + t.strip()[len(train_split):] for t in stage.split("+"))


class Curriculum(grain.DatasetIterator):
  """Batches of the current stage (`make(split)` gives its iterator); checkpointable."""

  def __init__(self, stages: Sequence[str], make: Callable[[str], pipeline.BatchIterator],
               steps: int, accuracy: float):
    super().__init__()
    self.stages = tuple(stages)
    self._make, self._steps, self._accuracy = make, steps, accuracy
    self._done = np.zeros(len(pipeline.COUNTERS), np.int64)  # counters of finished stages
    self._enter(0, 0)

  def _enter(self, stage: int, drawn: int) -> None:
    self.stage, self._drawn = stage, drawn
    self._batches = self._make(self.stages[stage])

  def _next_stage(self) -> None:
    self._done += list(self._batches.counters().values())
    self._enter(self.stage + 1, 0)

  def __next__(self) -> dict[str, np.ndarray]:
    last = self.stage == len(self.stages) - 1
    if self._steps and self._drawn >= self._steps and not last:
      self._next_stage()
    self._drawn += 1
    return next(self._batches)

  def observe(self, accuracy: float) -> bool:
    """A validation accuracy on the current stage; True when it moves the stage on."""
    if (self._accuracy and accuracy >= self._accuracy
        and self.stage < len(self.stages) - 1):
      self._next_stage()
      return True
    return False

  def counters(self) -> dict[str, int]:
    """The pipeline's counters (pipeline.COUNTERS) over all stages so far."""
    now = np.array(list(self._batches.counters().values()), np.int64)
    return dict(zip(pipeline.COUNTERS, map(int, self._done + now)))

  def get_state(self) -> dict[str, Any]:
    return {"stage": self.stage, "drawn": self._drawn, "done": self._done.tolist(),
            "batches": self._batches.get_state()}

  def set_state(self, state: dict[str, Any]) -> None:
    self._enter(int(state["stage"]), int(state["drawn"]))
    self._done = np.asarray(state["done"], np.int64)
    self._batches.set_state(state["batches"])
