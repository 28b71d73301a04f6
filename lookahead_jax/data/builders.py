"""`prepare`, the one entry point to datasets: the testbeds' builders (registry.py), the
user's text files, and prepared TFDS datasets.

Local builders generate on this machine, need no network and no TensorFlow, and write
ArrayRecord files (random access for grain): every testbed of registry.py (its features
in its own module) and

  text_files  feature: text; the user's .txt files, each cut into train/validation/test
              by `split_fractions`, then into documents after each `document_delimiter`

Builder options are passed as keyword arguments (`prepare("text_files", paths=["corpus/"])`); any
option other than the defaults gets its own config directory (local.py).

Any other name is a TFDS dataset (`tiny_shakespeare`, `lm1b`, `c4/en`, ...): it is read
if it is prepared as ArrayRecord in the data dir, and otherwise `prepare` raises
`DatasetNotPreparedError` with a one-line message, before any download is attempted.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import tensorflow_datasets as tfds

from lookahead_jax.data import local, registry
from lookahead_jax.data.tokenizers import ByteTokenizer, SentencePieceTokenizer, Tokenizer


class _NoCustomConfigNotice(logging.Filter):
  """Every local builder is made with a config of its options, by design; TFDS says so in
  a warning each time one is made (every pass over a split), which only adds noise."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Using custom data configuration")


def quiet_tfds_notices() -> None:
  """Drops TFDS's "Using custom data configuration" warnings from absl's log (a command's
  start calls it; once is enough)."""
  logger = logging.getLogger("absl")
  if not any(isinstance(f, _NoCustomConfigNotice) for f in logger.filters):
    logger.addFilter(_NoCustomConfigNotice())


