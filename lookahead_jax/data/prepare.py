"""What the commands do to a config's data before anything reads it: prepare the dataset
and train its tokenizer (`prepare`), and the tokenizer a config names (`tokenizer`).

`settings.validate` stays pure: it reads what is here and writes nothing; every command
calls `prepare(config.data)` first and passes its tokenizer to `validate`.
"""

from __future__ import annotations

import contextlib

import jax
from jax.experimental import multihost_utils
from ml_collections import ConfigDict

from lookahead_jax.data import builders
from lookahead_jax.data.tokenizers import SentencePieceTokenizer, Tokenizer, get_tokenizer

SENTENCEPIECE = "sentencepiece:"


@contextlib.contextmanager
def main_process_first(what: str):
  """Process 0 runs the block first, then the others (one process: just the block).

  For files every process would otherwise create at once in shared storage (a local
  testbed prepared on first use, a SentencePiece model trained on first use): the
  others find them ready. An error in process 0 reaches the others too, who then meet
  the same error themselves.
  """
  several = jax.process_count() > 1
  if several and jax.process_index() != 0:
    multihost_utils.sync_global_devices(what)
  try:
    yield
  finally:
    if several and jax.process_index() == 0:
      multihost_utils.sync_global_devices(what)


def tokenizer(d: ConfigDict, train: bool = False) -> Tokenizer:
  """The tokenizer of `data.tokenizer` for the data section `d`.

  "" is the dataset's own (bytes for text, a testbed's own vocabulary); "sentencepiece:N"
  a SentencePiece model of N pieces trained on the train split and saved beside the
  dataset: loaded when it is there, trained when `train` (else a one-line ValueError);
  anything else goes to `tokenizers.get_tokenizer` ("byte", a .model file, a directory
  with a Hugging Face tokenizer).
  """
  options = d.options.to_dict()
  if d.tokenizer.startswith(SENTENCEPIECE):
    size = int(d.tokenizer[len(SENTENCEPIECE):])
    path = builders.sentencepiece_path(d.name, size, d.data_dir, **options)
    if path.is_file():
      return SentencePieceTokenizer(path)
    if not train:
      raise ValueError(f"no SentencePiece model at {path} yet: "
                       "lookahead_jax.data.prepare.prepare(config.data) trains it (every "
                       "command does)")
    return builders.sentencepiece_for(d.name, size, d.data_dir, d.train_split, d.text_key,
                                      **options)
  if d.tokenizer:
    return get_tokenizer(d.tokenizer)
  return builders.default_tokenizer(d.name, **options)


def prepare(d: ConfigDict) -> Tokenizer:
  """Prepares the dataset of the data section `d` (a local builder generates it; a TFDS
  dataset must be prepared already) and trains its SentencePiece model if it names one,
  process 0 first; returns the tokenizer. Errors are `builders.DatasetNotPreparedError`,
  ValueError or OSError, each one line."""
  with main_process_first("prepare the dataset and its tokenizer"):
    builders.prepare(d.name, d.data_dir, **d.options.to_dict())
    return tokenizer(d, train=True)
