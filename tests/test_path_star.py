"""Path-star testbed: star graphs, vocabulary and marks, accuracy helpers, the builder."""

import collections

import numpy as np
import pytest

from lookahead_jax.data import builders, path_star

TINY = {"degree": 3, "path_length": 4, "num_nodes": 12, "train_size": 20, "validation_size": 5,
        "test_size": 5}


def _arms(x):
  """The arms of a star graph: node lists from the source's neighbours out to the leaves."""
  succ = dict(x.edges)
  arms = []
  for u, v in x.edges:
    if u == x.source:
      arm = [v]
      while arm[-1] in succ:
        arm.append(succ[arm[-1]])
      arms.append(arm)
  return arms


def _check_star(x, degree):
  edges = [tuple(e) for e in x.edges]
  nodes = [v for e in edges for v in e]
  count = collections.Counter(nodes)
  assert count[x.source] == degree and sum(u == x.source for u, _ in edges) == degree
  assert all(c <= 2 for v, c in count.items() if v != x.source)
  assert len(set(edges)) == len(edges)
  outgoing = collections.Counter(u for u, _ in edges)
  assert all(c == 1 for v, c in outgoing.items() if v != x.source)  # no branching off arms
  assert x.goal != x.source and outgoing[x.goal] == 0 and count[x.goal] == 1  # a leaf
  assert x.path[0] == x.source and x.path[-1] == x.goal
  assert all((u, v) in edges for u, v in zip(x.path[:-1], x.path[1:]))
  assert path_star.is_valid_path(x.path, x)
  arms = _arms(x)
  assert sorted(v for arm in arms for v in arm) == sorted(set(nodes) - {x.source})
  assert x.path[1:] in arms
  return arms


@pytest.mark.parametrize("vary", [False, True])
def test_sample_graph_is_a_star_with_distinct_labels(vary):
  rng = np.random.default_rng(0)
  for degree, length in [(2, 5), (3, 4), (5, 3)]:
    num_nodes = 1 + degree * (length - 1)
    for _ in range(50):
      x = path_star.sample_graph(rng, degree, length, num_nodes, vary)
      arms = _check_star(x, degree)
      labels = [x.source] + [v for arm in arms for v in arm]
      assert len(set(labels)) == len(labels) and all(0 <= v < num_nodes for v in labels)
      lengths = [len(a) for a in arms]
      if vary:
        assert all(2 <= n <= length - 1 for n in lengths)
      else:
        assert lengths == [length - 1] * degree and len(x.path) == length


def test_vary_lengths_gives_several_arm_lengths_and_any_goal_arm():
  rng = np.random.default_rng(1)
  lengths, goal_lengths = set(), set()
  for _ in range(200):
    x = path_star.sample_graph(rng, 2, 6, 50, True)
    lengths |= {len(a) for a in _arms(x)}
    goal_lengths.add(len(x.path) - 1)
  assert lengths == goal_lengths == {2, 3, 4, 5}


def test_goal_anywhere_ends_paths_inside_arms_as_well_as_at_leaves():
  rng = np.random.default_rng(2)
  depths, leaf = set(), set()
  for _ in range(300):
    x = path_star.sample_graph(rng, 2, 5, 50, False, goal_anywhere=True)
    assert path_star.is_valid_path(x.path, x)
    arm = next(a for a in _arms(x) if a[0] == x.path[1])
    assert x.path[1:] == arm[:len(x.path) - 1]  # a prefix of its arm, never the first node
    depths.add(len(x.path) - 1)
    leaf.add(x.goal == arm[-1])
  assert depths == {2, 3, 4} and leaf == {True, False}


def test_edges_are_shuffled_and_sampling_is_reproducible():
  a = path_star.sample_graph(np.random.default_rng(7), 4, 5, 50, False)
  assert a == path_star.sample_graph(np.random.default_rng(7), 4, 5, 50, False)
  firsts = {path_star.sample_graph(np.random.default_rng(s), 4, 5, 50, False).edges[0][0]
            == path_star.sample_graph(np.random.default_rng(s), 4, 5, 50, False).source
            for s in range(20)}
  assert firsts == {True, False}  # the source's edges are not always listed first


def test_too_small_num_nodes_is_one_line():
  with pytest.raises(ValueError, match=r"num_nodes=12 is too small.*need >= 13") as e:
    path_star.sample_graph(np.random.default_rng(0), 3, 5, 12, True)
  assert "\n" not in str(e.value)
  path_star.sample_graph(np.random.default_rng(0), 3, 5, 13, True)  # exactly enough
  with pytest.raises(ValueError, match="num_nodes=10 is too small") as e:
    builders.prepare("path_star", "/nonexistent", degree=3, num_nodes=10)
  assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="path_length=2 must be >= 2 \\(>= 3 with vary"):
    path_star.sample_graph(np.random.default_rng(0), 2, 2, 50, True)


