"""Text testbeds that need lookahead (docs/design.md section 5): generators and token marks.

Pure python/numpy; the TFDS builders in `builders.py` store what these functions return.

**rhyme**: a document is either prose or a poem. Prose uses colour words with their
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

**article**: riddles "This animal has big ears and long tusks. It is an elephant." The
clue determines the noun, and the article ("a" or "an") must anticipate the noun's first
sound. Clues contain no "a"/"an". Mark: for each answer article, the first token at
which the document's tokenization differs from the tokenization of the same document
with "a" and "an" swapped (the byte after the "a" with the byte-level tokenizer, the
" a"/" an" token itself with GPT-2's BPE).

Marks are returned per token, aligned to `tokenizer.encode(text)`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

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


class _Encoder(Protocol):

  def encode(self, text: str) -> list[int]: ...

  def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]: ...


def article_for(noun: str) -> str:
  """"an" before a vowel letter, else "a" (true of every noun in CLUES)."""
  return "an" if noun[0] in "aeiou" else "a"


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


def rhyme_marks(tokenizer: _Encoder, text: str,
                spans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(ids int32 [n], marks bool [n]) of a rhyme document: tokens overlapping `spans`."""
  ids, offsets = tokenizer.encode_with_offsets(text)
  return np.asarray(ids, np.int32), span_marks(offsets, spans)


def article_marks(tokenizer: _Encoder, text: str,
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
