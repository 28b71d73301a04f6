"""TSP testbed: sampled instances, the filter, checks, vocabulary, examples and marks."""

import numpy as np
import pytest

from lookahead_jax.data import tsp, tsp_tours


def test_sampled_cities_are_distinct_grid_points():
  coords = tsp.sample_coords(np.random.default_rng(0), 500, 7, 4)  # 16 cells: many repeats
  assert coords.shape == (500, 7, 2) and coords.dtype == np.int32
  assert coords.min() >= 0 and coords.max() < 4
  cells = coords[..., 1] * 4 + coords[..., 0]
  assert all(len(set(row)) == 7 for row in cells.tolist())
  with pytest.raises(ValueError, match="num_cities=17"):
    tsp.sample_coords(np.random.default_rng(0), 1, 17, 4)


def test_generated_instances_keep_only_greedy_suboptimal_and_exclude():
  seen = set()
  first = tsp.generate_instances(np.random.default_rng(0), 6, 6, 40, seen)
  assert len(first) == 40 and len(seen) == 40 and first.sampled > 40
  second = tsp.generate_instances(np.random.default_rng(0), 6, 6, 40, seen)
  assert not set(tsp.city_sets(first.coords)) & set(tsp.city_sets(second.coords))
  for x in (first, second):
    nearest = tsp_tours.lengths(x.coords, tsp_tours.nearest_neighbour(x.coords))
    best = tsp_tours.lengths(x.coords, x.tours)
    np.testing.assert_allclose(best, tsp_tours.held_karp(x.coords)[1], rtol=1e-12)
    assert (nearest > best * (1 + 1e-9)).all()
    assert (x.tours[:, 0] == 0).all() and (x.tours[:, 1] < x.tours[:, -1]).all()
  updates = []
  again = tsp.generate_instances(np.random.default_rng(0), 6, 6, 40, progress=updates.append)
  np.testing.assert_array_equal(again.coords, first.coords)
  assert again.sampled == first.sampled
  assert sum(updates) == 40 and min(updates) >= 0  # a progress bar's updates: every one kept


def test_kept_share_counts_the_candidates_drawn():
  # On a 3x3 grid (126 city sets of 4) find by hand the first 5 candidates kept: the
  # filter's and the duplicates' losses are counted in `sampled`.
  kept = tsp.generate_instances(np.random.default_rng(5), 4, 3, 5)
  per_batch = min(tsp._MAX_BATCH, tsp._BATCH_CELLS >> 3)
  candidates = tsp.sample_coords(np.random.default_rng(5), per_batch, 4, 3)
  best = tsp_tours.held_karp(candidates)[1]
  nearest = tsp_tours.lengths(candidates, tsp_tours.nearest_neighbour(candidates))
  keys, order = set(), []
  for i in np.flatnonzero(nearest > best * (1 + 1e-9)):
    key = tsp.city_sets(candidates[i:i + 1])[0]
    if key not in keys and len(order) < 5:
      keys.add(key)
      order.append(i)
  np.testing.assert_array_equal(kept.coords, candidates[order])
  assert kept.sampled == order[-1] + 1 > 5


def test_generate_instances_gives_up_with_a_clear_message():
  with pytest.raises(RuntimeError, match="where nearest neighbour is not optimal"):
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
  assert (tok.vocab_size, tok.pad_id, tok.eod_id, tok.sep_id) == (30, 0, 1, 2)
  assert tok.coord_ids([[0, 0], [9, 9]]).tolist() == [[3, 13], [12, 22]]
  assert tok.city_id(0) == 23 and tok.city_id(6) == 29
  text = "3,4 0,0 9,2 : 0 2 1"
  ids = tok.encode(text)
  assert ids == [6, 17, 23, 3, 13, 24, 12, 15, 25, 2, 23, 25, 24]
  assert tok.decode(ids) == text
  assert tok.decode([tok.eod_id] + ids + [tok.pad_id]) == text
  assert tok.decode([3, 13, 25]) == "0,0 <25>"  # a prompt index out of order is shown
  ids, offsets = tok.encode_with_offsets(text)
  assert [text[s:e] for s, e in offsets[:4]] == ["3,4"] * 3 + ["0,0"]
  assert tok.decode_tour([23, 25, 24]) == [0, 2, 1]
  assert tok.decode_tour([23, 2, 24]) is None
  with pytest.raises(ValueError, match="outside"):
    tok.encode("10,0 :")
  with pytest.raises(ValueError, match="not a TSP text"):
    tok.encode("1;2")


