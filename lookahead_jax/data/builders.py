"""TFDS builders for the testbeds and for text files, and `prepare`, the one entry point.

Local builders generate on this machine, need no network and no TensorFlow, and write
ArrayRecord files (random access for grain):

  rhyme       features: text, spans int32 [k, 2] (testbeds.py); splits train/validation/test
  article     features: text, spans int32 [k, 2] (testbeds.py); splits train/validation/test
  tsp         features: tokens int32 [3n+1], needs_lookahead bool [3n+1], coords int32
              [n, 2], tour int32 [n] (optimal, canonical), num_cities (tsp.py); lengths
              are not stored (TFDS keeps floats as float32): recompute them with
              tsp.tour_length / tsp.optimality_gap. Splits train/validation/test (all
              levels) and train_n{n}, validation_n{n}, test_n{n} per city count n (for a
              curriculum; "train_n5+train_n6" reads two); no instance is in two splits
  path_star   features: tokens int32 [n], needs_lookahead bool [n] (on the path's first
              step when the goal's depth is >= 2), edges int32 [E, 2] (shuffled, pointing
              away from the source), path int32 [P] (source .. goal), source, goal, depth
              (the goal's place on its arm) (path_star.py); splits train/validation/test;
              no graph is in two splits
  text_files  feature: text; the user's .txt files, each cut into train/validation/test
              by `split_fractions`, then into documents after each `document_delimiter`

Builder options are passed as keyword arguments (`prepare("tsp", levels=(5, 6))`); any
option other than the defaults gets its own config directory, named by a hash of the
options (the options themselves are in its dataset_info.json description).

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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from lookahead_jax.data import path_star, testbeds, tsp
from lookahead_jax.data.tokenizers import ByteTokenizer, SentencePieceTokenizer, Tokenizer

_SPLITS = ("train", "validation", "test")


class _NoCustomConfigNotice(logging.Filter):
  """Every local builder is made with a config of its options, by design; TFDS says so in
  a warning each time one is made (every pass over a split), which only adds noise."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Using custom data configuration")


logging.getLogger("absl").addFilter(_NoCustomConfigNotice())


