"""TSP testbed: exact tours against brute force, greedy tours, checks, vocabulary, marks."""

import itertools

import numpy as np
import pytest

from lookahead_jax.data import tsp


def _brute_force(coords):
  """Shortest closed tour length over all (n-1)! orders that start at city 0."""
  c = np.asarray(coords, np.float64)
  orders = np.array([(0,) + p for p in itertools.permutations(range(1, len(c)))])
  legs = c[np.roll(orders, -1, axis=1)] - c[orders]
  return np.hypot(legs[..., 0], legs[..., 1]).sum(axis=1).min()


@pytest.mark.parametrize("n", range(2, 9))
def test_held_karp_equals_brute_force(n):
  rng = np.random.default_rng(n)
  coords = np.stack([tsp.sample_coords(rng, n, 5) for _ in range(25)])
  tours, lengths = tsp.held_karp_batch(coords)
  for c, tour, length in zip(coords, tours, lengths):
    assert length == pytest.approx(_brute_force(c), rel=1e-12)
    assert tsp.is_valid_tour(tour, n)
    assert tsp.tour_length(c, tour) == pytest.approx(length, rel=1e-12)
    assert tour[0] == 0 and (n < 3 or tour[1] < tour[-1])  # canonical form
  single_tour, single_length = tsp.held_karp(coords[0])
  np.testing.assert_array_equal(single_tour, tours[0])
  assert single_length == lengths[0]


def test_hand_checked_instance():
  # Four corners of a square, listed so that the order 0,1,2,3 crosses itself.
  coords = np.array([[0, 0], [2, 2], [2, 0], [0, 2]])
  tour, length = tsp.held_karp(coords)
  assert tour.tolist() == [0, 2, 1, 3] and length == pytest.approx(8.0)
  assert tsp.tour_length(coords, [0, 1, 2, 3]) == pytest.approx(4 + 4 * np.sqrt(2))


def test_greedy_tour_hand_checked_and_suboptimal():
  # From 0 the nearest cities are 1 and 3 (the lower index wins), then 3, then 2 at the
  # far end, and the way back from 2 is long: 10.54 against the optimum 9.12.
  coords = np.array([[0, 0], [1, 0], [4, 0], [0, 1]])
  assert tsp.greedy_tour(coords).tolist() == [0, 1, 3, 2]
  _, best = tsp.held_karp(coords)
  assert tsp.tour_length(coords, tsp.greedy_tour(coords)) > best
  batch = np.stack([coords, coords[[0, 3, 2, 1]]])
  np.testing.assert_array_equal(tsp.greedy_tours(batch)[0], tsp.greedy_tour(coords))
  np.testing.assert_array_equal(tsp.greedy_tours(batch)[1], tsp.greedy_tour(batch[1]))


def test_generated_instances_keep_only_greedy_suboptimal_and_exclude():
  rng = np.random.default_rng(0)
  first = tsp.generate_instances(rng, 6, 6, 40)
  keys = {tsp.city_set(x.coords) for x in first}
  assert len(keys) == 40
  second = tsp.generate_instances(np.random.default_rng(0), 6, 6, 40, exclude=keys)
  assert not keys & {tsp.city_set(x.coords) for x in second}
  for x in first + second:
    greedy = tsp.tour_length(x.coords, tsp.greedy_tour(x.coords))
    assert greedy == pytest.approx(x.greedy_length)
    assert x.optimal_length == pytest.approx(_brute_force(x.coords), rel=1e-12)
    assert greedy > x.optimal_length * (1 + 1e-9)
    assert tsp.optimality_gap(x.coords, tsp.greedy_tour(x.coords), x.tour) > 0
  again = tsp.generate_instances(np.random.default_rng(0), 6, 6, 40)
  assert [tsp.city_set(x.coords) for x in again] == [tsp.city_set(x.coords) for x in first]


def test_generate_instances_gives_up_with_a_clear_message():
  with pytest.raises(RuntimeError, match="where greedy is not optimal"):
    tsp.generate_instances(np.random.default_rng(0), 3, 2, 1)  # 3 cities: greedy is optimal


def test_validity_and_gap():
  coords = np.array([[0, 0], [2, 2], [2, 0], [0, 2]])
  assert tsp.is_valid_tour([2, 0, 3, 1], 4)
  for bad in ([0, 1, 2], [0, 1, 2, 2], [0, 1, 2, 4], [0, 1, 2, 3, 0]):
    assert not tsp.is_valid_tour(bad, 4)
  optimal = [0, 2, 1, 3]
  assert tsp.optimality_gap(coords, optimal, optimal) == 0.0
  assert tsp.optimality_gap(coords, [1, 2, 0, 3][::-1], optimal) == 0.0  # same cycle
  assert tsp.optimality_gap(coords, [0, 1, 2, 3]) == pytest.approx((4 + 4 * np.sqrt(2)) / 8 - 1)
  with pytest.raises(ValueError, match="not a valid tour"):
    tsp.optimality_gap(coords, [0, 1, 1, 3], optimal)


def test_tokenizer_layout_and_text_form():
  tok = tsp.TspTokenizer(grid_size=10, max_cities=7)
  assert (tok.vocab_size, tok.pad_id, tok.eod_id, tok.sep_id) == (20, 0, 1, 2)
  assert tok.coord_id(0) == 3 and tok.coord_id(9) == 12 and tok.city_id(0) == 13
  text = "3,4 0,0 9,2 : 0 2 1"
  ids = tok.encode(text)
  assert ids == [6, 7, 3, 3, 12, 5, 2, 13, 15, 14]
  assert tok.decode(ids) == text
  assert tok.decode([tok.eod_id] + ids + [tok.pad_id]) == text
  assert tok.decode_tour([13, 15, 14]) == [0, 2, 1]
  assert tok.decode_tour([13, 2, 14]) is None
  with pytest.raises(ValueError, match="outside"):
    tok.encode("10,0 :")
  with pytest.raises(ValueError, match="not a TSP text"):
    tok.encode("1;2")


def test_example_tokens_and_marks_hand_checked():
  coords = np.array([[0, 0], [1, 0], [4, 0], [0, 1], [2, 3]], np.int32)
  tour, best = tsp.held_karp(coords)
  instance = tsp.TspInstance(coords, tour, best, 0.0)
  tok = tsp.TspTokenizer(grid_size=5, max_cities=5)
  ids, marks = tok.example(instance)
  assert tok.decode(ids) == "0,0 1,0 4,0 0,1 2,3 : " + " ".join(map(str, tour))
  # x0 y0 ... x4 y4 : c0 c1 c2 c3 c4 -> marked: c1, c2, c3 (more than one city left).
  assert marks.tolist() == [False] * 11 + [False, True, True, True, False]


def test_tsp_continuations_are_judged_by_validity_and_optimality_gap():
  tok = tsp.TspTokenizer(grid_size=10, max_cities=4)
  coords = np.asarray([[0, 0], [0, 5], [5, 5], [5, 0]])
  record = {"num_cities": 4, "coords": coords, "tour": np.asarray([0, 1, 2, 3])}
  conts = [tok.encode_tour([0, 1, 2, 3]), tok.encode_tour([0, 2, 1, 3]),
           tok.encode_tour([0, 1, 1, 3]), tok.encode_tour([0, 1])]
  got = tsp.judge(tok, [record] * 4, conts)
  np.testing.assert_array_equal(got["valid"], [1, 1, 0, 0])
  np.testing.assert_allclose(got["gap"][:2], [0.0, tsp.optimality_gap(coords, [0, 2, 1, 3])])
  assert got["gap"][1] > 0 and np.isnan(got["gap"][2:]).all()