def test_examples_tokens_and_marks_hand_checked():
  coords = np.array([[[0, 0], [1, 0], [4, 0], [0, 1], [2, 3]]], np.int32)
  tours, _ = tsp_tours.held_karp(coords)
  tok = tsp.TspTokenizer(grid_size=5, max_cities=5)
  ids, marks = tok.examples(coords, tours)
  assert tok.decode(ids[0]) == "0,0 1,0 4,0 0,1 2,3 : " + " ".join(map(str, tours[0]))
  # x0 y0 0 ... x4 y4 4 : c0 c1 c2 c3 c4 -> marked: c1, c2, c3 (more than one city left).
  assert ids[0, :6].tolist() == [3, 8, 13, 4, 8, 14] and ids[0, 15] == tok.sep_id
  assert marks[0].tolist() == [False] * 17 + [True, True, True, False]
  assert tok.encode_instance(coords[0]) == ids[0, :16].tolist()


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


# ----------------------------------------------------------------------------- task return


def _tour_return(reward, row, start, anchor, path):
  """The task's return of `path` after `anchor` in `row`, whose own document begins at
  `start` (what comes before it masked as paths_from_pass masks other documents)."""
  import jax
  import jax.numpy as jnp

  prefix = np.where(np.arange(len(row)) >= start, row, -1).astype(np.int32)
  path = np.asarray(list(path) + [-1] * (12 - len(path)), np.int32)
  return float(jax.jit(reward)(jnp.asarray(prefix), jnp.asarray(anchor), jnp.asarray(path)))


def test_the_task_return_is_the_optimum_over_the_tours_length_and_zero_for_no_tour():
  tok = tsp.TspTokenizer(grid_size=16, max_cities=7)
  reward = tsp.task_return(levels=(5, 7), grid_size=16)
  assert reward == tsp.TourReturn(grid_size=16, max_cities=7)
  rng = np.random.default_rng(0)
  for n in (5, 7):  # a level below max_cities: the absent cities lengthen no tour
    coords = tsp.sample_coords(rng, 3, n, 16)
    best = tsp_tours.held_karp(coords)[1]
    other = tok.examples(tsp.sample_coords(rng, 1, 5, 16), None)[0][0]
    for c, length in zip(coords, best):
      prompt = tok.examples(c[None], None)[0][0]
      row = np.concatenate([[1], other, [1], prompt, [1] * 13])
      start, sep = len(other) + 2, len(other) + 1 + len(prompt)
      for tour in (rng.permutation(n), np.arange(n)):
        expected = length / tsp.tour_length(c, tour)
        got = _tour_return(reward, row, start, sep, tok.encode_tour(tour) + [1, 9, 9])
        np.testing.assert_allclose(got, min(expected, 1.0), rtol=1e-5)
      tour = list(rng.permutation(n))
      # The tour so far is read from the row up to the anchor, never past it.
      given = np.concatenate([row[:sep + 1], tok.encode_tour(tour[:2]), [9] * 20])[:len(row)]
      rest = tok.encode_tour(tour[2:]) + [1]
      whole = _tour_return(reward, row, start, sep, tok.encode_tour(tour) + [1])
      assert _tour_return(reward, given, start, sep + 2, rest) == whole > 0
      wrong = [tok.encode_tour(tour[:-1]) + [1],  # a city short, ended
               tok.encode_tour(tour[:1] + tour[:-1]) + [1],  # a city twice
               tok.encode_tour(tour)]  # never ends
      if n < tok.max_cities:  # a city the prompt does not have
        wrong.append(tok.encode_tour(tour[:-1] + [n]) + [1])
      for ids in wrong:
        assert _tour_return(reward, row, start, sep, ids) == 0.0, ids
      assert _tour_return(reward, row, start, sep - 1, tok.encode_tour(tour) + [1]) == 0.0


def test_the_task_return_refuses_prompts_too_large_to_solve_exactly():
  with pytest.raises(ValueError, match="levels"):
    tsp.task_return(levels=(11,))
