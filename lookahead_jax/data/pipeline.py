"""grain input pipeline: documents -> tokens -> pieces -> first-fit packed rows -> batches.

Each document is tokenized and framed by EOD on both sides, `[EOD] + tokens + [EOD]`,
so the first token of a document is predicted (from EOD, as GPT-2 reads documents) and
the last one predicts EOD. A framed document of n+1 tokens gives n (input, target)
pairs; one of more than `seq_len` = T pairs is cut into consecutive pieces of T pairs
(the last shorter), each its own segment with positions from 0. Pieces are packed
first-fit into rows of T (grain's FirstFitPackIterDataset), so a document that fits in
a row is never cut, and the rest of a row is padding. Nothing is dropped or truncated.

A batch, local to this process (b = global_batch_size / process_count rows):

    inputs           int32   [b, T]  token ids
    targets          int32   [b, T]  the next token of the same document
    weights          float32 [b, T]  1.0 where the target is scored, 0.0 for padding (and,
                                     with answer_only, for a testbed's prompt tokens)
    segment_ids      int32   [b, T]  1, 2, 3, ... per piece within the row, 0 padding
    positions        int32   [b, T]  position of the input within its piece
    needs_lookahead  bool    [b, T]  testbed mark of the TARGET token (False for text)

Training (`make_iterator`): each process reads the documents `process_index::
process_count`; documents are shuffled per epoch from `seed` (and rows within each
packing window), repeated `num_epochs` times (None: forever); a last partial batch is
padded with weight-0 rows. Evaluation (`make_ordered_iterator`): every process packs the
whole split in order, without shuffling, once; global batches are padded to full size
and process p takes rows [p*b, (p+1)*b), so all processes run the same number of steps
and every scored target token is in exactly one batch with weight 1.

`iterator.counters()` counts, since the start (restored with the iterator state):
documents, empty_documents (no content token), short_documents (fewer than T pairs),
split_documents (cut into pieces), pieces, tokens_in (pairs of the documents started),
tokens_out (real targets emitted) and padding (padding targets emitted). After a full
pass tokens_in == tokens_out.

`answer_only` (testbeds with their own vocabulary only): the targets inside an example's
prompt (path_star's edge list and query, tsp's cities) get weight 0, so the loss, the
validation loss and every evaluation score only the answer (the path, the tour) and the
EOD after it. The prompt is random: scoring it spends the model on predicting noise.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import grain
import jax
import numpy as np

from lookahead_jax.data import builders, local, registry
from lookahead_jax.data.tokenizers import Tokenizer, get_tokenizer

BATCH_KEYS = ("inputs", "targets", "weights", "segment_ids", "positions", "needs_lookahead")
COUNTERS = ("documents", "empty_documents", "short_documents", "split_documents", "pieces",
            "tokens_in", "tokens_out", "padding")
_PACKED = ("inputs", "targets", "needs_lookahead", "scored")
_READ_CHUNK = 64  # documents read, tokenized and cut together


def mark_groups(dataset: str, tokenizer: Tokenizer, targets: np.ndarray,
                marks: np.ndarray) -> np.ndarray:
  """int32 [b, T] group of each marked target, 0 unmarked: the testbed's groups (path_star:
  the goal's depth; reports split G and accuracy by them), 1 on every other dataset."""
  testbed = registry.get(dataset)
  groups = testbed.mark_groups if testbed is not None else local.mark_flags
  return groups(tokenizer, targets, marks)


_ToTokens = Callable[[Mapping[str, Any]], tuple[np.ndarray, np.ndarray, np.ndarray]]


def document_fn(dataset: str, tokenizer: Tokenizer, text_key: str = "text",
                answer_only: bool = False) -> _ToTokens:
  """Record -> (content ids int32 [n], needs-lookahead marks bool [n], scored bool [n]).

  scored[i]: content token i is a target of the loss (all, except a testbed's prompt
  under `answer_only`).
  """
  testbed = registry.get(dataset)
  if answer_only and not registry.own_vocabulary(dataset):
    raise ValueError(f"answer_only needs a testbed with a prompt and an answer "
                     f"({', '.join(registry.own_vocabulary_names())}), not {dataset!r}")
  if registry.own_vocabulary(dataset):
    def own(record):
      ids = np.asarray(record["tokens"], np.int32)
      start = tokenizer.prompt_length(ids) if answer_only else 0
      return ids, np.asarray(record["needs_lookahead"], bool), np.arange(len(ids)) >= start

    return own
  marker = testbed.marks if testbed is not None else None

  def text(record):
    if marker is not None:
      ids, marks = marker(tokenizer, local.text_of(record["text"]), record["spans"])
    else:
      ids = np.asarray(tokenizer.encode(local.text_of(record[text_key])), np.int32)
      marks = np.zeros(len(ids), bool)
    return ids, marks, np.ones(len(ids), bool)

  return text


