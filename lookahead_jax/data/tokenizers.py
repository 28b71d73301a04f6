"""Tokenizers behind one small interface: byte-level, SentencePiece, Hugging Face (GPT-2 BPE).

Every tokenizer has

    encode(text: str) -> list[int]
    decode(ids: Sequence[int]) -> str          # pad and EOD ids are dropped
    encode_with_offsets(text) -> (ids int32 [n], offsets int32 [n, 2])
    vocab_size: int, pad_id: int, eod_id: int  # EOD = end of document
    mask_id: int                               # [MASK] of the masked objective

`mask_id` is `vocab_size`, the first id past the text vocabulary, in every tokenizer
(these and the testbeds' own): reserved like padding, `encode` never gives it and
`decode` drops it, and no layout, vocabulary size or checkpoint of a next-token model
changes; a model trained with masks has `model.vocab_size > mask_id` (settings.py checks).

`offsets[i] = [start, end)` is the range of characters of `text` that token i covers; the
pipeline uses it to carry character-level "needs lookahead" marks onto tokens.

Byte-level layout (`ByteTokenizer`, the default; needs no files):
    0 pad, 1 EOD, 2 + b for the byte b (0..255): vocab_size 258.
SentencePiece models trained here: 0 pad, 1 EOD (SentencePiece's eos), 2 unk, no bos,
byte fallback on, identity normalisation (decode(encode(text)) == text).
GPT-2 (`HFTokenizer`): EOD is `<|endoftext|>`; the pad id is a `<pad>`/`<|pad|>` token if
the vocabulary has one, else EOD (padding always has weight 0, so the id only has to be
valid).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import sentencepiece as spm
import tokenizers as hf


@runtime_checkable
class Tokenizer(Protocol):
  """What the pipeline, the model and the evaluation need from a tokenizer."""

  @property
  def vocab_size(self) -> int: ...

  @property
  def pad_id(self) -> int: ...

  @property
  def eod_id(self) -> int: ...

  @property
  def mask_id(self) -> int: ...

  def encode(self, text: str) -> list[int]: ...

  def decode(self, ids: Sequence[int]) -> str: ...

  def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]: ...


def _char_index_of_bytes(data: bytes) -> np.ndarray:
  """int64 [len(data) + 1]: number of characters that start before each byte offset."""
  b = np.frombuffer(data, dtype=np.uint8)
  starts = (b & 0xC0) != 0x80  # UTF-8 continuation bytes are 10xxxxxx
  return np.concatenate([[0], np.cumsum(starts)])


class FixedSpecialIds:
  """pad 0, EOD 1 and [MASK] = vocab_size: the byte tokenizer's and the testbeds' own
  vocabularies (a subclass defines `vocab_size`)."""

  PAD, EOD = 0, 1

  @property
  def pad_id(self) -> int:
    return self.PAD

  @property
  def eod_id(self) -> int:
    return self.EOD

  @property
  def mask_id(self) -> int:
    """[MASK] of the masked objective: the first id past the vocabulary."""
    return self.vocab_size


class ByteTokenizer(FixedSpecialIds):
  """UTF-8 bytes: 0 pad, 1 EOD, 2 + byte. Undecodable byte runs decode to U+FFFD."""

  OFFSET = 2

  @property
  def vocab_size(self) -> int:
    return 256 + self.OFFSET

  def encode(self, text: str) -> list[int]:
    return self._encode_bytes(text.encode("utf-8")).tolist()

  def _encode_bytes(self, data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).astype(np.int32) + self.OFFSET

  def decode(self, ids: Sequence[int]) -> str:
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    ids = ids[(ids >= self.OFFSET) & (ids != self.mask_id)] - self.OFFSET
    if ids.size and ids.max() > 255:
      raise ValueError(f"id {ids.max() + self.OFFSET} is outside the byte vocabulary")
    return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

  def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    data = text.encode("utf-8")
    char = _char_index_of_bytes(data)[1:] - 1  # the character each byte belongs to
    return self._encode_bytes(data), np.stack([char, char + 1], axis=1).astype(np.int32)


class SentencePieceTokenizer:
  """A SentencePiece model file; `train` makes one from a corpus."""

  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    if not self.path.is_file():
      raise FileNotFoundError(f"no SentencePiece model at {self.path}")
    self._sp = spm.SentencePieceProcessor(model_file=str(self.path))
    if self._sp.eos_id() < 0:
      raise ValueError(f"SentencePiece model {self.path} has no eos piece to use as EOD")

  @classmethod
  def train(cls, corpus: Iterable[str], vocab_size: int, path: str | os.PathLike, *,
            model_type: str = "unigram", byte_fallback: bool = True,
            max_chars_per_sentence: int = 1 << 14) -> SentencePieceTokenizer:
    """Trains on the texts of `corpus` and writes the model to `path` (atomically).

    Long texts are cut at line ends into pieces of at most `max_chars_per_sentence`
    characters (SentencePiece's unit). With byte fallback, vocab_size must exceed
    259 + the number of distinct characters.
    """
    model = io.BytesIO()
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=_sentences(corpus, max_chars_per_sentence),
          model_writer=model, vocab_size=vocab_size, model_type=model_type,
          pad_id=0, eos_id=1, unk_id=2, bos_id=-1, byte_fallback=byte_fallback,
          normalization_rule_name="identity", add_dummy_prefix=False,
          remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
          character_coverage=1.0, max_sentence_length=4 * max_chars_per_sentence,
          minloglevel=2)
    except RuntimeError as e:
      reason = str(e).strip().splitlines()[-1]
      raise ValueError(f"SentencePiece training failed: {reason}") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(model.getvalue())
    tmp.replace(path)
    return cls(path)

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  @property
  def pad_id(self) -> int:
    return self._sp.pad_id() if self._sp.pad_id() >= 0 else self.eod_id

  @property
  def eod_id(self) -> int:
    return self._sp.eos_id()

  @property
  def mask_id(self) -> int:
    return self.vocab_size

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def decode(self, ids: Sequence[int]) -> str:
    drop = (self.pad_id, self.eod_id, self.mask_id)
    return self._sp.decode([int(i) for i in ids if int(i) not in drop])

  def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    pieces = self._sp.encode(text, out_type="proto").pieces
    char = _char_index_of_bytes(text.encode("utf-8"))
    ids = np.array([p.id for p in pieces], dtype=np.int32)
    begin = char[np.array([p.begin for p in pieces], dtype=np.int64)]
    end = char[np.array([p.end for p in pieces], dtype=np.int64)]
    # A byte-fallback piece before the last byte of a character covers no bytes of its
    # own in SentencePiece's offsets; give it the character it belongs to.
    end = np.maximum(end, begin + 1)
    return ids, np.stack([begin, end], axis=1).astype(np.int32)


def _sentences(corpus: Iterable[str], max_chars: int) -> Iterator[str]:
  for text in corpus:
    while len(text) > max_chars:
      cut = text.rfind("\n", 0, max_chars) + 1 or max_chars
      yield text[:cut]
      text = text[cut:]
    if text:
      yield text


class HFTokenizer:
  """A Hugging Face `tokenizers` tokenizer, e.g. GPT-2's byte-level BPE.

  Text that spells a special token ("<|endoftext|>") is encoded as plain text; EOD only
  comes from the pipeline.
  """

  EOD_TOKEN = "<|endoftext|>"
  PAD_TOKENS = ("<pad>", "<|pad|>", "[PAD]")

  def __init__(self, tokenizer: hf.Tokenizer):
    self._tok = tokenizer
    self._tok.encode_special_tokens = True
    eod = tokenizer.token_to_id(self.EOD_TOKEN)
    if eod is None:
      raise ValueError(f"the tokenizer has no {self.EOD_TOKEN} token to use as EOD")
    self._eod = eod
    pads = [tokenizer.token_to_id(t) for t in self.PAD_TOKENS]
    self._pad = next((p for p in pads if p is not None), eod)

  @classmethod
  def from_dir(cls, path: str | os.PathLike) -> HFTokenizer:
    """Reads `tokenizer.json`, or GPT-2's `vocab.json` + `merges.txt`, from a directory."""
    path = Path(path)
    if (path / "tokenizer.json").is_file():
      return cls(hf.Tokenizer.from_file(str(path / "tokenizer.json")))
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
      bpe = hf.models.BPE.from_file(str(path / "vocab.json"), str(path / "merges.txt"))
      tok = hf.Tokenizer(bpe)
      tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
      tok.decoder = hf.decoders.ByteLevel()
      return cls(tok)
    raise FileNotFoundError(f"no tokenizer.json nor vocab.json + merges.txt in {path}")

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  @property
  def pad_id(self) -> int:
    return self._pad

  @property
  def eod_id(self) -> int:
    return self._eod

  @property
  def mask_id(self) -> int:
    return self.vocab_size

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Sequence[int]) -> str:
    keep = [int(i) for i in ids if int(i) not in (self._pad, self._eod, self.mask_id)]
    return self._tok.decode(keep, skip_special_tokens=False)

  def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    enc = self._tok.encode(text, add_special_tokens=False)
    offsets = np.asarray(enc.offsets, dtype=np.int32).reshape(-1, 2)
    return np.asarray(enc.ids, dtype=np.int32), offsets