def test_tokenizer_layout_and_round_trip():
  tok = path_star.PathStarTokenizer(num_nodes=10)
  assert (tok.vocab_size, tok.pad_id, tok.eod_id) == (16, 0, 1)
  assert (tok.EDGE_SEP, tok.QUERY, tok.PATH, tok.END_PATH) == (2, 3, 4, 5)
  assert tok.node_id(0) == 6 and tok.node_id(9) == 15 and tok.node_of(15) == 9
  assert tok.node_of(5) is None and tok.node_of(16) is None
  x = path_star.PathStarInstance([(7, 2), (4, 9), (4, 7), (9, 0)], 4, 0, [4, 9, 0])
  prompt = tok.encode_instance(x.edges, x.source, x.goal)
  assert prompt == [13, 8, 2, 10, 15, 2, 10, 13, 2, 15, 6, 3, 10, 6, 4]
  assert tok.encode_path(x.path) == [10, 15, 6, 5]
  ids, marks = tok.example(x)
  text = "7 2 | 4 9 | 4 7 | 9 0 ? 4 0 : 4 9 0 ."
  assert tok.decode(ids) == text and tok.encode(text) == ids.tolist()
  assert tok.decode([tok.eod_id] + ids.tolist() + [tok.pad_id, 99]) == text + " <99>"
  ids2, offsets = tok.encode_with_offsets(text)
  assert [text[a:b] for a, b in offsets] == text.split()
  assert len(ids) == 3 * len(x.edges) + 4 + len(x.path)
  # the mark: exactly on n_1 = 9, the token after the path's source.
  assert marks.tolist() == [False] * 16 + [True] + [False] * 2
  assert ids[marks].tolist() == [tok.node_id(9)]
  with pytest.raises(ValueError, match="outside"):
    tok.encode("10 3 ?")
  with pytest.raises(ValueError, match="not a path-star text"):
    tok.encode("1 > 2")


def test_a_uniformly_guessed_arm_scores_one_over_the_degree():
  # The evaluation's first-node accuracy of a "model" that walks a uniformly drawn arm of
  # the source (it knows the edges, not the goal): 1/d within a binomial tolerance.
  rng = np.random.default_rng(4)
  for degree in (2, 3):
    graphs = [path_star.sample_graph(rng, degree, 5, 50, True) for _ in range(2000)]
    guessed = []
    for x in graphs:
      arm = _arms(x)[int(rng.integers(degree))]
      guessed.append([x.source] + arm)
    accuracy = path_star.first_node_accuracy(guessed, [x.path for x in graphs])
    chance = path_star.chance_first_node(degree)
    assert abs(accuracy - chance) < 4 * np.sqrt(chance * (1 - chance) / len(graphs))
    whole = path_star.path_accuracy(guessed, [x.path for x in graphs])
    assert whole == accuracy  # a right arm walked to its leaf is the whole path


def test_decode_path():
  tok = path_star.PathStarTokenizer(num_nodes=10)
  assert tok.decode_path(tok.encode_path([4, 9, 0])) == [4, 9, 0]
  assert tok.decode_path([tok.PATH] + tok.encode_path([4, 9]) + [1, 0, 0]) == [4, 9]
  assert tok.decode_path([10, 15, 6]) is None  # no end of path
  assert tok.decode_path([10, 2, 6, 5]) is None  # a separator inside
  assert tok.decode_path([5, 10]) is None  # no node
  for seed in range(20):
    x = path_star.sample_graph(np.random.default_rng(seed), 3, 4, 10, True)
    ids, marks = tok.example(x)
    start = len(tok.encode_instance(x.edges, x.source, x.goal))
    assert tok.decode_path(ids[start:]) == x.path
    assert np.flatnonzero(marks).tolist() == [start + 1]
    assert ids[start + 1] == tok.node_id(x.path[1])


def test_accuracy_helpers():
  true = [[4, 9, 0], [1, 2, 3, 5], [6, 7, 8], [0, 1, 2]]
  decoded = [[4, 9, 0], [1, 2, 4], None, [3, 1, 2]]
  assert path_star.first_node_accuracy(decoded, true) == 0.5  # the last starts elsewhere
  assert path_star.path_accuracy(decoded, true) == 0.25
  assert path_star.path_accuracy([np.array([4, 9, 0])], [(4, 9, 0)]) == 1.0
  assert np.isnan(path_star.path_accuracy([], []))
  assert path_star.chance_first_node(2) == 0.5 and path_star.chance_first_node(4) == 0.25
  with pytest.raises(ValueError, match="1 decoded paths for 2 true paths"):
    path_star.first_node_accuracy([[1]], true[:2])