@dataclasses.dataclass(frozen=True)
class _Pieces(grain.transforms.Map):
  """Document indices int64 [k] -> pieces of at most T (input, target) pairs, in order.

  The k records are read in one call. Each document is framed as [EOD] + tokens + [EOD];
  a piece is {"inputs", "targets", "needs_lookahead", "scored": [L <= T], "doc": int64 [4] =
  (content tokens, pairs of the document, piece index, pieces of the document)}.
  """

  records: Any  # a TFDS data source
  to_tokens: _ToTokens
  eod_id: int
  seq_len: int

  def map(self, indices):
    eod = np.array([self.eod_id], np.int32)
    pieces = []
    for record in self.records.__getitems__(np.asarray(indices).tolist()):
      content, marks, scored = self.to_tokens(record)
      ids = np.concatenate([eod, content, eod])
      marks = np.concatenate([[False], marks, [False]])
      scored = np.concatenate([[False], scored, [True]])
      pairs = len(ids) - 1
      count = -(-pairs // self.seq_len)
      for k, start in enumerate(range(0, pairs, self.seq_len)):
        stop = min(start + self.seq_len, pairs)
        pieces.append({
            "inputs": ids[start:stop],
            "targets": ids[start + 1:stop + 1],
            "needs_lookahead": marks[start + 1:stop + 1],
            "scored": scored[start + 1:stop + 1],
            "doc": np.array([len(content), pairs, k, count], np.int64),
        })
    return pieces


@dataclasses.dataclass(frozen=True)
class _Each(grain.experimental.FlatMapTransform):
  """A list -> its elements."""

  max_fan_out: int = 1 << 30

  def flat_map(self, element):
    return element


@dataclasses.dataclass(frozen=True)
class _Row(grain.transforms.Map):
  """Packed row -> the batch keys of one row plus "counts" int64 [len(COUNTERS)]."""

  seq_len: int

  def map(self, row):
    seg = row["inputs_segment_ids"].astype(np.int32)
    docs = np.stack(row["doc"]).reshape(-1, 4)
    content, pairs, index, count = docs.T
    first = index == 0
    tokens_out = int((seg > 0).sum())
    counts = np.array([
        first.sum(), (first & (content == 0)).sum(), (first & (pairs < self.seq_len)).sum(),
        (first & (count > 1)).sum(), len(docs), pairs[first].sum(), tokens_out,
        self.seq_len - tokens_out], np.int64)
    return {
        "inputs": row["inputs"].astype(np.int32),
        "targets": row["targets"].astype(np.int32),
        "weights": ((seg > 0) & row["scored"].astype(bool)).astype(np.float32),
        "segment_ids": seg,
        "positions": row["inputs_positions"].astype(np.int32),
        "needs_lookahead": row["needs_lookahead"].astype(bool),
        "counts": counts,
    }


@dataclasses.dataclass(frozen=True)
class _PadBatch(grain.transforms.Map):
  """Pads a batch to `rows` rows with weight-0 rows (pad ids, counted as padding)."""

  rows: int
  pad_id: int

  def map(self, batch):
    missing = self.rows - len(batch["inputs"])
    if missing == 0:
      return batch
    seq_len = batch["inputs"].shape[1]
    fill = {"inputs": self.pad_id, "targets": self.pad_id}
    out = {}
    for key, value in batch.items():
      pad = np.full((missing,) + value.shape[1:], fill.get(key, 0), value.dtype)
      if key == "counts":
        pad[:, COUNTERS.index("padding")] = seq_len
      out[key] = np.concatenate([value, pad])
    return out


@dataclasses.dataclass(frozen=True)
class _ProcessRows(grain.transforms.Map):
  """Rows [p*b, (p+1)*b) of a global batch."""

  index: int
  rows: int

  def map(self, batch):
    return {k: v[self.index * self.rows:(self.index + 1) * self.rows] for k, v in batch.items()}


class BatchIterator(grain.DatasetIterator):
  """Yields the batches (BATCH_KEYS) and keeps the counters in its checkpointable state."""

  def __init__(self, parent: grain.DatasetIterator):
    super().__init__(parent)
    self._counts = np.zeros(len(COUNTERS), np.int64)

  def __next__(self) -> dict[str, np.ndarray]:
    batch = dict(next(self._parent))
    self._counts += batch.pop("counts").sum(axis=0)
    return batch

  def counters(self) -> dict[str, int]:
    """Counts since the start of iteration (see the module docstring)."""
    return dict(zip(COUNTERS, map(int, self._counts)))

  def get_state(self) -> dict[str, Any]:
    return {"parent": self._parent.get_state(), "counters": self.counters()}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._counts = np.array([state["counters"][k] for k in COUNTERS], np.int64)


class _Counted(grain.IterDataset):
  """Batches with "counts" -> `BatchIterator`."""

  def __iter__(self) -> BatchIterator:
    return BatchIterator(self._parent.__iter__())


def _layout(process_index: int | None, process_count: int | None, global_batch_size: int,
            seq_len: int) -> tuple[int, int, int]:
  """(process index, process count, rows per process), checked before any reading."""
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if seq_len < 1:
    raise ValueError(f"seq_len={seq_len} must be >= 1")
  if not 0 <= index < count:
    raise ValueError(f"process_index={index} is not in [0, process_count={count})")
  if global_batch_size <= 0 or global_batch_size % count:
    raise ValueError(f"global_batch_size={global_batch_size} must be a positive multiple of "
                     f"process_count={count}")
  return index, count, global_batch_size // count


def _source(dataset: str, split: str, data_dir, options, tokenizer, text_key, answer_only):
  """(records, tokenizer, record -> (ids, marks)) after checking that they go together."""
  options = dict(options or {})
  records = builders.data_source(dataset, split, data_dir, **options)
  base = registry.base_name(dataset)
  expected = builders.default_tokenizer(base, **options)
  tokenizer = expected if tokenizer is None else get_tokenizer(tokenizer)
  if registry.own_vocabulary(base):
    if not (isinstance(tokenizer, type(expected)) and tokenizer.vocab_size == expected.vocab_size):
      raise ValueError(f"{base} is stored as tokens of its own vocabulary: pass tokenizer=None "
                       f"(or builders.default_tokenizer({base!r}, **options))")
  elif registry.get(base) is None:  # text files and TFDS sets: the text feature
    features = records.dataset_info.features
    if text_key not in features:
      raise ValueError(f"dataset {dataset!r} has no feature {text_key!r} (features: "
                       f"{', '.join(features)}); pass text_key=")
  return records, tokenizer, document_fn(dataset, tokenizer, text_key, answer_only)


def _packed_rows(docs: grain.MapDataset, records, tokenizer: Tokenizer, to_tokens,
                 seq_len: int, packing_bins: int, seed: int, shuffle: bool,
                 read_threads: int) -> grain.IterDataset:
  """Document indices -> packed rows (the batch keys of one row and its counts)."""
  # Documents are read and cut into pieces _READ_CHUNK at a time: one ArrayRecord call
  # per chunk costs a fraction of single reads. grain's read prefetch polls its whole
  # buffer per element, so that buffer stays small.
  ds = docs.batch(_READ_CHUNK).map(_Pieces(records, to_tokens, tokenizer.eod_id, seq_len))
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                            prefetch_buffer_size=2 * read_threads))
  ds = grain.experimental.FlatMapIterDataset(ds, _Each())
  ds = grain.experimental.FirstFitPackIterDataset(
      ds, length_struct={k: seq_len for k in _PACKED}, num_packing_bins=packing_bins,
      seed=seed, shuffle_bins=shuffle, meta_features=("doc",),
      padding_struct={"inputs": tokenizer.pad_id, "targets": tokenizer.pad_id,
                      "needs_lookahead": False, "scored": False})
  return ds.map(_Row(seq_len))


