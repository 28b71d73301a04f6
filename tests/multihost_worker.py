"""Test helper (not a test): `lookahead-jax train` in ONE process fed the global batches of N.

    python tests/multihost_worker.py train --data_shards=2 --config=configs/rhyme.py \
        --workdir=DIR [--config.KEY=VALUE ...]

The training pipeline shards documents by process: process p of N reads documents
p::N and packs and shuffles them with its own seed (pipeline.make_dataset), so the
global batch of an N-process run is [rows of shard 0; rows of shard 1; ...]. A plain
1-process run reads all documents in another order and sees other batches. This helper
runs train.run unchanged except for its input: the iterator builds the
N shards' iterators (pipeline.make_iterator with process_index=i, process_count=N) and
concatenates their batches, so a 1-process run computes the same steps on the same
global batches as the N-process run, which tests/test_multihost.py compares against.
The iterator is checkpointable like the real one (the state of every shard).
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np
from absl import app, flags, logging

from lookahead_jax import main as main_lib
from lookahead_jax import settings as settings_lib
from lookahead_jax import sharding, train
from lookahead_jax.data import pipeline

_SHARDS = flags.DEFINE_integer("data_shards", 2, "Processes whose data shards are emulated.")


class ShardUnion(grain.DatasetIterator):
  """Batches of N shard iterators concatenated row-wise; state: every shard's state."""

  def __init__(self, shards: list[pipeline.BatchIterator]):
    super().__init__(shards)
    self._shards = shards

  def __next__(self) -> dict[str, np.ndarray]:
    batches = [next(shard) for shard in self._shards]
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

  def counters(self) -> dict[str, int]:
    counts = [shard.counters() for shard in self._shards]
    return {k: sum(c[k] for c in counts) for k in counts[0]}

  def get_state(self) -> dict[str, Any]:
    return {"shards": [shard.get_state() for shard in self._shards]}

  def set_state(self, state: dict[str, Any]) -> None:
    for shard, shard_state in zip(self._shards, state["shards"], strict=True):
      shard.set_state(shard_state)


def emulated_train_iterator(settings, shards: int) -> ShardUnion:
  """train.make_train_iterator's iterator, for each of `shards` processes, concatenated."""
  d = settings.data
  return ShardUnion([
      pipeline.make_iterator(d.name, d.train_split, seed=settings.seed, prefetch=d.prefetch,
                             process_index=i, process_count=shards, **settings.pipeline)
      for i in range(shards)])


def main(argv):
  if argv[1:] != ["train"]:
    raise app.UsageError(f"only the train command is emulated; got {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:  # as lookahead-jax does: orbax logs every save
    logging.set_verbosity(logging.WARNING)
  train.make_train_iterator = lambda settings: emulated_train_iterator(settings,
                                                                      _SHARDS.value)
  config = flags.FLAGS.config
  train.run(settings_lib.validate(config), flags.FLAGS.workdir)


if __name__ == "__main__":
  sharding.set_cpu_compiler_flags()  # as lookahead-jax does
  app.run(main, flags_parser=main_lib.parse_flags)