def test_builder_records_decode_to_valid_instances(tmp_path):
  built = builders.prepare("path_star", tmp_path, **TINY)
  tok = builders.default_tokenizer("path_star", **TINY)
  assert built.info.metadata["vocab_size"] == tok.vocab_size == 6 + 12
  assert {k: v.num_examples for k, v in built.info.splits.items()} == {
      "train": 20, "validation": 5, "test": 5}
  keys = {}
  for split in ("train", "validation", "test"):
    records = builders.data_source("path_star", split, tmp_path, **TINY)
    keys[split] = set()
    for i in range(len(records)):
      r = records[i]
      assert set(r) == {"tokens", "needs_lookahead", "edges", "path", "source", "goal"}
      x = path_star.PathStarInstance([tuple(e) for e in r["edges"].tolist()], int(r["source"]),
                                     int(r["goal"]), r["path"].tolist())
      _check_star(x, 3)
      ids, marks = tok.example(x)
      np.testing.assert_array_equal(r["tokens"], ids)
      np.testing.assert_array_equal(r["needs_lookahead"], marks)
      start = len(tok.encode_instance(x.edges, x.source, x.goal))
      assert tok.decode_path(r["tokens"][start:]) == x.path
      assert r["tokens"][r["needs_lookahead"]].tolist() == [tok.node_id(x.path[1])]
      keys[split].add(path_star.graph_key(x))
  assert sum(map(len, keys.values())) == 30  # distinct, and no graph in two splits
  assert builders.PathStar.make_config().name == "default"
  assert builders.prepare("path_star", tmp_path, **TINY).data_dir == built.data_dir
  with pytest.raises(ValueError, match="path_star has its own token vocabulary"):
    builders.sentencepiece_for("path_star", 300, tmp_path, **TINY)


def test_pipeline_marks_the_first_node_target(tmp_path):
  from lookahead_jax.data import pipeline  # imports jax and grain

  tok = builders.default_tokenizer("path_star", **TINY)
  it = pipeline.make_ordered_iterator("path_star", "test", seq_len=64, global_batch_size=2,
                                   data_dir=tmp_path, options=TINY, process_index=0,
                                   process_count=1)
  found = 0
  for b in it:
    for row in range(len(b["inputs"])):
      for s in set(b["segment_ids"][row].tolist()) - {0}:
        at = b["segment_ids"][row] == s
        inputs, targets, marks = (b[k][row][at] for k in ("inputs", "targets", "needs_lookahead"))
        path = int(np.flatnonzero(inputs == tok.PATH)[0])  # inputs[path + 1]: the source
        assert np.flatnonzero(marks).tolist() == [path + 1]
        assert tok.node_of(inputs[path + 1]) is not None and targets[-1] == tok.eod_id
        assert targets[-2] == tok.END_PATH
        found += 1
  assert found == TINY["test_size"]
  with pytest.raises(ValueError, match="path_star is stored as tokens of its own vocabulary"):
    pipeline.make_iterator("path_star", "test", seq_len=64, global_batch_size=2,
                           data_dir=tmp_path, options=TINY, tokenizer="byte")


def test_answer_only_weights_the_path_and_not_the_prompt(tmp_path):
  from lookahead_jax.data import pipeline  # imports jax and grain

  tok = builders.default_tokenizer("path_star", **TINY)
  kwargs = dict(seq_len=64, global_batch_size=2, data_dir=tmp_path, options=TINY,
                process_index=0, process_count=1)
  everything = list(pipeline.make_ordered_iterator("path_star", "test", **kwargs))
  answers = list(pipeline.make_ordered_iterator("path_star", "test", answer_only=True, **kwargs))
  found = 0
  for b, a in zip(everything, answers, strict=True):
    np.testing.assert_array_equal(a["targets"], b["targets"])
    np.testing.assert_array_equal(b["weights"], b["segment_ids"] > 0)
    for row in range(len(b["inputs"])):
      for s in set(b["segment_ids"][row].tolist()) - {0}:
        at = b["segment_ids"][row] == s
        inputs, targets, weights = (x[row][at] for x in (a["inputs"], a["targets"], a["weights"]))
        path = int(np.flatnonzero(inputs == tok.PATH)[0])  # its target: the source
        assert weights.tolist() == [0.0] * path + [1.0] * (len(inputs) - path)
        assert tok.decode_path(targets[weights > 0]) is not None and targets[-1] == tok.eod_id
        found += 1
  assert found == TINY["test_size"]
  with pytest.raises(ValueError, match="answer_only needs a testbed with a prompt and an answer"):
    pipeline.document_fn("rhyme", tok, answer_only=True)