def make_dataset(dataset: str, split: str, *, seq_len: int, global_batch_size: int,
                 tokenizer: Tokenizer | str | Mapping[str, Any] | None = None,
                 data_dir: str | os.PathLike | None = None, seed: int = 0, shuffle: bool = True,
                 num_epochs: int | None = None, process_index: int | None = None,
                 process_count: int | None = None, options: Mapping[str, Any] | None = None,
                 text_key: str = "text", answer_only: bool = False, packing_bins: int = 128,
                 read_threads: int = 0, prefetch: int = 2) -> grain.IterDataset:
  """The training pipeline as a grain IterDataset; `iter()` of it is a `BatchIterator`.

  Args:
    dataset: a local builder (rhyme, article, tsp, path_star, text_files; prepared on use)
      or a TFDS dataset prepared as ArrayRecord in the data dir.
    split: a TFDS split expression ("train", "train_n5+train_n6", "train[:90%]").
    seq_len: T, the row length.
    global_batch_size: rows per step over all processes.
    tokenizer: anything `get_tokenizer` takes; None: the dataset's default (bytes for
      text, tsp's own vocabulary for tsp).
    data_dir: see `builders.resolve_data_dir`.
    seed: shuffling seed; the same seed gives the same batches.
    shuffle: shuffle documents (per epoch) and rows within each packing window.
    num_epochs: passes over the data; None repeats forever.
    process_index, process_count: this process's shard; default jax's.
    options: builder options (e.g. {"paths": [...]} for text_files).
    text_key: the text feature of a TFDS text dataset.
    answer_only: weight 0 on a testbed's prompt targets (module docstring).
    packing_bins: rows packed together (more: less padding, more memory).
    read_threads: threads reading and tokenizing documents (0: in the iterating
      thread; reading is mostly Python, so threads only pay off with spare cores).
    prefetch: batches prepared ahead in a background thread (0: none).
  """
  index, count, rows = _layout(process_index, process_count, global_batch_size, seq_len)
  records, tokenizer, to_tokens = _source(dataset, split, data_dir, options, tokenizer, text_key,
                                      answer_only)
  docs = grain.MapDataset.range(len(records))[index::count]
  if shuffle:
    docs = docs.shuffle(seed)
  if num_epochs != 1:
    docs = docs.repeat(num_epochs)
  ds = _packed_rows(docs, records, tokenizer, to_tokens, seq_len, packing_bins, seed + index,
                    shuffle, read_threads)
  ds = ds.batch(rows).map(_PadBatch(rows, tokenizer.pad_id))
  if prefetch:
    ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=prefetch)
  return _Counted(ds)