TOKENIZERS = ("byte", "sentencepiece", "hf", "gpt2")


def get_tokenizer(name_or_config: str | Mapping[str, Any] | Tokenizer | Any = "byte",
                  **kwargs: Any) -> Tokenizer:
  """Builds a tokenizer from a name, a path, a config or returns a tokenizer as is.

  Args:
    name_or_config: one of
      - "byte";
      - "sentencepiece" with `path=` (a .model file), or the .model path itself;
      - "hf" / "gpt2" with `path=` (a directory with tokenizer.json or
        vocab.json + merges.txt), or that directory itself;
      - a mapping or config object with a `name` entry and the arguments above;
      - an object that already has the tokenizer interface.
    **kwargs: the arguments above (they override a config's entries).
  """
  if isinstance(name_or_config, Tokenizer):
    return name_or_config
  if not isinstance(name_or_config, (str, os.PathLike)):
    config = dict(name_or_config.items() if hasattr(name_or_config, "items")
                  else vars(name_or_config))
    config.update(kwargs)
    name = config.pop("name", "byte")
    return get_tokenizer(name, **{k: v for k, v in config.items() if v is not None})
  name = os.fspath(name_or_config)
  if name == "byte":
    return ByteTokenizer()
  if name == "sentencepiece" or name.endswith(".model"):
    return SentencePieceTokenizer(_arg(kwargs, "path", name) if name == "sentencepiece" else name)
  if name in ("hf", "gpt2") or Path(name).is_dir():
    return HFTokenizer.from_dir(_arg(kwargs, "path", name) if name in ("hf", "gpt2") else name)
  raise ValueError(f"unknown tokenizer {name!r}: use one of {', '.join(TOKENIZERS)}, "
                   "a SentencePiece .model file or a directory with tokenizer.json")


def _arg(kwargs: Mapping[str, Any], key: str, name: str) -> Any:
  if key not in kwargs:
    raise ValueError(f"tokenizer {name!r} needs {key}=...")
  return kwargs[key]