class DatasetNotPreparedError(ValueError):
  """A dataset that is not prepared in the data dir and cannot be prepared here."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> str:
  """`data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets (user-expanded)."""
  chosen = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  return os.path.expanduser(os.fspath(chosen))


@dataclasses.dataclass(eq=False)
class TextFilesConfig(tfds.core.BuilderConfig):
  paths: tuple[str, ...] = ()  # files, directories (their *.txt) or glob patterns
  split_fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)
  document_delimiter: str | None = "\n\n"  # None: each file part is one document
  encoding_errors: str = "strict"  # "strict": reject non-UTF-8; "replace": U+FFFD


class TextFiles(local.LocalBuilder):
  """The user's .txt files: every file is cut into train/validation/test by fraction.

  A file's characters [0, a) go to train, [a, b) to validation, [b, end) to test, with
  a = int(len * f_train) and b = a + int((len - a) * f_val / (f_val + f_test)); with the
  default fractions this is TFDS tiny_shakespeare's split. Each part is then cut after
  every `document_delimiter` (kept at the end of its document), so the documents of a
  part concatenate back to the part exactly, and are stored in file order. Empty files
  are skipped and counted in the dataset's metadata (so are the documents per split; a
  split left without text is left out). A file that is not UTF-8 is rejected, or with
  encoding_errors="replace" decoded with U+FFFD (counted in the metadata). The config
  name hashes the files' contents, so editing a file makes a new dataset.
  """

  BUILDER_CONFIGS: ClassVar[list[TextFilesConfig]] = [TextFilesConfig(name="default")]

  @classmethod
  def make_config(cls, **options: Any) -> TextFilesConfig:
    if not options.get("paths"):
      raise ValueError("text_files needs paths=[...]: .txt files, directories or globs")
    paths = options["paths"]
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files = resolve_text_files([os.fspath(p) for p in paths])
    digest = hashlib.sha256()
    for f in files:
      digest.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    values = {k: options.get(k, getattr(TextFilesConfig, k)) for k in cls.option_names()}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    fractions = values["split_fractions"]
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
      raise ValueError(f"split_fractions={fractions} must be 3 non-negative numbers summing to 1")
    if values["encoding_errors"] not in ("strict", "replace"):
      raise ValueError(f"encoding_errors={values['encoding_errors']!r}: use 'strict' or 'replace'")
    values["paths"] = tuple(str(f) for f in files)
    key = dict(values, content=digest.hexdigest())
    return TextFilesConfig(name=f"{files[0].stem}-{local.options_hash(key)}",
                           description=json.dumps(values), **values)

  def _read(self) -> tuple[list[str], dict[str, int]]:
    cfg = self.builder_config
    texts, counts = [], {"files": 0, "empty_files": 0, "replacement_characters": 0}
    for path in map(Path, cfg.paths):
      text = read_text_file(path, cfg.encoding_errors)
      counts["files"] += 1
      if not text:
        counts["empty_files"] += 1
        logging.warning("text_files: skipping empty file %s", path)
        continue
      if cfg.encoding_errors == "replace":
        counts["replacement_characters"] += text.count("\ufffd")
      texts.append(text)
    if not texts:
      raise ValueError(f"text_files: no text in {list(cfg.paths)} (all files are empty)")
    return texts, counts

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__,
        features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
        metadata=tfds.core.MetadataDict(), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg = self.builder_config
    texts, counts = self._read()
    self.info.metadata.update(counts)
    parts = {split: [] for split in local.SPLITS}
    for text in texts:
      for split, part in zip(local.SPLITS, split_text(text, cfg.split_fractions)):
        parts[split].extend(split_documents(part, cfg.document_delimiter))
    for split, docs in parts.items():
      self.info.metadata[f"{split}_documents"] = len(docs)
      if not docs:
        logging.warning("text_files: the %s split is empty; it is left out", split)
    return {split: self._generate_examples(docs) for split, docs in parts.items() if docs}

  def _generate_examples(self, docs):
    for key, doc in enumerate(docs):  # stored in this order (disable_shuffling)
      yield key, {"text": doc}


LOCAL_BUILDERS: dict[str, type[local.LocalBuilder]] = {
    **{name: t.builder for name, t in registry.TESTBEDS.items()}, "text_files": TextFiles}


def resolve_text_files(paths: Sequence[str]) -> list[Path]:
  """Files named by `paths` (files, directories' *.txt recursively, globs), sorted."""
  files = []
  for p in paths:
    if os.path.isdir(p):
      found = sorted(Path(p).rglob("*.txt"))
    else:
      found = sorted(Path(f) for f in glob.glob(os.path.expanduser(p)) if os.path.isfile(f))
    if not found:
      raise FileNotFoundError(f"text_files: no file matches {p!r}")
    files.extend(found)
  return list(dict.fromkeys(f.resolve() for f in files))


def read_text_file(path: Path, errors: str = "strict") -> str:
  """The file's text; a non-UTF-8 file raises a one-line ValueError naming the byte."""
  data = path.read_bytes()
  try:
    return data.decode("utf-8", errors=errors)
  except UnicodeDecodeError as e:
    raise ValueError(
        f"text_files: {path} is not UTF-8 (byte {data[e.start]:#04x} at offset {e.start}); "
        "convert it (e.g. iconv -f latin1 -t utf-8) or pass encoding_errors='replace'"
    ) from None


def split_text(text: str, fractions: Sequence[float]) -> list[str]:
  """Cuts text into consecutive parts by fractions (TFDS tiny_shakespeare's arithmetic)."""
  parts, rest = [], text
  for k, f in enumerate(fractions[:-1]):
    remaining = sum(fractions[k:])
    cut = int(len(rest) * (f / remaining)) if remaining > 0 else 0
    parts.append(rest[:cut])
    rest = rest[cut:]
  return parts + [rest]


def split_documents(text: str, delimiter: str | None) -> list[str]:
  """Cuts after each delimiter, keeping it: "".join(result) == text; no empty documents."""
  if not delimiter:
    return [text] if text else []
  docs = [d + delimiter for d in text.split(delimiter)]
  docs[-1] = docs[-1][: -len(delimiter)]
  return [d for d in docs if d]


def builder(name: str, data_dir: str | os.PathLike | None = None,
            **options: Any) -> tfds.core.DatasetBuilder:
  """The builder of `name` in the data dir, without preparing anything."""
  data_dir = resolve_data_dir(data_dir)
  if name in LOCAL_BUILDERS:
    cls = LOCAL_BUILDERS[name]
    return cls(config=cls.make_config(**options), data_dir=data_dir, file_format="array_record")
  if options:
    raise ValueError(f"options {sorted(options)} only apply to the local builders "
                     f"{sorted(LOCAL_BUILDERS)}, not to the TFDS dataset {name!r}")
  try:
    found = tfds.builder(name, data_dir=data_dir)
  except (tfds.core.registered.DatasetNotFoundError, ImportError):
    found = None
  if found is None or not found.is_prepared():
    raise DatasetNotPreparedError(
        f"dataset {name!r} is not prepared in {data_dir} and nothing is downloaded here "
        f"(local builders: {', '.join(LOCAL_BUILDERS)}); for a TFDS dataset run "
        f"`tfds build {name} --data_dir=DIR --file_format=array_record` on a machine with "
        f"network, then copy DIR/{name.split('/')[0]} into {data_dir}")
  file_format = getattr(found.info.file_format, "value", found.info.file_format)
  if file_format != "array_record":
    raise DatasetNotPreparedError(
        f"dataset {name!r} in {data_dir} is prepared as {file_format}, not ArrayRecord: "
        f"rebuild it with `tfds build {name} --data_dir=DIR --file_format=array_record`")
  return found


def prepare(name: str, data_dir: str | os.PathLike | None = None,
            **options: Any) -> tfds.core.DatasetBuilder:
  """Prepares `name` in the data dir if needed (idempotent) and returns its builder.

  Args:
    name: a local builder (a testbed of registry.py, text_files) or a TFDS dataset name.
    data_dir: see `resolve_data_dir`.
    **options: builder options (the fields of the builder's config, e.g. TextFilesConfig);
      none for TFDS datasets.

  Raises:
    DatasetNotPreparedError: a TFDS dataset that is not prepared (one-line message).

  Preparing is deterministic, so each host may prepare its own copy; on a shared file
  system let one process prepare first.
  """
  found = builder(name, data_dir, **options)
  if not found.is_prepared():
    found.download_and_prepare(file_format="array_record")
  return found


def data_source(name: str, split: str, data_dir: str | os.PathLike | None = None,
                **options: Any) -> Sequence[dict[str, Any]]:
  """Random-access records of a split (prepared first if local); text is bytes."""
  found = prepare(name, data_dir, **options)
  try:
    return found.as_data_source(split=split)
  except (KeyError, ValueError) as e:
    raise ValueError(f"dataset {name!r} has no split {split!r} (splits: "
                     f"{', '.join(sorted(found.info.splits))}): {str(e).splitlines()[0]}") from None


def default_tokenizer(name: str, **options: Any) -> Tokenizer:
  """The tokenizer a dataset needs: a testbed's own vocabulary (from the options), else
  bytes."""
  testbed = registry.get(name)
  if testbed is not None and testbed.own_vocabulary:
    return testbed.tokenizer(**options)
  return ByteTokenizer()


def longest_document(name: str, **options: Any) -> int | None:
  """Tokens of a testbed's longest example (its own vocabulary), or None for text.

  A framed example of n tokens gives n + 1 (input, target) pairs; a row shorter than that
  would cut the example into pieces that no longer see their prompt.
  """
  testbed = registry.get(name)
  if testbed is None or testbed.longest_document is None:
    return None
  return testbed.longest_document(**options)


def sentencepiece_path(name: str, vocab_size: int, data_dir: str | os.PathLike | None = None,
                       **options: Any) -> Path:
  """Where `sentencepiece_for` keeps the model: `<dataset dir>/sentencepiece_<N>.model`."""
  if registry.own_vocabulary(name):
    raise ValueError(f"{name} has its own token vocabulary; it takes no SentencePiece model")
  return Path(builder(name, data_dir, **options).data_dir) / f"sentencepiece_{vocab_size}.model"


def sentencepiece_for(name: str, vocab_size: int, data_dir: str | os.PathLike | None = None,
                      split: str = "train", text_key: str = "text",
                      **options: Any) -> SentencePieceTokenizer:
  """A SentencePiece model trained on the split's texts, saved beside the dataset
  (`sentencepiece_path`) and reused."""
  path = sentencepiece_path(name, vocab_size, data_dir, **options)
  if path.is_file():
    return SentencePieceTokenizer(path)
  source = data_source(name, split, data_dir, **options)
  texts = (source[i][text_key].decode("utf-8") for i in range(len(source)))
  return SentencePieceTokenizer.train(texts, vocab_size, path)