def make_iterator(dataset: str, split: str, **kwargs: Any) -> BatchIterator:
  """`iter(make_dataset(dataset, split, **kwargs))`: checkpointable training batches."""
  return iter(make_dataset(dataset, split, **kwargs))


def make_ordered_iterator(dataset: str, split: str, *, seq_len: int, global_batch_size: int,
                       tokenizer: Tokenizer | str | Mapping[str, Any] | None = None,
                       data_dir: str | os.PathLike | None = None,
                       process_index: int | None = None, process_count: int | None = None,
                       options: Mapping[str, Any] | None = None, text_key: str = "text",
                       answer_only: bool = False, packing_bins: int = 128,
                       read_threads: int = 0) -> BatchIterator:
  """One ordered pass over a split; every target token is in exactly one batch.

  Same arguments as `make_dataset` (no shuffling, no repetition). All processes read the
  whole split and yield the same number of batches.
  """
  index, count, rows = _layout(process_index, process_count, global_batch_size, seq_len)
  records, tokenizer, to_tokens = _source(dataset, split, data_dir, options, tokenizer, text_key,
                                      answer_only)
  docs = grain.MapDataset.range(len(records))
  ds = _packed_rows(docs, records, tokenizer, to_tokens, seq_len, packing_bins, 0, False,
                    read_threads)
  ds = ds.batch(global_batch_size).map(_PadBatch(global_batch_size, tokenizer.pad_id))
  return iter(_Counted(ds.map(_ProcessRows(index, rows))))


def global_batch(batch: Mapping[str, np.ndarray],
                 sharding: jax.sharding.Sharding) -> dict[str, jax.Array]:
  """Process-local batch [b, T] -> global jax.Arrays [global_batch_size, T] on `sharding`.

  `sharding` splits the batch axis over the mesh (e.g. NamedSharding(mesh,
  P(("data", "fsdp")))); each process contributes its own rows.
  """
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}
