"""The rhyme testbed (docs/design.md section 5): poems and prose, its builder and marks.

A document is either prose or a poem. Prose uses colour words with their
plain frequencies ("Cheddar is orange."). A poem starts with the line "A poem:" and is
made of couplets

    Mozzarella is white
    just like the night

The first line of a couplet always ends in a colour that has rhymes in `RHYMES` (the
food's own colour when it has rhymes, else a random rhymable one: so "Cheddar is ..."
in a poem is never "orange"), and the second line ends with a rhyme of it.
Mark: the characters of the colour word that ends each first line (`spans`); every token
that overlaps them needs lookahead (choosing it means knowing that a rhyme follows).
What it measures: the heuristic case. Any rhymable colour is right, so the rule "in a
poem, end a first line in a rhymable colour" predicts the marked tokens as well as a
search for a rhyme would; a model learns the rule under teacher forcing and explicit
lookahead has nothing left to add (measured: G at or just below 0 after training,
docs/results.md, rhyme). A testbed where lookahead beats every fixed rule is path_star.

Marks are returned per token, aligned to `tokenizer.encode(text)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from lookahead_jax.data import local

NAME = "rhyme"

# Colour -> nouns that rhyme with it (each can end the second line of a couplet).
RHYMES: dict[str, tuple[str, ...]] = {
    "white": ("night", "kite", "light", "bite"),
    "red": ("bed", "bread", "head", "sled"),
    "blue": ("shoe", "glue", "zoo", "canoe"),
    "green": ("queen", "bean", "screen", "machine"),
    "yellow": ("fellow", "cello", "marshmallow"),
    "black": ("sack", "snack", "track", "shack"),
    "pink": ("ink", "sink", "drink", "rink"),
    "grey": ("hay", "tray", "clay", "day"),
    "brown": ("crown", "town", "gown", "clown"),
}
# Colours with no rhyme in the list: common in prose, never at the end of a first line.
UNRHYMED = ("orange", "purple", "silver")
# Plain frequencies of colours in prose.
PROSE_COLOURS: dict[str, float] = {
    "orange": 0.16, "purple": 0.08, "silver": 0.06, "white": 0.1, "red": 0.12,
    "blue": 0.1, "green": 0.1, "yellow": 0.08, "black": 0.06, "pink": 0.05,
    "grey": 0.04, "brown": 0.05,
}
# Food (or thing) -> its own colour.
FOODS: dict[str, str] = {
    "Mozzarella": "white", "Cheddar": "orange", "Tomato": "red", "Lime": "green",
    "Banana": "yellow", "Plum": "purple", "Blueberry": "blue", "Coal": "black",
    "Snow": "white", "Carrot": "orange", "Eggplant": "purple", "Lemon": "yellow",
    "Grass": "green", "Cherry": "red", "Ink": "black", "Pumpkin": "orange",
    "Lavender": "purple", "Spoon": "silver", "Elephant": "grey", "Flamingo": "pink",
    "Chocolate": "brown", "Tinfoil": "silver", "Mango": "orange", "Grape": "purple",
}
_LEAD_INS = (
    "just like the", "as pretty as the", "I put it on the", "we found it near the",
    "it sat beside the", "it reminds me of the", "so is the", "nothing beats the",
)
_PROSE = (
    "{food} is {colour}.", "The {noun} was {colour}.", "My {noun} is {colour}.",
    "She painted the {noun} {colour}.", "We saw the {colour} {noun} yesterday.",
    "The {colour} {noun} was on sale.", "He likes {colour} things.",
)


def rhyme_document(rng: np.random.Generator, poem_fraction: float = 0.5,
                   lines: tuple[int, int] = (2, 4)) -> tuple[str, np.ndarray]:
  """One rhyme-testbed document.

  Args:
    rng: randomness.
    poem_fraction: probability that the document is a poem (else prose).
    lines: inclusive range of couplets per poem and of sentences per prose line.

  Returns:
    (text, spans int32 [k, 2]): character spans [start, end) of the colour words that
    end the first line of each couplet (k = 0 for prose).
  """
  count = int(rng.integers(lines[0], lines[1] + 1))
  foods = list(FOODS)
  if rng.random() >= poem_fraction:
    colours, weights = list(PROSE_COLOURS), np.array(list(PROSE_COLOURS.values()))
    nouns = [n for ns in RHYMES.values() for n in ns]
    sentences = []
    for _ in range(count):
      template = _PROSE[int(rng.integers(len(_PROSE)))]
      food = foods[int(rng.integers(len(foods)))]
      colour = FOODS[food] if "{food}" in template else colours[
          int(rng.choice(len(colours), p=weights / weights.sum()))]
      sentences.append(template.format(
          food=food, colour=colour, noun=nouns[int(rng.integers(len(nouns)))]))
    return " ".join(sentences) + "\n", np.zeros((0, 2), np.int32)
  text, spans = "A poem:\n", []
  rhymable = list(RHYMES)
  for _ in range(count):
    food = foods[int(rng.integers(len(foods)))]
    colour = FOODS[food]
    if colour not in RHYMES:
      colour = rhymable[int(rng.integers(len(rhymable)))]
    text += f"{food} is "
    spans.append((len(text), len(text) + len(colour)))
    rhyme = RHYMES[colour][int(rng.integers(len(RHYMES[colour])))]
    lead_in = _LEAD_INS[int(rng.integers(len(_LEAD_INS)))]
    text += f"{colour}\n{lead_in} {rhyme}\n"
  return text, np.asarray(spans, np.int32)


def first_couplet_line(text: str) -> str | None:
  """A poem's start up to and including its first line ("A poem:\nBrie is white\n"); None
  for prose."""
  lines = text.split("\n")
  if not text.startswith("A poem:\n") or len(lines) < 3:
    return None
  return "\n".join(lines[:2]) + "\n"


def rhymes(first: str, following: str) -> bool:
  """Whether the line that starts `following` ends in a rhyme of the colour that ends the
  last line of `first` (in `RHYMES`)."""
  colour = first.rstrip("\n").split("\n")[-1].split(" ")[-1]
  words = following.split("\n")[0].split(" ")
  return "\n" in following and words[-1] in RHYMES.get(colour, ())


def rhyme_marks(tokenizer, text: str,
                spans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(ids int32 [n], marks bool [n]) of a rhyme document: tokens overlapping `spans`."""
  ids, offsets = tokenizer.encode_with_offsets(text)
  return np.asarray(ids, np.int32), local.span_marks(offsets, spans)


