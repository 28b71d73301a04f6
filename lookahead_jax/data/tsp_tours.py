"""Tours of batches of TSP instances, vectorised in numpy: the exact optimum (Held-Karp)
and the baseline heuristics (nearest neighbour, farthest insertion, random insertion).

Every function takes coords [B, n, 2] (B instances of the same n cities; integer or float
coordinates) and returns tours int32 [B, n], each a permutation of 0 .. n-1 (a closed
cycle). Lengths are Euclidean, in float64. Ties go to the lowest index, so a batched
tour equals the one a direct loop over one instance finds (tests/test_tsp_tours.py).

The insertion heuristics are those of Rosenkrantz et al. 1977 as Kool et al. 2019
implement their baselines: a city is chosen (random insertion: the next in the
instance's own order, which is random; farthest insertion: the city whose distance to
the nearest tour city is largest, starting from the city with the largest summed
distance to all others) and inserted where it lengthens the tour least.
"""

from __future__ import annotations

import functools

import numpy as np


def distances(coords: np.ndarray) -> np.ndarray:
  """float64 [B, n, n] Euclidean distances between the cities of each instance."""
  c = np.asarray(coords, dtype=np.float64)
  return np.sqrt(((c[:, :, None, :] - c[:, None, :, :]) ** 2).sum(-1))


def lengths(coords: np.ndarray, tours: np.ndarray) -> np.ndarray:
  """float64 [B]: lengths of the closed tours int [B, n] through coords [B, n, 2]."""
  c = np.asarray(coords, dtype=np.float64)
  at = np.take_along_axis(c, np.asarray(tours, np.int64)[..., None], axis=1)
  steps = np.roll(at, -1, axis=1) - at
  return np.sqrt((steps**2).sum(-1)).sum(-1)


def canonical(tours: np.ndarray) -> np.ndarray:
  """The same cycles written from city 0, in the direction where tour[1] < tour[-1]."""
  t = np.asarray(tours, np.int32)
  n = t.shape[1]
  start = np.argmax(t == 0, axis=1)
  t = np.take_along_axis(t, (start[:, None] + np.arange(n)) % n, axis=1)
  if n > 2:
    backwards = np.concatenate([t[:, :1], t[:, :0:-1]], axis=1)
    t = np.where((t[:, 1] > t[:, -1])[:, None], backwards, t)
  return t


def nearest_neighbour(coords: np.ndarray) -> np.ndarray:
  """From city 0, always on to the nearest unvisited city."""
  dist = distances(coords)
  batch, n = dist.shape[:2]
  rows = np.arange(batch)
  visited = np.zeros((batch, n), dtype=bool)
  tours = np.zeros((batch, n), dtype=np.int32)
  visited[:, 0] = True
  for step in range(1, n):
    here = dist[rows, tours[:, step - 1]]
    tours[:, step] = np.argmin(np.where(visited, np.inf, here), axis=1)
    visited[rows, tours[:, step]] = True
  return tours


def _insert(tours: np.ndarray, size: int, city: np.ndarray, dist: np.ndarray) -> None:
  """Inserts city [B] into the partial tours [B, :size] in place, where it adds least."""
  rows = np.arange(len(tours))
  here = tours[:, :size]
  after = np.roll(here, -1, axis=1)
  added = (dist[rows[:, None], here, city[:, None]] + dist[rows[:, None], city[:, None], after]
           - dist[rows[:, None], here, after])
  pos = np.argmin(added, axis=1) + 1  # the city goes between here[pos-1] and here[pos]
  j = np.arange(size + 1)
  shifted = np.take_along_axis(tours, np.maximum(j - (j >= pos[:, None]), 0), axis=1)
  tours[:, :size + 1] = np.where(j == pos[:, None], city[:, None], shifted)


def _insertion(coords: np.ndarray, farthest: bool) -> np.ndarray:
  dist = distances(coords)
  batch, n = dist.shape[:2]
  rows = np.arange(batch)
  tours = np.zeros((batch, n), dtype=np.int32)
  in_tour = np.zeros((batch, n), dtype=bool)
  tours[:, 0] = np.argmax(dist.sum(-1), axis=1) if farthest else 0
  in_tour[rows, tours[:, 0]] = True
  for size in range(1, n):
    if farthest:
      to_tour = np.where(in_tour[:, None, :], dist, np.inf).min(-1)  # [B, n]
      city = np.argmax(np.where(in_tour, -np.inf, to_tour), axis=1)
    else:
      city = np.full(batch, size)
    _insert(tours, size, city, dist)
    in_tour[rows, city] = True
  return tours


def farthest_insertion(coords: np.ndarray) -> np.ndarray:
  """Insert the city farthest from the tour, where it adds least (module docstring)."""
  return _insertion(coords, farthest=True)


def random_insertion(coords: np.ndarray) -> np.ndarray:
  """Insert the cities in their (random) instance order, each where it adds least."""
  return _insertion(coords, farthest=False)


HEURISTICS = {"nearest_neighbour": nearest_neighbour, "farthest_insertion": farthest_insertion,
              "random_insertion": random_insertion}


@functools.lru_cache(maxsize=None)
def _layers(m: int) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
  """Held-Karp steps over m cities: per subset size s = 2..m, every (S, j) with j in S.

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


def held_karp(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Exact shortest tours by Held-Karp dynamic programming, O(B 2^n n^2).

  Args:
    coords: [B, n, 2], 2 <= n <= 16.

  Returns:
    tours int32 [B, n] in `canonical` form and their lengths float64 [B].
  """
  dist = distances(coords)
  batch, n = dist.shape[:2]
  if not 2 <= n <= 16:
    raise ValueError(f"held_karp needs 2 <= n <= 16 cities (it is exponential), got {n}")
  m = n - 1  # cities 1 .. n-1 are bits 0 .. m-1
  # The batch is the last axis, so each step gathers whole rows of B values.
  d = dist.transpose(1, 2, 0)  # [n, n, B]
  into = d[1:, 1:].transpose(1, 0, 2)  # [j, k, B] = d(city k+1, city j+1)
  bits = np.int64(1) << np.arange(m, dtype=np.int64)
  # cost[S, j, b]: shortest path from city 0 through the set S, ending at city j+1 in S;
  # inf where j is not in S.
  cost = np.full((1 << m, m, batch), np.inf)
  cost[bits, np.arange(m)] = d[0, 1:]
  for masks, js, prevs in _layers(m):
    cost[masks, js] = (cost[prevs] + into[js]).min(axis=1)
  # Walk back from the best last city, re-deriving each predecessor from the table.
  rows = np.arange(batch)
  mask = np.full(batch, (1 << m) - 1, dtype=np.int64)
  last = np.argmin(cost[-1] + d[1:, 0], axis=0)
  tours = np.zeros((batch, n), dtype=np.int32)
  for pos in range(n - 1, 0, -1):
    tours[:, pos] = last + 1
    mask = mask ^ bits[last]
    if pos > 1:
      last = np.argmin(cost[mask, :, rows] + into[last, :, rows], axis=1)
  tours = canonical(tours)
  return tours, lengths(coords, tours)
