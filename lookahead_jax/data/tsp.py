"""Travelling-salesman testbed: instances, checks, vocabulary, its builder and its record.

An instance is `coords`, int32 [n, 2]: n distinct cities on a `grid_size` x `grid_size`
grid, in random order; city `i` is row `i`. A tour is a sequence of the n city indices
(a closed cycle: the salesman returns from the last city to the first). Lengths are
Euclidean. The tours themselves (exact and heuristic) are in tsp_tours.py.

Token layout of `TspTokenizer(grid_size=G, max_cities=N)`:

    0                pad
    1                end of document (EOD)
    2                separator between the instance and its tour (":" in text form)
    3 .. 3+G-1       x coordinates 0 .. G-1
    3+G .. 3+2G-1    y coordinates 0 .. G-1
    3+2G .. +N-1     city indices 0 .. N-1

An example is `x_0 y_0 0  x_1 y_1 1  ...  x_{n-1} y_{n-1} n-1  :  c_0 c_1 ... c_{n-1}`:
each city's coordinates followed by its own index token, then the optimal tour written
from city 0 (`c_0 = 0`) in the direction where `c_1 < c_{n-1}`. The layout makes the
tour a pointer task: the index token closes each city's triple, so its position can
hold the city's coordinates, and a tour token finds its city by matching the same
token in the prompt (one attention read, as an induction head copies), not by counting
positions; x and y have tokens of their own, so no position parity tells them apart.
"Needs lookahead" marks the tour tokens `c_1 .. c_{n-2}`: the cities chosen while more
than one city is left unvisited. `c_0` is fixed by the format and `c_{n-1}` is the only
city left.

Instances are kept only where the nearest-neighbour tour from city 0 is longer than the
optimum (the source's filter: a model that learns the greedy rule gains nothing here).

The training and validation instances are written a second time with the nearest-neighbour
tour as the target (splits `train_nearest_n{n}`, `validation_nearest_n{n}`), for a
curriculum that first teaches the model to read distances: with the optimal tour alone, a
model stays at an index prior (c_1 = city 1) and never reads the coordinates (docs/results.md,
"tsp"); the greedy rule's choices are local, and it learns them.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from lookahead_jax.data import local, tsp_tours
from lookahead_jax.data.tokenizers import FixedSpecialIds

NAME = "tsp"

_REL_TOL = 1e-9  # two tour lengths closer than this (relative) are equal
# Candidates sampled and solved together: _BATCH_CELLS / 2^(n-1) (the Held-Karp table's
# cells per instance), at most _MAX_BATCH; about 150 MB of tables at any n.
_BATCH_CELLS = 1 << 21
_MAX_BATCH = 8192
# The task return solves each prompt exactly (Held-Karp over 2^(max_cities-1) subsets).
_MAX_RETURN_CITIES = 10


def sample_coords(rng: np.random.Generator, count: int, num_cities: int,
                  grid_size: int) -> np.ndarray:
  """int32 [count, num_cities, 2]: instances of distinct grid points (x, y), random order."""
  if not 2 <= num_cities <= grid_size * grid_size:
    raise ValueError(f"num_cities={num_cities} must be in [2, grid_size**2={grid_size**2}]")
  cells = np.empty((0, num_cities), np.int64)
  while len(cells) < count:  # draw with replacement; redraw the rows with a repeated cell
    draw = rng.integers(0, grid_size * grid_size, (2 * (count - len(cells)) + 8, num_cities))
    ordered = np.sort(draw, axis=1)
    distinct = (ordered[:, 1:] != ordered[:, :-1]).all(axis=1)
    cells = np.concatenate([cells, draw[distinct]])
  cells = cells[:count]
  return np.stack([cells % grid_size, cells // grid_size], axis=-1).astype(np.int32)


def city_sets(coords: np.ndarray) -> list[bytes]:
  """Order-free key of each instance of coords [B, n, 2]: its sorted cells, as bytes."""
  c = np.asarray(coords, np.int64)
  cells = np.sort(c[..., 1] * (1 << 20) + c[..., 0], axis=1)
  return [row.tobytes() for row in cells]


def tour_length(coords: np.ndarray, tour: Sequence[int]) -> float:
  """Length of the closed tour (int [n]) through coords [n, 2]."""
  return float(tsp_tours.lengths(np.asarray(coords)[None], np.asarray(tour)[None])[0])


def is_valid_tour(tour: Sequence[int], num_cities: int) -> bool:
  """True when `tour` visits each of the cities 0 .. num_cities-1 exactly once."""
  t = list(tour)
  return len(t) == num_cities and sorted(t) == list(range(num_cities))


def optimality_gap(coords: np.ndarray, tour: Sequence[int],
                   optimal_tour: Sequence[int] | None = None) -> float:
  """Relative excess length `len(tour) / len(optimal_tour) - 1`; 0.0 for an optimal tour.

  Both lengths are computed here in float64 (pass the dataset's `tour`; without it the
  optimum is solved by Held-Karp). Raises ValueError for a tour that is not valid
  (check with `is_valid_tour` first).
  """
  if not is_valid_tour(tour, len(coords)):
    raise ValueError(f"not a valid tour of {len(coords)} cities: {list(tour)}")
  if optimal_tour is None:
    optimal_tour = tsp_tours.held_karp(np.asarray(coords)[None])[0][0]
  gap = tour_length(coords, tour) / tour_length(coords, optimal_tour) - 1.0
  return 0.0 if abs(gap) <= _REL_TOL else gap


@dataclasses.dataclass(frozen=True)
class Instances:
  """Kept instances of one city count n: coords int32 [k, n, 2], optimal tours int32
  [k, n] (canonical), and `sampled`: candidates drawn to keep these k (the filter's
  kept share is k / sampled, duplicates aside)."""

  coords: np.ndarray
  tours: np.ndarray
  sampled: int

  def __len__(self) -> int:
    return len(self.coords)


def generate_instances(rng: np.random.Generator, num_cities: int, grid_size: int, count: int,
                       exclude: set[bytes] | None = None,
                       progress: Callable[[int], Any] | None = None) -> Instances:
  """Samples `count` distinct instances whose nearest-neighbour tour is longer than the
  optimum, none with a city set in `exclude` (which then holds the kept ones too, so
  splits generated in turn with one set are disjoint). Depends only on rng and the
  arguments: candidates are drawn and solved in batches, kept in order. `progress` is
  called with the number kept from each batch (a progress bar's update)."""
  seen = set() if exclude is None else exclude
  per_batch = min(_MAX_BATCH, _BATCH_CELLS >> (num_cities - 1))
  coords, tours, sampled = [], [], 0
  while len(coords) < count:
    if sampled > 100 * count + 10 * per_batch:
      raise RuntimeError(
          f"found only {len(coords)} of {count} TSP instances with {num_cities} cities on a "
          f"{grid_size}x{grid_size} grid where nearest neighbour is not optimal; use a "
          f"larger grid or more cities")
    kept_before = len(coords)
    batch = sample_coords(rng, per_batch, num_cities, grid_size)
    best, length = tsp_tours.held_karp(batch)
    greedy = tsp_tours.lengths(batch, tsp_tours.nearest_neighbour(batch))
    worse = np.flatnonzero(greedy > length * (1 + _REL_TOL))
    drawn = per_batch
    for i, key in zip(worse, city_sets(batch[worse])):
      if key in seen:
        continue
      seen.add(key)
      coords.append(batch[i])
      tours.append(best[i])
      if len(coords) == count:
        drawn = int(i) + 1
        break
    sampled += drawn
    if progress is not None:
      progress(len(coords) - kept_before)
  return Instances(np.asarray(coords, np.int32).reshape(-1, num_cities, 2),
                   np.asarray(tours, np.int32).reshape(-1, num_cities), sampled)


class TspTokenizer(FixedSpecialIds):
  """Token vocabulary of the TSP testbed (layout in the module docstring).

  Text form, for `encode`/`decode`: "x,y x,y ... : c c ..." e.g. "3,4 0,0 1,2 : 0 2 1";
  the prompt's index tokens follow from the order of the pairs and are not written.
  """

  SEP = 2
  _FIRST_X = 3

  def __init__(self, grid_size: int, max_cities: int):
    if grid_size < 2 or max_cities < 2:
      raise ValueError(f"grid_size={grid_size} and max_cities={max_cities} must be >= 2")
    self.grid_size = grid_size
    self.max_cities = max_cities
    self._first_y = self._FIRST_X + grid_size
    self._first_city = self._first_y + grid_size

  @property
  def vocab_size(self) -> int:
    return self._first_city + self.max_cities

  @property
  def sep_id(self) -> int:
    return self.SEP

  def coord_ids(self, coords: np.ndarray) -> np.ndarray:
    """int32 [..., 2]: the x and y tokens of coords [..., 2]."""
    c = np.asarray(coords, np.int64)
    if c.size and not (c.min() >= 0 and c.max() < self.grid_size):
      raise ValueError(f"a coordinate of {c.tolist()} is outside the "
                       f"{self.grid_size}x{self.grid_size} grid")
    return (c + [self._FIRST_X, self._first_y]).astype(np.int32)

  def numeric_tokens(self) -> tuple[tuple[int, int, float], ...]:
    """The tokens that are numbers (model.numeric_features reads them so): (token id,
    channel, value) with channel 0 for the x tokens, 1 for the y tokens and value the
    coordinate over grid_size, in [0, 1)."""
    return tuple((first + v, channel, v / self.grid_size)
                 for channel, first in enumerate((self._FIRST_X, self._first_y))
                 for v in range(self.grid_size))

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
    return self.examples(np.asarray(coords)[None], None)[0][0].tolist()

  def prompt_length(self, ids: Sequence[int]) -> int:
    """Tokens of an example's prompt: the city triples and the separator."""
    return list(map(int, ids)).index(self.SEP) + 1

  def encode_tour(self, tour: Sequence[int]) -> list[int]:
    return [self.city_id(c) for c in tour]

  def decode_tour(self, ids: Sequence[int]) -> list[int] | None:
    """City indices of tour tokens; None if any token is not a city (an invalid tour)."""
    cities = [self.city_of(t) for t in ids]
    return None if any(c is None for c in cities) else cities

  def examples(self, coords: np.ndarray, tours: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Tokens int32 [k, 4n+1] of instances coords [k, n, 2] and their tours int [k, n],
    and the needs-lookahead marks bool [k, 4n+1]; tours None: the prompts [k, 3n+1]."""
    k, n = np.shape(coords)[:2]
    if n > self.max_cities:
      raise ValueError(f"{n} cities > max_cities={self.max_cities}")
    cities = np.broadcast_to(self._first_city + np.arange(n, dtype=np.int32), (k, n))
    triples = np.concatenate([self.coord_ids(coords), cities[..., None]], axis=-1)
    parts = [triples.reshape(k, 3 * n), np.full((k, 1), self.SEP, np.int32)]
    if tours is not None:
      parts.append((self._first_city + np.asarray(tours, np.int64)).astype(np.int32))
    ids = np.concatenate(parts, axis=1)
    marks = np.zeros(ids.shape, dtype=bool)
    marks[:, 3 * n + 2:4 * n] = tours is not None  # c_1 .. c_{n-2}; c_0 sits at 3n+1
    return ids, marks

  def encode(self, text: str) -> list[int]:
    """Parses the text form "x,y ... : c ..." into token ids."""
    return self.encode_with_offsets(text)[0].tolist()

  def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 [n], character offsets int32 [n, 2]) of the text form; a prompt's
    index token has the offsets of its pair."""
    ids, offsets, in_tour, pairs = [], [], False, 0
    for match in re.finditer(r"\d+,\d+|\d+|:|\S", text):
      word = match.group()
      if word == ":" and not in_tour:
        ids.append(self.SEP)
        in_tour = True
      elif "," in word and not in_tour:
        x, y = map(int, word.split(","))
        ids += self.coord_ids([x, y]).tolist() + [self.city_id(pairs)]
        offsets += [match.span()] * 2
        pairs += 1
      elif word.isdigit() and in_tour:
        ids.append(self.city_id(int(word)))
      else:
        raise ValueError(f"not a TSP text: unexpected {word!r} at {match.start()} in {text!r}")
      offsets.append(match.span())
    return np.asarray(ids, np.int32), np.asarray(offsets, np.int32).reshape(-1, 2)

  def decode(self, ids: Sequence[int]) -> str:
    """Text form of token ids; pad, EOD and [MASK] are dropped, a prompt's index token
    that follows its pair is implied, other ids print as <id>."""
    words, pairs, in_tour = [], 0, False
    for t in (int(t) for t in ids):
      if t in (self.PAD, self.EOD, self.mask_id):
        continue
      if self._FIRST_X <= t < self._first_y:
        words.append(f"{t - self._FIRST_X},")
      elif self._first_y <= t < self._first_city and words and words[-1].endswith(","):
        words[-1] += str(t - self._first_y)
      elif t == self.SEP and not in_tour:
        words.append(":")
        in_tour = True
      elif self.city_of(t) is not None and (in_tour or self.city_of(t) != pairs):
        words.append(str(self.city_of(t)) if in_tour else f"<{t}>")
      elif self.city_of(t) is not None:
        pairs += 1
      else:
        words.append(f"<{t}>")
    return " ".join(words)


# ----------------------------------------------------------------------------- builder


@dataclasses.dataclass(eq=False)
class TspConfig(tfds.core.BuilderConfig):
  levels: tuple[int, ...] = (5, 6, 7, 8, 9, 10)  # city counts
  grid_size: int = 64
  train_size: int = 100_000  # per level
  validation_size: int = 500  # per level
  test_size: int = 1_000  # per level
  seed: int = 0


class Tsp(local.LocalBuilder):
  """TSP instances on a grid with their optimal tours; nearest neighbour is never
  optimal (tsp.py).

  Features: tokens int32 [4n+1], needs_lookahead bool [4n+1], coords int32 [n, 2], tour
  int32 [n] (optimal, canonical), num_cities. Lengths are not stored (TFDS keeps floats
  as float32): recompute them with tour_length / optimality_gap. Splits train/validation/
  test (all levels) and train_n{n}, validation_n{n}, test_n{n} per city count n (for a
  curriculum; "train_n5+train_n6" reads two); no instance is in two splits. The splits
  train_nearest_n{n} and validation_nearest_n{n} hold train_n{n}'s and validation_n{n}'s
  instances with the nearest-neighbour tour in their tokens (a first curriculum stage). The metadata
  gives per level the share of sampled instances the filter kept (`kept_share`).
  """

  VERSION = tfds.core.Version("3.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {
      "1.0.0": "First version.",
      "2.0.0": "Each city's coordinates followed by its index token; x and y tokens of "
               "their own; 64x64 grid, 100k training instances per level.",
      "3.0.0": "train_nearest_n{n} and validation_nearest_n{n}: the same instances with the "
               "nearest-neighbour tour as the target.",
  }
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
    seen: set[bytes] = set()
    instances, drawn = {}, dict.fromkeys(cfg.levels, 0)
    total = len(cfg.levels) * sum(local.split_size(s, cfg) for s in local.SPLITS)
    with tqdm.tqdm(total=total, desc="tsp: solving", unit="instance") as bar:
      for split in reversed(local.SPLITS):  # test first: it never loses instances to train
        for n in cfg.levels:
          rng = np.random.default_rng([cfg.seed, local.SPLITS.index(split), n])
          kept = generate_instances(rng, n, cfg.grid_size, local.split_size(split, cfg), seen,
                                    bar.update)
          instances[split, n] = kept
          drawn[n] += kept.sampled
    shares = {str(n): sum(len(instances[s, n]) for s in local.SPLITS) / drawn[n]
              for n in cfg.levels}
    self.info.metadata["kept_share"] = shares
    logging.info("tsp: share of sampled instances kept (nearest neighbour not optimal) "
                 "per city count: %s", shares)
    tok = _tokenizer_of(cfg)
    generators = {}
    for split in local.SPLITS:
      for n in cfg.levels:
        generators[f"{split}_n{n}"] = self._generate_examples(
            tok, instances[split, n], f"n{n}-")
        if split != "test":
          generators[f"{split}_nearest_n{n}"] = self._generate_examples(
              tok, instances[split, n], f"n{n}-", nearest=True)
      generators[split] = self._generate_all(tok, [instances[split, n] for n in cfg.levels])
    return {k: v for k, v in generators.items() if local.split_size(k, cfg)}

  def _generate_all(self, tok, levels):
    for kept in levels:
      yield from self._generate_examples(tok, kept, f"n{kept.coords.shape[1]}-")

  def _generate_examples(self, tok: TspTokenizer, kept: Instances, prefix: str,
                         nearest: bool = False):
    """Examples of the kept instances; their tokens end in the optimal tour, or with
    `nearest` in the nearest-neighbour tour (the `tour` feature is the optimum's)."""
    if not len(kept):
      return
    tours = tsp_tours.nearest_neighbour(kept.coords) if nearest else kept.tours
    ids, marks = tok.examples(kept.coords, tours)
    n = kept.coords.shape[1]
    for i in range(len(kept)):
      yield f"{prefix}{i}", {"tokens": ids[i], "needs_lookahead": marks[i],
                             "coords": kept.coords[i], "tour": kept.tours[i], "num_cities": n}


def _tokenizer_of(config: TspConfig) -> TspTokenizer:
  return TspTokenizer(grid_size=config.grid_size, max_cities=max(config.levels))


def tokenizer(**options: Any) -> TspTokenizer:
  """The vocabulary of the dataset built with these builder options."""
  return _tokenizer_of(Tsp.make_config(**options))


def longest_document(**options: Any) -> int:
  """Tokens of the longest example: n triples, the separator and n cities."""
  return 4 * max(Tsp.make_config(**options).levels) + 1


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


# ----------------------------------------------------------------------------- task return


def _optimal_length(dist):
  """[] float32: the shortest closed tour of the distances dist [N, N] (Held-Karp over
  tsp_tours' subset layers, unrolled at trace time)."""
  m = dist.shape[0] - 1  # cities 1 .. N-1 are bits 0 .. m-1
  into = dist[1:, 1:].T  # [j, k] = d(city k+1, city j+1)
  cost = jnp.full((1 << m, m), jnp.inf).at[1 << np.arange(m), np.arange(m)].set(dist[0, 1:])
  for masks, js, prevs in tsp_tours._layers(m):
    cost = cost.at[masks, js].set(jnp.min(cost[prevs] + into[js], axis=1))
  return jnp.min(cost[-1] + dist[1:, 0])


@dataclasses.dataclass(frozen=True)
class TourReturn:
  """The task's return of an answer, a pure JAX function: the optimal tour's length over
  the answer's, in (0, 1] (1: an optimal tour), when the answer, up to its EOD, visits
  each of the prompt's n cities exactly once; else 0.0. (The issue's "minus the length
  relative to the optimum", as the ratio: returns and the value head's targets are in
  [0, 1] on every testbed, heads.py.) The optimum is solved from the prompt's
  coordinates (cities past n sit on city 0, which lengthens no tour). Hashable by value.

  end_id: the token that ends an answer (EOD); a search ends a path there.
  """

  grid_size: int
  max_cities: int
  end_id: int = TspTokenizer.EOD

  def __call__(self, prefix, anchor, path):
    """prefix [T] int32: the anchor's own document (-1 elsewhere; mcts.Context), of which
    nothing after the anchor is read; anchor []: its index; path [D] int32: the tokens
    after it (-1 where there are none). The answer is prefix's tokens after the separator
    up to the anchor, then `path` (an anchor before the separator: 0)."""
    tok = TspTokenizer(self.grid_size, self.max_cities)
    t, d, big_n = prefix.shape[0], path.shape[0], self.max_cities
    slots = jnp.arange(t)
    sep = jnp.max(jnp.where((slots <= anchor) & (prefix == tok.SEP), slots, -1))
    # The prompt's triples "x y c", read at each city token c before the separator.
    city = prefix - tok._first_city
    triple = (slots < sep) & (slots >= 2) & (city >= 0) & (city < big_n)
    xy = jnp.stack([prefix[jnp.maximum(slots - 2, 0)] - tok._FIRST_X,
                    prefix[jnp.maximum(slots - 1, 0)] - tok._first_y], axis=-1)
    of = triple[None] & (city[None] == jnp.arange(big_n)[:, None])  # [N, T]
    present = jnp.any(of, axis=1)
    coords = jnp.sum(jnp.where(of[..., None], xy[None], 0), axis=1).astype(jnp.float32)
    coords = jnp.where(present[:, None], coords, coords[0])
    n = jnp.sum(present)
    # The answer: the tour tokens given before the anchor, then the path.
    start = sep + 1
    given = jnp.maximum(anchor + 1 - start, 0)
    i = jnp.arange(big_n + 1)
    answer = jnp.where(i < given, prefix[jnp.clip(start + i, 0, t - 1)],
                       jnp.where(i - given < d, path[jnp.clip(i - given, 0, d - 1)], -1))
    end = jnp.argmax(answer == self.end_id)
    stop = answer - tok._first_city
    visits = jnp.sum((i[:, None] < end) & (stop[:, None] == jnp.arange(big_n)), axis=0)
    ok = (sep >= 0) & (anchor >= sep) & (answer[end] == self.end_id) & (end == n)
    ok &= jnp.all(visits == present)
    dist = jnp.sqrt(jnp.sum(jnp.square(coords[:, None] - coords[None]), axis=-1))
    here = jnp.clip(stop, 0, big_n - 1)
    length = jnp.sum(jnp.where(i < n, dist[here, here[jnp.where(i + 1 < n, i + 1, 0)]], 0.0))
    ratio = jnp.minimum(_optimal_length(dist) / jnp.maximum(length, 1e-6), 1.0)
    return jnp.where(ok, ratio, 0.0).astype(jnp.float32)


def task_return(**options: Any) -> TourReturn:
  """The return of the dataset built with these builder options."""
  tok = tokenizer(**options)
  if tok.max_cities > _MAX_RETURN_CITIES:
    raise ValueError(f"tsp's task return solves every prompt exactly (Held-Karp, "
                     f"2^(n-1) subsets); max(data.options.levels)={tok.max_cities} > "
                     f"{_MAX_RETURN_CITIES}: use smaller levels or lookahead.reward='log_prob'")
  return TourReturn(grid_size=tok.grid_size, max_cities=tok.max_cities)


TESTBED = local.Testbed(name=NAME, builder=Tsp, tokenizer=tokenizer,
                        longest_document=longest_document, judge=judge,
                        judge_columns=(("valid", "valid tour", ".3f"), ("gap", "gap", ".3f")),
                        task_return=task_return)