@dataclasses.dataclass(eq=False)
class RhymeConfig(local.MarkedTextConfig):
  poem_fraction: float = 0.5  # the share of documents that are poems


class Rhyme(local.MarkedText):
  """Poems whose line-final colours must have rhymes, and prose (rhyme.py)."""

  BUILDER_CONFIGS: ClassVar[list[RhymeConfig]] = [RhymeConfig(name="default")]

  def _document(self, rng):
    return rhyme_document(rng, poem_fraction=self.builder_config.poem_fraction)


def prompt(tokenizer, record: Mapping[str, Any]) -> tuple[list[int], int] | None:
  """A poem's first line as the prompt, then what follows it; None for prose."""
  text = local.text_of(record["text"])
  first = first_couplet_line(text)
  if first is None:
    return None
  head = tokenizer.encode(first)
  return head + tokenizer.encode(text[len(first):]), len(head)


def judge(tokenizer, records: Sequence[Mapping[str, Any]],
          continuations: list[list[int]]) -> dict[str, np.ndarray]:
  """rhymed: the continuation's first line ends in a rhyme of the poem's first line."""
  return {"rhymed": np.asarray([
      rhymes(first_couplet_line(local.text_of(r["text"])), tokenizer.decode(c))
      for r, c in zip(records, continuations)], np.float64)}


TESTBED = local.Testbed(name=NAME, builder=Rhyme, marks=rhyme_marks, prompt=prompt,
                        judge=judge, judge_columns=(("rhymed", "rhymed", ".3f"),))
