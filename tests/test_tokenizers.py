"""Tokenizers: layouts, exact round trips, character offsets, the factory."""

import shutil

import ml_collections
import numpy as np
import pytest

from lookahead_jax.data import rhyme
from lookahead_jax.data.tokenizers import (
  ByteTokenizer,
  HFTokenizer,
  SentencePieceTokenizer,
  Tokenizer,
  get_tokenizer,
)
from lookahead_jax.data.tsp import TspTokenizer

TEXT = "First Citizen:\nBefore we  proceed, héllo 😀 wörld\n\n  x"


def _covered(text, offsets):
  """The characters of text covered by each token's offsets, in order."""
  return [text[s:e] for s, e in offsets]


def test_byte_layout_and_round_trip():
  tok = ByteTokenizer()
  assert (tok.vocab_size, tok.pad_id, tok.eod_id) == (258, 0, 1)
  assert tok.encode("A\n") == [ord("A") + 2, ord("\n") + 2]
  ids = tok.encode(TEXT)
  assert len(ids) == len(TEXT.encode("utf-8"))
  assert tok.decode(ids) == TEXT
  assert tok.decode([tok.eod_id] + ids + [tok.pad_id, tok.pad_id]) == TEXT


def test_byte_offsets_map_every_byte_to_its_character():
  tok = ByteTokenizer()
  ids, offsets = tok.encode_with_offsets("aé😀")
  assert ids.tolist() == tok.encode("aé😀")
  assert offsets.tolist() == [[0, 1], [1, 2], [1, 2], [2, 3], [2, 3], [2, 3], [2, 3]]


def test_byte_decode_of_invalid_utf8_uses_replacement_character():
  tok = ByteTokenizer()
  assert tok.decode([0xFF + 2, ord("a") + 2]) == "\ufffda"
  with pytest.raises(ValueError, match="outside the byte vocabulary"):
    tok.decode([259])  # 258 is [MASK], dropped like padding


@pytest.fixture(scope="module")
def spm_path(tmp_path_factory):
  rng = np.random.default_rng(1)
  corpus = [rhyme.rhyme_document(rng)[0] for _ in range(400)] + [TEXT]
  path = tmp_path_factory.mktemp("spm") / "sp.model"
  SentencePieceTokenizer.train(corpus, vocab_size=400, path=path)
  return path


def test_sentencepiece_trains_saves_and_round_trips(spm_path):
  tok = SentencePieceTokenizer(spm_path)
  assert (tok.vocab_size, tok.pad_id, tok.eod_id) == (400, 0, 1)
  text = "A poem:\nCheddar is red\njust like the bed\n  Ωmega ünïcode\n"
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  assert tok.decode([tok.eod_id] + ids + [tok.pad_id]) == text
  assert len(ids) < len(text)  # it learned pieces longer than a character


def test_sentencepiece_offsets_cover_the_text(spm_path):
  tok = SentencePieceTokenizer(spm_path)
  text = "Cheddar is white\nso is the night ünï"
  ids, offsets = tok.encode_with_offsets(text)
  assert ids.tolist() == tok.encode(text)
  assert offsets[0, 0] == 0 and offsets[-1, 1] == len(text)
  assert (offsets[1:, 0] >= offsets[:-1, 0]).all()
  # Byte-fallback pieces of one character share its offsets; the rest tile the text.
  spans = list(dict.fromkeys(map(tuple, offsets.tolist())))
  assert "".join(text[s:e] for s, e in spans) == text


def test_sentencepiece_errors_are_one_line(tmp_path):
  with pytest.raises(ValueError, match="SentencePiece training failed: .*vocab") as e:
    SentencePieceTokenizer.train(["abc def"] * 10, vocab_size=50, path=tmp_path / "x.model")
  assert "\n" not in str(e.value)
  with pytest.raises(FileNotFoundError, match="no SentencePiece model"):
    SentencePieceTokenizer(tmp_path / "missing.model")