class DatasetNotPreparedError(ValueError):
  """A dataset that is not prepared in the data dir and cannot be prepared here."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> str:
  """`data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets (user-expanded)."""
  chosen = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  return os.path.expanduser(os.fspath(chosen))


def _size(split: str, config: tfds.core.BuilderConfig) -> int:
  """Examples of a split ("train", or "train_n5" per level); TFDS cannot write 0."""
  return getattr(config, f"{split.split('_')[0]}_size")


def _options_hash(options: Mapping[str, Any]) -> str:
  return hashlib.sha1(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:12]


class _LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
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
    return type(default)(name=f"custom-{_options_hash(values)}", description=description, **values)

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    cfg = self.builder_config
    return {split: self._generate_examples(split) for split in _SPLITS if _size(split, cfg)}


class _MarkedText(_LocalBuilder, skip_registration=True):
  """Texts with the character spans that need lookahead (a testbed of testbeds.py)."""

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
    rng = np.random.default_rng([cfg.seed, _SPLITS.index(split)])
    for i in range(_size(split, cfg)):
      text, spans = self._document(rng)
      yield i, {"text": text, "spans": spans}


@dataclasses.dataclass(eq=False)
class RhymeConfig(tfds.core.BuilderConfig):
  train_size: int = 20_000
  validation_size: int = 1_000
  test_size: int = 1_000
  poem_fraction: float = 0.5
  seed: int = 0


class Rhyme(_MarkedText):
  """Poems whose line-final colours must have rhymes, and prose (testbeds.py)."""

  BUILDER_CONFIGS: ClassVar[list[RhymeConfig]] = [RhymeConfig(name="default")]

  def _document(self, rng):
    return testbeds.rhyme_document(rng, poem_fraction=self.builder_config.poem_fraction)


@dataclasses.dataclass(eq=False)
class ArticleConfig(tfds.core.BuilderConfig):
  train_size: int = 20_000
  validation_size: int = 1_000
  test_size: int = 1_000
  seed: int = 0


class Article(_MarkedText):
  """Riddles whose answer article ("a"/"an") anticipates the noun (testbeds.py)."""

  BUILDER_CONFIGS: ClassVar[list[ArticleConfig]] = [ArticleConfig(name="default")]

  def _document(self, rng):
    return testbeds.article_document(rng)


@dataclasses.dataclass(eq=False)
class TspConfig(tfds.core.BuilderConfig):
  levels: tuple[int, ...] = (5, 6, 7, 8, 9, 10)  # city counts
  grid_size: int = 10
  train_size: int = 4_000  # per level
  validation_size: int = 250  # per level
  test_size: int = 250  # per level
  seed: int = 0


class Tsp(_LocalBuilder):
  """TSP instances on a grid with their optimal tours; greedy is never optimal (tsp.py)."""

  BUILDER_CONFIGS: ClassVar[list[TspConfig]] = [TspConfig(name="default")]

  def _info(self) -> tfds.core.DatasetInfo:
    tok = tsp_tokenizer(self.builder_config)
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__,
        features=tfds.features.FeaturesDict({
            "tokens": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "needs_lookahead": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
            "coords": tfds.features.Tensor(shape=(None, 2), dtype=np.int32),
            "tour": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "num_cities": np.int32,
        }),
        metadata=tfds.core.MetadataDict(
            tokenizer="tsp", grid_size=tok.grid_size, max_cities=tok.max_cities,
            vocab_size=tok.vocab_size))

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg = self.builder_config
    seen: set[tuple[int, ...]] = set()
    instances = {}
    for split in reversed(_SPLITS):  # test first: it never loses instances to train
      for n in cfg.levels:
        rng = np.random.default_rng([cfg.seed, _SPLITS.index(split), n])
        kept = tsp.generate_instances(rng, n, cfg.grid_size, _size(split, cfg), exclude=seen)
        seen.update(tsp.city_set(x.coords) for x in kept)
        instances[split, n] = kept
    tok = tsp_tokenizer(cfg)
    examples = {key: [_tsp_example(tok, x) for x in kept] for key, kept in instances.items()}
    generators = {}
    for split in _SPLITS:
      combined = [(f"{n}-{i}", x) for n in cfg.levels for i, x in enumerate(examples[split, n])]
      generators[split] = self._generate_examples(combined)
      for n in cfg.levels:
        generators[f"{split}_n{n}"] = self._generate_examples(list(enumerate(examples[split, n])))
    return {k: v for k, v in generators.items() if _size(k, cfg)}

  def _generate_examples(self, keyed_examples):
    yield from keyed_examples


def _tsp_example(tok: tsp.TspTokenizer, x: tsp.TspInstance) -> dict[str, Any]:
  tokens, marks = tok.example(x)
  return {"tokens": tokens, "needs_lookahead": marks, "coords": x.coords, "tour": x.tour,
          "num_cities": x.num_cities}


def tsp_tokenizer(config: TspConfig) -> tsp.TspTokenizer:
  return tsp.TspTokenizer(grid_size=config.grid_size, max_cities=max(config.levels))


@dataclasses.dataclass(eq=False)
class PathStarConfig(tfds.core.BuilderConfig):
  degree: int = 2  # d, arms of the star
  num_nodes: int = 20  # N, node labels
  min_arm: int = 2  # nodes of the shortest arm (arm lengths uniform in min_arm .. max_arm)
  max_arm: int = 5  # nodes of the longest arm
  min_goal_depth: int = 2  # the goal is the k-th node of its arm, k uniform from this
  edge_tokens: bool = True  # each edge one token, in the edge list and the path
  train_size: int = 100_000
  validation_size: int = 1_000
  test_size: int = 1_000
  seed: int = 0


def path_star_graph(config: PathStarConfig) -> path_star.Star:
  """The graph options of a builder config."""
  return path_star.Star(degree=config.degree, num_nodes=config.num_nodes,
                        min_arm=config.min_arm, max_arm=config.max_arm,
                        min_goal_depth=config.min_goal_depth)


class PathStar(_LocalBuilder):
  """Star graphs, a source and a goal, and the path between them (path_star.py)."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {
      "1.0.0": "Node-label paths.",
      "2.0.0": "Edge tokens, arm lengths min_arm..max_arm, goal depth from min_goal_depth, "
               "marks only at depth >= 2, a depth feature."}
  BUILDER_CONFIGS: ClassVar[list[PathStarConfig]] = [PathStarConfig(name="default")]

  @classmethod
  def make_config(cls, **options: Any) -> PathStarConfig:
    """As for every local builder; a graph that cannot be drawn fails here, in one line."""
    config = super().make_config(**options)
    path_star_graph(config).check()
    return config

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__,
        features=tfds.features.FeaturesDict({
            "tokens": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "needs_lookahead": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
            "edges": tfds.features.Tensor(shape=(None, 2), dtype=np.int32),
            "path": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "source": np.int32,
            "goal": np.int32,
            "depth": np.int32,
        }),
        metadata=tfds.core.MetadataDict(
            tokenizer="path_star", num_nodes=cfg.num_nodes, edge_tokens=cfg.edge_tokens,
            vocab_size=path_star_tokenizer(cfg).vocab_size))

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg = self.builder_config
    graph = path_star_graph(cfg)
    seen: set[tuple[int, ...]] = set()
    instances = {}
    for split in reversed(_SPLITS):  # test first: it never loses graphs to train
      rng = np.random.default_rng([cfg.seed, _SPLITS.index(split)])
      kept = graph.generate(rng, _size(split, cfg), exclude=seen)
      seen.update(path_star.graph_key(x) for x in kept)
      instances[split] = kept
    tok = path_star_tokenizer(cfg)
    return {split: self._generate_examples(tok, instances[split])
            for split in _SPLITS if _size(split, cfg)}

  def _generate_examples(self, tok, kept):
    for i, x in enumerate(kept):
      tokens, marks = tok.example(x)
      yield i, {"tokens": tokens, "needs_lookahead": marks,
                "edges": np.asarray(x.edges, np.int32).reshape(-1, 2),
                "path": np.asarray(x.path, np.int32), "source": x.source, "goal": x.goal,
                "depth": x.depth}


def path_star_tokenizer(config: PathStarConfig) -> path_star.PathStarTokenizer:
  return path_star.PathStarTokenizer(num_nodes=config.num_nodes,
                                     edge_tokens=config.edge_tokens)


@dataclasses.dataclass(eq=False)
class TextFilesConfig(tfds.core.BuilderConfig):
  paths: tuple[str, ...] = ()  # files, directories (their *.txt) or glob patterns
  split_fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)
  document_delimiter: str | None = "\n\n"  # None: each file part is one document
  encoding_errors: str = "strict"  # "strict": reject non-UTF-8; "replace": U+FFFD


class TextFiles(_LocalBuilder):
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
    return TextFilesConfig(name=f"{files[0].stem}-{_options_hash(key)}",
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
    parts = {split: [] for split in _SPLITS}
    for text in texts:
      for split, part in zip(_SPLITS, split_text(text, cfg.split_fractions)):
        parts[split].extend(split_documents(part, cfg.document_delimiter))
    for split, docs in parts.items():
      self.info.metadata[f"{split}_documents"] = len(docs)
      if not docs:
        logging.warning("text_files: the %s split is empty; it is left out", split)
    return {split: self._generate_examples(docs) for split, docs in parts.items() if docs}

  def _generate_examples(self, docs):
    for key, doc in enumerate(docs):  # stored in this order (disable_shuffling)
      yield key, {"text": doc}


LOCAL_BUILDERS: dict[str, type[_LocalBuilder]] = {
    "rhyme": Rhyme, "article": Article, "tsp": Tsp, "path_star": PathStar,
    "text_files": TextFiles}


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
    name: a local builder (rhyme, article, tsp, path_star, text_files) or a TFDS dataset
      name.
    data_dir: see `resolve_data_dir`.
    **options: builder options (the fields of RhymeConfig, ArticleConfig, TspConfig,
      PathStarConfig, TextFilesConfig); none for TFDS datasets.

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
  """The tokenizer a dataset needs: tsp, path_star their own (from the options), text bytes."""
  if name == "tsp":
    return tsp_tokenizer(Tsp.make_config(**options))
  if name == "path_star":
    return path_star_tokenizer(PathStar.make_config(**options))
  return ByteTokenizer()


def longest_document(name: str, **options: Any) -> int | None:
  """Tokens of a testbed's longest example (its own vocabulary), or None for text.

  A framed example of n tokens gives n + 1 (input, target) pairs; a row shorter than that
  would cut the example into pieces that no longer see their prompt.
  """
  if name == "tsp":
    return 3 * max(Tsp.make_config(**options).levels) + 1
  if name == "path_star":
    cfg = PathStar.make_config(**options)
    edges = cfg.degree * cfg.max_arm
    prompt = (edges if cfg.edge_tokens else 3 * edges - 1) + 4  # edges, ? s g :
    path = cfg.max_arm + (0 if cfg.edge_tokens else 1) + 1  # steps (nodes), end of path
    return prompt + path
  return None


def sentencepiece_for(name: str, vocab_size: int, data_dir: str | os.PathLike | None = None,
                      split: str = "train", text_key: str = "text",
                      **options: Any) -> SentencePieceTokenizer:
  """A SentencePiece model trained on the split's texts, saved beside the dataset.

  The model lives at `<dataset dir>/sentencepiece_<vocab_size>.model` and is reused.
  """
  if name in ("tsp", "path_star"):
    raise ValueError(f"{name} has its own token vocabulary; it takes no SentencePiece model")
  found = prepare(name, data_dir, **options)
  path = Path(found.data_dir) / f"sentencepiece_{vocab_size}.model"
  if path.is_file():
    return SentencePieceTokenizer(path)
  source = data_source(name, split, data_dir, **options)
  texts = (source[i][text_key].decode("utf-8") for i in range(len(source)))
  return SentencePieceTokenizer.train(texts, vocab_size, path)
