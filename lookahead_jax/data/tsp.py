"""Travelling-salesman testbed: instances, exact and greedy tours, checks, vocabulary,
its builder and its record.

An instance is `coords`, int32 [n, 2]: n distinct cities on a `grid_size` x `grid_size`
grid, in random order; city `i` is row `i`. A tour is a sequence of the n city indices
(a closed cycle: the salesman returns from the last city to the first). Lengths are
Euclidean.

Token layout of `TspTokenizer(grid_size=G, max_cities=N)`:

    0            pad
    1            end of document (EOD)
    2            separator between the instance and its tour (":" in text form)
    3 .. 3+G-1   coordinate values 0 .. G-1
    3+G .. +N-1  city indices 0 .. N-1

An example is `x_0 y_0 x_1 y_1 ... x_{n-1} y_{n-1} : c_0 c_1 ... c_{n-1}` with the
optimal tour written from city 0 (`c_0 = 0`) in the direction where `c_1 < c_{n-1}`.
"Needs lookahead" marks the tour tokens `c_1 .. c_{n-2}`: the cities chosen while
more than one city is left unvisited. `c_0` is fixed by the format and `c_{n-1}` is the
only city left.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from lookahead_jax.data import local
from lookahead_jax.data.tokenizers import FixedSpecialIds

NAME = "tsp"

_REL_TOL = 1e-9  # two tour lengths closer than this (relative) are equal


@dataclasses.dataclass(frozen=True)
class TspInstance:
  """One kept instance: coords int32 [n, 2], optimal tour int32 [n] and both lengths."""

  coords: np.ndarray
  tour: np.ndarray
  optimal_length: float
  greedy_length: float

  @property
  def num_cities(self) -> int:
    return len(self.coords)


def sample_coords(rng: np.random.Generator, num_cities: int, grid_size: int) -> np.ndarray:
  """Returns int32 [num_cities, 2]: distinct grid points (x, y) in random order."""
  if not 2 <= num_cities <= grid_size * grid_size:
    raise ValueError(f"num_cities={num_cities} must be in [2, grid_size**2={grid_size**2}]")
  cells = rng.choice(grid_size * grid_size, size=num_cities, replace=False)
  return np.stack([cells % grid_size, cells // grid_size], axis=1).astype(np.int32)


def tour_length(coords: np.ndarray, tour: Sequence[int]) -> float:
  """Length of the closed tour (int [n]) through coords [n, 2]."""
  t = np.asarray(tour, dtype=np.int64)
  c = np.asarray(coords, dtype=np.float64)
  steps = c[np.roll(t, -1)] - c[t]
  return float(np.sqrt((steps**2).sum(-1)).sum())


def is_valid_tour(tour: Sequence[int], num_cities: int) -> bool:
  """True when `tour` visits each of the cities 0 .. num_cities-1 exactly once."""
  t = list(tour)
  return len(t) == num_cities and sorted(t) == list(range(num_cities))


def optimality_gap(coords: np.ndarray, tour: Sequence[int],
                   optimal_tour: Sequence[int] | None = None) -> float:
  """Relative excess length `len(tour) / len(optimal_tour) - 1`; 0.0 for an optimal tour.

  Both lengths are computed here in float64 (pass the dataset's `tour`; without it the
  optimum is solved by `held_karp`). Raises ValueError for a tour that is not valid
  (check with `is_valid_tour` first).
  """
  if not is_valid_tour(tour, len(coords)):
    raise ValueError(f"not a valid tour of {len(coords)} cities: {list(tour)}")
  best = tour_length(coords, optimal_tour) if optimal_tour is not None else held_karp(coords)[1]
  gap = tour_length(coords, tour) / best - 1.0
  return 0.0 if abs(gap) <= _REL_TOL else gap


def canonical_tour(tour: Sequence[int]) -> np.ndarray:
  """The same cycle written from city 0, in the direction where tour[1] < tour[-1]."""
  t = np.asarray(tour, dtype=np.int32)
  t = np.roll(t, -int(np.argmax(t == 0)))
  if len(t) > 2 and t[1] > t[-1]:
    t = np.concatenate([t[:1], t[:0:-1]])
  return t


def greedy_tour(coords: np.ndarray) -> np.ndarray:
  """Nearest-neighbour tour int32 [n] from city 0 (ties go to the lower city index)."""
  return greedy_tours(np.asarray(coords)[None])[0]


def greedy_tours(coords: np.ndarray) -> np.ndarray:
  """Nearest-neighbour tours int32 [B, n] from city 0 of a batch coords [B, n, 2]."""
  c = np.asarray(coords, dtype=np.float64)
  batch, n = c.shape[:2]
  dist = np.sqrt(((c[:, :, None, :] - c[:, None, :, :]) ** 2).sum(-1))
  rows = np.arange(batch)
  visited = np.zeros((batch, n), dtype=bool)
  tours = np.zeros((batch, n), dtype=np.int32)
  visited[:, 0] = True
  for step in range(1, n):
    here = dist[rows, tours[:, step - 1]]  # [B, n]
    tours[:, step] = np.argmin(np.where(visited, np.inf, here), axis=1)
    visited[rows, tours[:, step]] = True
  return tours


@functools.lru_cache(maxsize=None)
def _layers(m: int) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
  """Held–Karp steps over m cities: per subset size s = 2..m, every (S, j) with j in S.

  Entry s-2 is (masks [P], js [P], prevs [P]) with prev = S without j, P = C(m, s) * s.
  """
  masks = np.arange(1 << m, dtype=np.int64)
  bits = np.int64(1) << np.arange(m, dtype=np.int64)
  has = (masks[:, None] & bits[None, :]) != 0
  size = has.sum(axis=1)
  steps = []
  for s in range(2, m + 1):
    ms, js = np.nonzero(has & (size[:, None] == s))
    steps.append((ms, js, ms ^ bits[js]))
  return tuple(steps)


def held_karp(coords: np.ndarray) -> tuple[np.ndarray, float]:
  """Exact shortest tour of one instance coords [n, 2]: (tour int32 [n], its length)."""
  tours, lengths = held_karp_batch(np.asarray(coords)[None])
  return tours[0], float(lengths[0])


def held_karp_batch(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Exact shortest tours by Held–Karp dynamic programming, O(B 2^n n^2).

  Args:
    coords: [B, n, 2], a batch of instances with the same n, 2 <= n <= 16.

  Returns:
    tours int32 [B, n] in `canonical_tour` form and their lengths float64 [B].
  """
  c = np.asarray(coords, dtype=np.float64)
  batch, n = c.shape[:2]
  if not 2 <= n <= 16:
    raise ValueError(f"held_karp needs 2 <= n <= 16 cities (it is exponential), got {n}")
  dist = np.sqrt(((c[:, :, None, :] - c[:, None, :, :]) ** 2).sum(-1))  # [B, n, n]
  m = n - 1  # cities 1 .. n-1 are bits 0 .. m-1
  into = dist[:, 1:, 1:].transpose(0, 2, 1)  # [B, j, k] = d(city k+1, city j+1)
  bits = np.int64(1) << np.arange(m, dtype=np.int64)
  # cost[b, S, j]: shortest path from city 0 through the set S, ending at city j+1 in S;
  # inf where j is not in S.
  cost = np.full((batch, 1 << m, m), np.inf)
  cost[:, bits, np.arange(m)] = dist[:, 0, 1:]
  for masks, js, prevs in _layers(m):
    cost[:, masks, js] = (cost[:, prevs] + into[:, js]).min(axis=-1)
  # Walk back from the best last city, re-deriving each predecessor from the table.
  rows = np.arange(batch)
  mask = np.full(batch, (1 << m) - 1, dtype=np.int64)
  last = np.argmin(cost[:, -1] + dist[:, 1:, 0], axis=1)
  tours = np.zeros((batch, n), dtype=np.int32)
  for pos in range(n - 1, 0, -1):
    tours[:, pos] = last + 1
    mask = mask ^ bits[last]
    if pos > 1:
      last = np.argmin(cost[rows, mask] + into[rows, last], axis=1)
  tours = np.stack([canonical_tour(t) for t in tours])
  lengths = np.array([tour_length(ci, t) for ci, t in zip(c, tours)])
  return tours, lengths