def test_hf_tokenizer_json_and_vocab_merges_agree(gpt2_style_dir, tmp_path):
  full = HFTokenizer.from_dir(gpt2_style_dir)
  shutil.copy(gpt2_style_dir / "vocab.json", tmp_path)
  shutil.copy(gpt2_style_dir / "merges.txt", tmp_path)
  legacy = HFTokenizer.from_dir(tmp_path)
  text = "This bird hunts mice at night and hoots. It is an owl.\nünï 😀"
  assert full.encode(text) == legacy.encode(text)
  assert full.decode(full.encode(text)) == text == legacy.decode(legacy.encode(text))
  assert full.eod_id == legacy.eod_id == full._tok.token_to_id("<|endoftext|>")
  assert full.pad_id == full.eod_id  # GPT-2 has no pad token
  assert full.vocab_size == legacy.vocab_size == 500


def test_hf_text_spelling_the_special_token_is_plain_text(gpt2_style_dir):
  tok = HFTokenizer.from_dir(gpt2_style_dir)
  ids = tok.encode("a <|endoftext|> b")
  assert tok.eod_id not in ids
  assert tok.decode(ids) == "a <|endoftext|> b"


def test_hf_offsets_are_characters(gpt2_style_dir):
  tok = HFTokenizer.from_dir(gpt2_style_dir)
  text = "It is an elephant. ünï"
  ids, offsets = tok.encode_with_offsets(text)
  assert ids.tolist() == tok.encode(text)
  assert " an" in _covered(text, offsets)
  spans = list(dict.fromkeys(map(tuple, offsets.tolist())))
  assert "".join(text[s:e] for s, e in spans) == text


def test_hf_errors(tmp_path, gpt2_style_dir):
  with pytest.raises(FileNotFoundError, match="no tokenizer.json nor vocab.json"):
    HFTokenizer.from_dir(tmp_path)
  from tokenizers import Tokenizer as RawTokenizer
  from tokenizers import models
  raw = RawTokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
  with pytest.raises(ValueError, match="no <\\|endoftext\\|> token"):
    HFTokenizer(raw)


def test_get_tokenizer_by_name_path_and_config(gpt2_style_dir, spm_path):
  assert isinstance(get_tokenizer(), ByteTokenizer)
  assert isinstance(get_tokenizer("byte"), ByteTokenizer)
  assert isinstance(get_tokenizer(str(spm_path)), SentencePieceTokenizer)
  assert isinstance(get_tokenizer("sentencepiece", path=spm_path), SentencePieceTokenizer)
  assert isinstance(get_tokenizer(gpt2_style_dir), HFTokenizer)
  assert isinstance(get_tokenizer("gpt2", path=gpt2_style_dir), HFTokenizer)
  cfg = ml_collections.ConfigDict({"name": "sentencepiece", "path": str(spm_path)})
  assert isinstance(get_tokenizer(cfg), SentencePieceTokenizer)
  assert isinstance(get_tokenizer({"name": "hf", "path": str(gpt2_style_dir)}), HFTokenizer)
  tsp = TspTokenizer(grid_size=10, max_cities=8)
  byte = ByteTokenizer()
  assert get_tokenizer(byte) is byte
  for tok in (byte, tsp, get_tokenizer(gpt2_style_dir), get_tokenizer(str(spm_path))):
    assert isinstance(tok, Tokenizer)


def test_every_tokenizer_reserves_mask_past_its_vocabulary(gpt2_style_dir, spm_path):
  from lookahead_jax.data.path_star import PathStarTokenizer

  text = {TspTokenizer: "1,2 3,4 : 0 1", PathStarTokenizer: "4 9 | 4 7 ? 4 7 : 4 7 ."}
  for tok in (ByteTokenizer(), get_tokenizer(str(spm_path)), get_tokenizer(gpt2_style_dir),
              TspTokenizer(grid_size=10, max_cities=8), PathStarTokenizer(num_nodes=10)):
    sample = text.get(type(tok), TEXT)
    ids = tok.encode(sample)
    assert tok.mask_id == tok.vocab_size and tok.mask_id not in ids
    assert tok.mask_id not in (tok.pad_id, tok.eod_id)
    masked = ids[:2] + [tok.mask_id] + ids[2:]
    assert tok.decode(masked) == tok.decode(ids)  # decode drops it like padding


def test_get_tokenizer_errors():
  with pytest.raises(ValueError, match="unknown tokenizer 'bpe'"):
    get_tokenizer("bpe")
  with pytest.raises(ValueError, match="needs path="):
    get_tokenizer("sentencepiece")
  with pytest.raises(ValueError, match="unknown tokenizer 'tsp'"):  # a testbed's own: registry
    get_tokenizer("tsp", grid_size=4)
