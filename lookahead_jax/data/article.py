"""The article testbed (docs/design.md section 5): riddles, their builder and marks.

Riddles "This animal has big ears and long tusks. It is an elephant." The
clue determines the noun, and the article ("a" or "an") must anticipate the noun's first
sound. Clues contain no "a"/"an". Mark: for each answer article, the first token at
which the document's tokenization differs from the tokenization of the same document
with "a" and "an" swapped (the byte after the "a" with the byte-level tokenizer, the
" a"/" an" token itself with GPT-2's BPE).

Marks are returned per token, aligned to `tokenizer.encode(text)`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from lookahead_jax.data import local

NAME = "article"

# Noun -> a clue that singles it out (no "a"/"an" in any clue).
CLUES: dict[str, str] = {
    "elephant": "This animal has big ears and long tusks.",
    "owl": "This bird hunts mice at night and hoots.",
    "octopus": "This sea animal has eight arms.",
    "eagle": "This bird has sharp talons and soars over mountains.",
    "ant": "This tiny insect lives in colonies and carries crumbs.",
    "iguana": "This lizard suns itself on warm rocks.",
    "giraffe": "This animal eats leaves from tall trees with its long neck.",
    "penguin": "This bird cannot fly and swims in icy water.",
    "zebra": "This animal has black and white stripes.",
    "camel": "This animal stores fat in its hump and crosses deserts.",
    "kangaroo": "This animal hops and carries its baby in its pouch.",
    "dog": "This pet barks at strangers.",
    "apple": "This fruit keeps the doctor away.",
    "orange": "This citrus fruit shares its name with its colour.",
    "egg": "Hens lay this.",
    "onion": "This vegetable makes people cry when they cut it.",
    "avocado": "This fruit is mashed into guacamole.",
    "banana": "Monkeys love this long yellow fruit.",
    "lemon": "This sour fruit is squeezed into lemonade.",
    "carrot": "Rabbits love this crunchy vegetable.",
    "potato": "This vegetable is cut into chips and fries.",
    "umbrella": "People open this when it rains.",
    "oven": "Bakers bake bread in this.",
    "igloo": "This house is built from blocks of snow.",
    "anchor": "Sailors drop this to hold their ship in place.",
    "hammer": "Carpenters hit nails with this.",
    "violin": "Musicians play this with the bow under their chin.",
    "key": "People turn this to open locks.",
    "ladder": "People climb this to reach high places.",
    "clock": "This object on the wall tells the time.",
}
_ANSWERS = ("It is {article} {noun}.", "The answer is {article} {noun}.",
            "That must be {article} {noun}.", "I think it is {article} {noun}.")


def article_for(noun: str) -> str:
  """"an" before a vowel letter, else "a" (true of every noun in CLUES)."""
  return "an" if noun[0] in "aeiou" else "a"


def article_document(rng: np.random.Generator,
                     riddles: tuple[int, int] = (2, 5)) -> tuple[str, np.ndarray]:
  """One article-testbed document: riddles, one per line.

  Returns:
    (text, spans int32 [k, 2]): character spans of the k answer articles ("a" or "an").
  """
  nouns = list(CLUES)
  text, spans = "", []
  for _ in range(int(rng.integers(riddles[0], riddles[1] + 1))):
    noun = nouns[int(rng.integers(len(nouns)))]
    answer = _ANSWERS[int(rng.integers(len(_ANSWERS)))]
    head, tail = answer.split("{article}")
    text += f"{CLUES[noun]} {head}"
    article = article_for(noun)
    spans.append((len(text), len(text) + len(article)))
    text += article + tail.format(noun=noun) + "\n"
  return text, np.asarray(spans, np.int32)


def article_marks(tokenizer, text: str,
                  spans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(ids int32 [n], marks bool [n]) of an article document (rule in the module docstring).

  Each span holds "a" or "an"; the mark goes to the first token where encoding the text
  with that article swapped differs from encoding the text itself.
  """
  ids = np.asarray(tokenizer.encode(text), np.int32)
  marks = np.zeros(len(ids), dtype=bool)
  for start, end in np.asarray(spans).reshape(-1, 2).tolist():
    swapped = {"a": "an", "an": "a"}[text[start:end]]
    other = np.asarray(tokenizer.encode(text[:start] + swapped + text[end:]), np.int32)
    common = min(len(ids), len(other))
    differ = np.flatnonzero(ids[:common] != other[:common])
    first = int(differ[0]) if len(differ) else common
    if first < len(ids):
      marks[first] = True
  return ids, marks



class Article(local.MarkedText):
  """Riddles whose answer article ("a"/"an") anticipates the noun (article.py)."""

  BUILDER_CONFIGS: ClassVar[list[local.MarkedTextConfig]] = [
      local.MarkedTextConfig(name="default")]

  def _document(self, rng):
    return article_document(rng)


TESTBED = local.Testbed(name=NAME, builder=Article, marks=article_marks)
