"""Rhyme and article testbeds: generated text follows the rules; marks on hand-checked text."""

import re

import numpy as np
import pytest

from lookahead_jax.data import article, rhyme
from lookahead_jax.data.tokenizers import ByteTokenizer, HFTokenizer

RHYME_TEXT = "A poem:\nCheddar is red\nso is the bed\n"
RHYME_SPANS = np.array([[19, 22]])  # "red"


def test_rhyme_marks_bytes_hand_checked():
  assert RHYME_TEXT[19:22] == "red"
  ids, marks = rhyme.rhyme_marks(ByteTokenizer(), RHYME_TEXT, RHYME_SPANS)
  assert ids.tolist() == ByteTokenizer().encode(RHYME_TEXT)
  assert np.flatnonzero(marks).tolist() == [19, 20, 21]


def test_rhyme_marks_bpe_hand_checked(gpt2_style_dir):
  tok = HFTokenizer.from_dir(gpt2_style_dir)
  ids, marks = rhyme.rhyme_marks(tok, RHYME_TEXT, RHYME_SPANS)
  assert ids.tolist() == tok.encode(RHYME_TEXT)
  assert tok.decode(ids[marks]) == " red"


def test_article_marks_bytes_hand_checked():
  tok = ByteTokenizer()
  text = "Hens lay this. It is an egg.\nThis pet barks at strangers. It is a dog.\n"
  spans = np.array([[21, 23], [64, 65]])
  assert [text[s:e] for s, e in spans] == ["an", "a"]
  ids, marks = article.article_marks(tok, text, spans)
  # The byte after "a" decides: "n" for "an", the space for "a".
  assert np.flatnonzero(marks).tolist() == [22, 65]
  assert [text[i] for i in np.flatnonzero(marks)] == ["n", " "]


def test_article_marks_bpe_hand_checked(gpt2_style_dir):
  tok = HFTokenizer.from_dir(gpt2_style_dir)
  text = "Hens lay this. It is an egg.\nThis pet barks at strangers. It is a dog.\n"
  ids, marks = article.article_marks(tok, text, np.array([[21, 23], [64, 65]]))
  # GPT-2's BPE decides at the article token itself.
  assert [tok.decode([i]) for i in ids[marks]] == [" an", " a"]


def test_rhyme_documents_follow_the_rules():
  rng = np.random.default_rng(0)
  poems = prose = 0
  prose_colours = []
  for _ in range(300):
    text, spans = rhyme.rhyme_document(rng)
    lines = text.splitlines()
    if not len(spans):
      prose += 1
      assert len(lines) == 1 and lines[0].endswith(".")
      words = [w.strip(".") for w in lines[0].split()]
      prose_colours += [w for w in words if w in rhyme.PROSE_COLOURS]
      continue
    poems += 1
    assert lines[0] == "A poem:" and len(lines) == 1 + 2 * len(spans)
    for k, (start, end) in enumerate(spans):
      colour = text[start:end]
      first, second = lines[1 + 2 * k], lines[2 + 2 * k]
      food = first.split(" is ")[0]
      assert first == f"{food} is {colour}"  # the colour ends the line
      assert colour in rhyme.RHYMES and colour not in rhyme.UNRHYMED
      if rhyme.FOODS[food] in rhyme.RHYMES:
        assert colour == rhyme.FOODS[food]
      assert second.split()[-1] in rhyme.RHYMES[colour]
  assert poems > 100 and prose > 100
  assert prose_colours.count("orange") > prose_colours.count("grey")  # plain frequencies


def test_article_documents_follow_the_rules():
  rng = np.random.default_rng(0)
  clue_of = {clue: noun for noun, clue in article.CLUES.items()}
  for clue in article.CLUES.values():
    assert not re.search(r"\b(a|an)\b", clue, re.IGNORECASE)
  for _ in range(200):
    text, spans = article.article_document(rng)
    articles = [m.span() for m in re.finditer(r"\b(a|an)\b", text)]
    assert articles == [tuple(s) for s in spans.tolist()]  # every a/an is marked
    for line, (start, end) in zip(text.splitlines(), spans.tolist()):
      clue = line[:line.index(".") + 1]
      noun = line.rstrip(".").split()[-1]
      assert clue_of[clue] == noun
      assert text[start:end] == article.article_for(noun)


@pytest.mark.parametrize("document", [rhyme.rhyme_document, article.article_document])
def test_generators_are_deterministic(document):
  a = [document(np.random.default_rng(3))[0] for _ in range(2)]
  assert a[0] == a[1]