def generate_instances(
    rng: np.random.Generator,
    num_cities: int,
    grid_size: int,
    count: int,
    exclude: Iterable[tuple[int, ...]] = (),
    batch_size: int = 32,
) -> list[TspInstance]:
  """Samples `count` instances whose greedy tour from city 0 is longer than the optimum.

  Instances whose city set is in `exclude` (see `city_set`) or was already kept are
  skipped, so splits generated with a shared exclude set are disjoint. Candidates are
  solved `batch_size` at a time; the result depends only on rng and the arguments.
  """
  seen = set(exclude)
  kept = []
  sampled = 0
  while len(kept) < count:
    if sampled > 1000 * count + 1000:
      raise RuntimeError(
          f"found only {len(kept)} of {count} TSP instances with {num_cities} cities on a "
          f"{grid_size}x{grid_size} grid where greedy is not optimal; use a larger grid")
    coords = np.stack([sample_coords(rng, num_cities, grid_size) for _ in range(batch_size)])
    sampled += batch_size
    tours, best = held_karp_batch(coords)
    greedy = greedy_tours(coords)
    for x, tour, length, g in zip(coords, tours, best, greedy):
      key = city_set(x)
      greedy_length = tour_length(x, g)
      if key in seen or greedy_length <= length * (1 + _REL_TOL) or len(kept) == count:
        continue
      seen.add(key)
      kept.append(TspInstance(x, tour, float(length), greedy_length))
  return kept


