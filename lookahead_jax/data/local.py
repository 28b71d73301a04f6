"""What every local dataset shares: the TFDS builder base, the marked-text builder, and
`Testbed`, the one record through which the rest of the package reaches a testbed.

A local builder generates its examples on this machine (no network, no TensorFlow) and
writes ArrayRecord files. Its options are the fields of its BuilderConfig after TFDS's
own; options other than the defaults get a config of their own, named by a hash of the
options (the options are in its dataset_info.json description).

Each testbed module (rhyme.py, article.py, tsp.py, path_star.py) defines its builder and
a `TESTBED = Testbed(...)`; registry.py collects them. Nothing else in the package tests
a testbed's name: it asks the registry for the record and calls the record's functions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

SPLITS = ("train", "validation", "test")


def split_size(split: str, config: tfds.core.BuilderConfig) -> int:
  """Examples of a split ("train", or "train_n5" per level); TFDS cannot write 0."""
  return getattr(config, f"{split.split('_')[0]}_size")


def options_hash(options: Mapping[str, Any]) -> str:
  return hashlib.sha1(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:12]


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared config handling: options are the config fields after BuilderConfig's."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First version."}

  @classmethod
  def option_names(cls) -> tuple[str, ...]:
    base = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
    return tuple(f.name for f in dataclasses.fields(cls.BUILDER_CONFIGS[0]) if f.name not in base)

  @classmethod
  def make_config(cls, **options: Any) -> tfds.core.BuilderConfig:
    """The default config for no options (or default ones), else a config named by hash."""
    default = cls.BUILDER_CONFIGS[0]
    unknown = sorted(set(options) - set(cls.option_names()))
    if unknown:
      raise ValueError(f"unknown {cls.name} option(s) {unknown}: "
                       f"the options are {list(cls.option_names())}")
    values = {k: options.get(k, getattr(default, k)) for k in cls.option_names()}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    if all(values[k] == getattr(default, k) for k in values):
      return default
    description = json.dumps(values, sort_keys=True, default=str)
    return type(default)(name=f"custom-{options_hash(values)}", description=description, **values)

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    cfg = self.builder_config
    return {split: self._generate_examples(split) for split in SPLITS if split_size(split, cfg)}


@dataclasses.dataclass(eq=False)
class MarkedTextConfig(tfds.core.BuilderConfig):
  """Options of a marked-text testbed: documents per split and the seed."""

  train_size: int = 20_000
  validation_size: int = 1_000
  test_size: int = 1_000
  seed: int = 0


class MarkedText(LocalBuilder, skip_registration=True):
  """Texts with the character spans that need lookahead (rhyme, article)."""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__,
        features=tfds.features.FeaturesDict({
            "text": tfds.features.Text(),
            "spans": tfds.features.Tensor(shape=(None, 2), dtype=np.int32),
        }))

  def _document(self, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    raise NotImplementedError

  def _generate_examples(self, split: str):
    cfg = self.builder_config
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split)])
    for i in range(split_size(split, cfg)):
      text, spans = self._document(rng)
      yield i, {"text": text, "spans": spans}


def span_marks(offsets: np.ndarray, spans: np.ndarray) -> np.ndarray:
  """bool [n]: tokens whose character range offsets[i] = [start, end) overlaps a span.

  Args:
    offsets: int [n, 2] character offsets of the tokens.
    spans: int [k, 2] character spans [start, end).
  """
  offsets = np.asarray(offsets).reshape(-1, 2)
  spans = np.asarray(spans).reshape(-1, 2)
  overlap = ((offsets[:, None, 0] < spans[None, :, 1])
             & (offsets[:, None, 1] > spans[None, :, 0]))
  return overlap.any(axis=1)


def text_of(value: bytes | str) -> str:
  return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def mark_flags(tokenizer, targets: np.ndarray, marks: np.ndarray) -> np.ndarray:
  """int32 [b, T]: group 1 on every marked target, 0 elsewhere (no groups of its own)."""
  del tokenizer, targets
  return np.asarray(marks).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Testbed:
  """A testbed as the rest of the package sees it.

  name:             the dataset name (`data.name`).
  builder:          its TFDS builder class.
  tokenizer:        options -> its own tokenizer (tokens and marks stored in its own
                    vocabulary, `own_vocabulary`), or None: text, read with the config's
                    tokenizer (bytes by default) and marked by `marks`.
  marks:            (tokenizer, text, spans) -> (ids int32 [n], marks bool [n]) of a text
                    testbed's document.
  longest_document: options -> tokens of its longest example (own vocabulary), or None.
  mark_groups:      (tokenizer, targets [b, T], marks [b, T]) -> int32 [b, T]: the group of
                    each marked target, 0 unmarked (reports split G and accuracy by it);
                    default: 1 on every marked target.
  prompt:           (tokenizer, record) -> (ids, prompt length) of a document, for the
                    generation report, or None when the document gives no prompt; default:
                    an own-vocabulary example's prompt, else the config's prompt length.
  judge:            (tokenizer, records, continuations) -> {figure: float64 [n]}: the
                    testbed's success per prompt (the generation report).
  judge_columns:    the generation table's columns of the judge's figures: (key, header,
                    format) each.
  marked_probe:     the probes also read the activations before each marked target.
  task_return:      options -> the task's return of an answer, for `lookahead.reward =
                    "task"` (a hashable pure JAX function (prefix [T], anchor [], path [D])
                    -> [] float32 with `end_id`, the token that ends an answer; path_star.py's
                    `GoalReturn`, tsp.py's `TourReturn`), or None: the testbed has no return.
  """

  name: str
  builder: type[LocalBuilder]
  tokenizer: Callable[..., Any] | None = None
  marks: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None
  longest_document: Callable[..., int] | None = None
  mark_groups: Callable[[Any, np.ndarray, np.ndarray], np.ndarray] = mark_flags
  prompt: Callable[[Any, Mapping[str, Any]], tuple[list[int], int] | None] | None = None
  judge: Callable[[Any, Sequence[Mapping[str, Any]], list[list[int]]],
                  dict[str, np.ndarray]] | None = None
  judge_columns: tuple[tuple[str, str, str], ...] = ()
  marked_probe: bool = False
  task_return: Callable[..., Any] | None = None

  @property
  def own_vocabulary(self) -> bool:
    return self.tokenizer is not None
