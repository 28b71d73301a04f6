"""TSP tours: Held-Karp against brute force, each heuristic against a direct loop."""

import itertools

import numpy as np
import pytest

from lookahead_jax.data import tsp, tsp_tours


def _brute_force(coords):
  """Shortest closed tour length over all (n-1)! orders that start at city 0."""
  c = np.asarray(coords, np.float64)
  orders = np.array([(0,) + p for p in itertools.permutations(range(1, len(c)))])
  legs = c[np.roll(orders, -1, axis=1)] - c[orders]
  return np.hypot(legs[..., 0], legs[..., 1]).sum(axis=1).min()


def _dist(c):
  return [[float(np.hypot(*(np.subtract(a, b, dtype=float)))) for b in c] for a in c]


def _nearest_neighbour(c):
  d, tour = _dist(c), [0]
  while len(tour) < len(c):
    left = [j for j in range(len(c)) if j not in tour]
    tour.append(min(left, key=lambda j: (d[tour[-1]][j], j)))
  return tour


def _insertion(c, farthest):
  """Kool et al.'s run_insertion, one instance, lists only."""
  d, n = _dist(c), len(c)
  tour = [max(range(n), key=lambda i: (sum(d[i]), -i)) if farthest else 0]
  while len(tour) < n:
    left = [j for j in range(n) if j not in tour]
    if farthest:
      city = max(left, key=lambda j: (min(d[j][k] for k in tour), -j))
    else:
      city = len(tour)
    added = [d[tour[i]][city] + d[city][tour[(i + 1) % len(tour)]]
             - d[tour[i]][tour[(i + 1) % len(tour)]] for i in range(len(tour))]
    tour.insert(added.index(min(added)) + 1, city)
  return tour


DIRECT = {"nearest_neighbour": _nearest_neighbour,
          "farthest_insertion": lambda c: _insertion(c, True),
          "random_insertion": lambda c: _insertion(c, False)}


@pytest.mark.parametrize("name", sorted(tsp_tours.HEURISTICS))
def test_each_heuristic_equals_a_direct_implementation(name):
  rng = np.random.default_rng(1)
  for n, grid in ((3, 4), (6, 5), (9, 64)):  # a small grid: many tied distances
    coords = tsp.sample_coords(rng, 40, n, grid)
    got = tsp_tours.HEURISTICS[name](coords)
    want = np.array([DIRECT[name](c.tolist()) for c in coords])
    np.testing.assert_array_equal(got, want)


def test_heuristics_hand_checked():
  # From 0 the nearest cities are 1 and 3 (the lower index wins), then 3, then 2 at the
  # far end, and the way back from 2 is long: 10.54 against the optimum 9.12.
  coords = np.array([[[0, 0], [1, 0], [4, 0], [0, 1]]])
  assert tsp_tours.nearest_neighbour(coords).tolist() == [[0, 1, 3, 2]]
  # Random insertion: [0, 1]; 2 adds 6 on either edge (the first wins) -> [0, 2, 1]; 3
  # adds least (1.12) between 0 and 2 -> [0, 3, 2, 1], the optimal cycle.
  assert tsp_tours.random_insertion(coords).tolist() == [[0, 3, 2, 1]]
  # Farthest insertion starts at 2 (summed distance 11.1), then 3 (4.12 from 2), then 1
  # (1.41 from the tour, 0 only 1) -> [2, 1, 3], then 0 between 1 and 3 (adds 0.59).
  assert tsp_tours.farthest_insertion(coords).tolist() == [[2, 1, 0, 3]]
  best = tsp_tours.held_karp(coords)[1][0]
  assert tsp_tours.lengths(coords, [[0, 1, 3, 2]])[0] > best
  assert tsp_tours.lengths(coords, [[0, 3, 2, 1]])[0] == pytest.approx(best)


@pytest.mark.parametrize("n", range(2, 9))
def test_held_karp_equals_brute_force(n):
  coords = tsp.sample_coords(np.random.default_rng(n), 25, n, 5)
  tours, lengths = tsp_tours.held_karp(coords)
  for c, tour, length in zip(coords, tours, lengths):
    assert length == pytest.approx(_brute_force(c), rel=1e-12)
    assert tsp.is_valid_tour(tour, n)
    assert tsp.tour_length(c, tour) == pytest.approx(length, rel=1e-12)
    assert tour[0] == 0 and (n < 3 or tour[1] < tour[-1])  # canonical form


def test_hand_checked_optimum_and_canonical_form():
  # Four corners of a square, listed so that the order 0,1,2,3 crosses itself.
  coords = np.array([[[0, 0], [2, 2], [2, 0], [0, 2]]])
  tours, lengths = tsp_tours.held_karp(coords)
  assert tours.tolist() == [[0, 2, 1, 3]] and lengths[0] == pytest.approx(8.0)
  assert tsp_tours.lengths(coords, [[0, 1, 2, 3]])[0] == pytest.approx(4 + 4 * np.sqrt(2))
  assert tsp_tours.canonical(np.array([[2, 1, 0, 3], [1, 3, 0, 2]])).tolist() == [
      [0, 1, 2, 3], [0, 2, 1, 3]]