def city_set(coords: np.ndarray) -> tuple[int, ...]:
  """Order-free key of an instance: its sorted (x, y) pairs, flattened."""
  return tuple(int(v) for xy in sorted(map(tuple, np.asarray(coords).tolist())) for v in xy)


class TspTokenizer(FixedSpecialIds):
  """Token vocabulary of the TSP testbed (layout in the module docstring).

  Text form, for `encode`/`decode`: "x,y x,y ... : c c ..." e.g. "3,4 0,0 1,2 : 0 2 1".
  """

  SEP = 2
  _FIRST_COORD = 3

  def __init__(self, grid_size: int, max_cities: int):
    if grid_size < 2 or max_cities < 2:
      raise ValueError(f"grid_size={grid_size} and max_cities={max_cities} must be >= 2")
    self.grid_size = grid_size
    self.max_cities = max_cities
    self._first_city = self._FIRST_COORD + grid_size

  @property
  def vocab_size(self) -> int:
    return self._first_city + self.max_cities

  @property
  def sep_id(self) -> int:
    return self.SEP

  def coord_id(self, value: int) -> int:
    if not 0 <= value < self.grid_size:
      raise ValueError(f"coordinate {value} is outside the {self.grid_size}x{self.grid_size} grid")
    return self._FIRST_COORD + int(value)

  def city_id(self, city: int) -> int:
    if not 0 <= city < self.max_cities:
      raise ValueError(f"city {city} is outside 0..{self.max_cities - 1}")
    return self._first_city + int(city)

  def city_of(self, token: int) -> int | None:
    """City index of a token id, or None when the token is not a city."""
    city = int(token) - self._first_city
    return city if 0 <= city < self.max_cities else None

  def encode_instance(self, coords: np.ndarray) -> list[int]:
    """The prompt of an instance, up to and including the separator."""
    if len(coords) > self.max_cities:
      raise ValueError(f"{len(coords)} cities > max_cities={self.max_cities}")
    ids = [self.coord_id(v) for xy in np.asarray(coords).tolist() for v in xy]
    return ids + [self.SEP]

  def prompt_length(self, ids: Sequence[int]) -> int:
    """Tokens of an example's prompt: the coordinates and the separator."""
    return list(map(int, ids)).index(self.SEP) + 1

  def encode_tour(self, tour: Sequence[int]) -> list[int]:
    return [self.city_id(c) for c in tour]

  def decode_tour(self, ids: Sequence[int]) -> list[int] | None:
    """City indices of tour tokens; None if any token is not a city (an invalid tour)."""
    cities = [self.city_of(t) for t in ids]
    return None if any(c is None for c in cities) else cities

  def example(self, instance: TspInstance) -> tuple[np.ndarray, np.ndarray]:
    """Tokens int32 [3n+1] of an instance and its tour; needs-lookahead marks bool [3n+1]."""
    n = instance.num_cities
    ids = self.encode_instance(instance.coords) + self.encode_tour(instance.tour)
    marks = np.zeros(len(ids), dtype=bool)
    marks[2 * n + 2 : 3 * n] = True  # c_1 .. c_{n-2}; c_0 sits at 2n+1
    return np.asarray(ids, dtype=np.int32), marks

  def encode(self, text: str) -> list[int]:
    """Parses the text form "x,y ... : c ..." into token ids."""
    return self.encode_with_offsets(text)[0].tolist()

  def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 [n], character offsets int32 [n, 2]) of the text form."""
    ids, offsets, in_tour = [], [], False
    for match in re.finditer(r"\d+|:|\S", text):
      word = match.group()
      if word == ":" and not in_tour:
        ids.append(self.SEP)
        in_tour = True
      elif word.isdigit():
        ids.append(self.city_id(int(word)) if in_tour else self.coord_id(int(word)))
      elif word != ",":
        raise ValueError(f"not a TSP text: unexpected {word!r} at {match.start()} in {text!r}")
      else:
        continue
      offsets.append(match.span())
    return np.asarray(ids, np.int32), np.asarray(offsets, np.int32).reshape(-1, 2)

  def decode(self, ids: Sequence[int]) -> str:
    """Text form of token ids; pad, EOD and [MASK] are dropped, other ids print as <id>."""
    words, coords = [], []
    for t in (int(t) for t in ids):
      if t in (self.PAD, self.EOD, self.mask_id):
        continue
      if self._FIRST_COORD <= t < self._first_city:
        coords.append(str(t - self._FIRST_COORD))
        if len(coords) == 2:
          words.append(",".join(coords))
          coords = []
        continue
      if coords:
        words.append(coords.pop() + ",")
      if t == self.SEP:
        words.append(":")
      elif self.city_of(t) is not None:
        words.append(str(self.city_of(t)))
      else:
        words.append(f"<{t}>")
    if coords:
      words.append(coords.pop() + ",")
    return " ".join(words)


# ----------------------------------------------------------------------------- builder


@dataclasses.dataclass(eq=False)
class TspConfig(tfds.core.BuilderConfig):
  levels: tuple[int, ...] = (5, 6, 7, 8, 9, 10)  # city counts
  grid_size: int = 10
  train_size: int = 4_000  # per level
  validation_size: int = 250  # per level
  test_size: int = 250  # per level
  seed: int = 0


class Tsp(local.LocalBuilder):
  """TSP instances on a grid with their optimal tours; greedy is never optimal (tsp.py).

  Features: tokens int32 [3n+1], needs_lookahead bool [3n+1], coords int32 [n, 2], tour
  int32 [n] (optimal, canonical), num_cities. Lengths are not stored (TFDS keeps floats
  as float32): recompute them with tour_length / optimality_gap. Splits train/validation/
  test (all levels) and train_n{n}, validation_n{n}, test_n{n} per city count n (for a
  curriculum; "train_n5+train_n6" reads two); no instance is in two splits.
  """

  BUILDER_CONFIGS: ClassVar[list[TspConfig]] = [TspConfig(name="default")]

  def _info(self) -> tfds.core.DatasetInfo:
    tok = _tokenizer_of(self.builder_config)
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
            tokenizer=NAME, grid_size=tok.grid_size, max_cities=tok.max_cities,
            vocab_size=tok.vocab_size))

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg = self.builder_config
    seen: set[tuple[int, ...]] = set()
    instances = {}
    for split in reversed(local.SPLITS):  # test first: it never loses instances to train
      for n in cfg.levels:
        rng = np.random.default_rng([cfg.seed, local.SPLITS.index(split), n])
        kept = generate_instances(rng, n, cfg.grid_size, local.split_size(split, cfg),
                                  exclude=seen)
        seen.update(city_set(x.coords) for x in kept)
        instances[split, n] = kept
    tok = _tokenizer_of(cfg)
    examples = {key: [_example(tok, x) for x in kept] for key, kept in instances.items()}
    generators = {}
    for split in local.SPLITS:
      combined = [(f"{n}-{i}", x) for n in cfg.levels for i, x in enumerate(examples[split, n])]
      generators[split] = self._generate_examples(combined)
      for n in cfg.levels:
        generators[f"{split}_n{n}"] = self._generate_examples(list(enumerate(examples[split, n])))
    return {k: v for k, v in generators.items() if local.split_size(k, cfg)}

  def _generate_examples(self, keyed_examples):
    yield from keyed_examples


def _example(tok: TspTokenizer, x: TspInstance) -> dict[str, Any]:
  tokens, marks = tok.example(x)
  return {"tokens": tokens, "needs_lookahead": marks, "coords": x.coords, "tour": x.tour,
          "num_cities": x.num_cities}


def _tokenizer_of(config: TspConfig) -> TspTokenizer:
  return TspTokenizer(grid_size=config.grid_size, max_cities=max(config.levels))


def tokenizer(**options: Any) -> TspTokenizer:
  """The vocabulary of the dataset built with these builder options."""
  return _tokenizer_of(Tsp.make_config(**options))


def longest_document(**options: Any) -> int:
  """Tokens of the longest example: 2n coordinates, the separator and n cities."""
  return 3 * max(Tsp.make_config(**options).levels) + 1


def judge(tok: TspTokenizer, records: Sequence[Mapping[str, Any]],
          continuations: list[list[int]]) -> dict[str, np.ndarray]:
  """valid: the first n tokens are a tour of the n cities; gap: its optimality gap (NaN
  when not valid)."""
  valid, gap = [], []
  for r, c in zip(records, continuations):
    n = int(r["num_cities"])
    found = tok.decode_tour(c[:n])
    ok = found is not None and len(c) >= n and is_valid_tour(found, n)
    valid.append(float(ok))
    gap.append(optimality_gap(r["coords"], found, r["tour"]) if ok else np.nan)
  return {"valid": np.asarray(valid), "gap": np.asarray(gap)}


TESTBED = local.Testbed(name=NAME, builder=Tsp, tokenizer=tokenizer,
                        longest_document=longest_document, judge=judge)
