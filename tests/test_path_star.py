"""Path-star testbed: star graphs, vocabulary and marks, accuracy helpers, the builder,
the task's return."""

import collections

import numpy as np
import pytest

from lookahead_jax.data import builders, path_star

TINY = {"degree": 3, "min_arm": 2, "max_arm": 3, "num_nodes": 12, "edge_tokens": False,
        "train_size": 20, "validation_size": 5, "test_size": 5}


def _check_star(x, degree):
  edges = [tuple(e) for e in x.edges]
  nodes = [v for e in edges for v in e]
  count = collections.Counter(nodes)
  assert count[x.source] == degree and sum(u == x.source for u, _ in edges) == degree
  assert all(c <= 2 for v, c in count.items() if v != x.source)
  assert len(set(edges)) == len(edges)
  outgoing = collections.Counter(u for u, _ in edges)
  assert all(c == 1 for v, c in outgoing.items() if v != x.source)  # no branching off arms
  assert x.goal != x.source
  assert x.path[0] == x.source and x.path[-1] == x.goal
  assert all((u, v) in edges for u, v in zip(x.path[:-1], x.path[1:]))
  assert path_star.is_valid_path(x.path, x)
  arms = path_star.arms(x)
  assert sorted(v for arm in arms for v in arm) == sorted(set(nodes) - {x.source})
  arm = next(a for a in arms if a[0] == x.path[1])
  assert x.path[1:] == arm[:x.depth]  # the path is a prefix of its arm
  return arms


@pytest.mark.parametrize("min_arm,max_arm,min_goal_depth",
                         [(4, 4, 4), (2, 5, 2), (1, 3, 1), (1, 3, 2)])
def test_sample_is_a_star_with_arms_and_goal_depths_in_range(min_arm, max_arm, min_goal_depth):
  rng = np.random.default_rng(0)
  star = path_star.Star(degree=3, num_nodes=1 + 3 * max_arm, min_arm=min_arm, max_arm=max_arm,
                        min_goal_depth=min_goal_depth)
  lengths, depths, leaf = set(), set(), set()
  for _ in range(300):
    x = star.sample(rng)
    arms = _check_star(x, 3)
    labels = [x.source] + [v for arm in arms for v in arm]
    assert len(set(labels)) == len(labels) and all(0 <= v < star.num_nodes for v in labels)
    assert len({len(a) for a in arms}) == 1  # the arms of one graph: one length
    lengths |= {len(a) for a in arms}
    arm = next(a for a in arms if a[0] == x.path[1])
    assert min(min_goal_depth, len(arm)) <= x.depth <= len(arm)
    if len(arm) < min_goal_depth:
      assert x.goal == arm[-1]  # an arm too short for min_goal_depth: its leaf
    depths.add(x.depth)
    leaf.add(x.goal == arm[-1])
  assert lengths == set(range(min_arm, max_arm + 1))  # the length varies between graphs
  assert depths == set(range(min(min_goal_depth, min_arm), max_arm + 1))
  assert leaf == ({True} if min_goal_depth == max_arm else {True, False})


def test_edges_are_shuffled_and_sampling_is_reproducible():
  star = path_star.Star(degree=4, num_nodes=50, min_arm=4, max_arm=4)
  a = star.sample(np.random.default_rng(7))
  assert a == star.sample(np.random.default_rng(7))
  firsts = {star.sample(np.random.default_rng(s)).edges[0][0]
            == star.sample(np.random.default_rng(s)).source for s in range(20)}
  assert firsts == {True, False}  # the source's edges are not always listed first


@pytest.mark.parametrize("options,message", [
    ({"num_nodes": 12, "degree": 3, "max_arm": 4}, r"num_nodes=12 is too small.*need >= 13"),
    ({"min_goal_depth": 6, "max_arm": 5}, r"min_goal_depth=6 must be in 1 \.\. max_arm=5"),
    ({"min_arm": 4, "max_arm": 3}, r"min_arm=4, max_arm=3: need 1 <= min_arm <= max_arm"),
    ({"degree": 0}, r"degree=0 must be >= 1")])
def test_impossible_options_are_one_line(options, message):
  with pytest.raises(ValueError, match=message) as e:
    path_star.Star(**options).sample(np.random.default_rng(0))
  assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match=message):
    builders.prepare("path_star", "/nonexistent", **options)
  path_star.Star(degree=3, num_nodes=13, max_arm=4).sample(np.random.default_rng(0))  # enough


def test_tokenizer_layout_and_round_trip():
  tok = path_star.PathStarTokenizer(num_nodes=10, edge_tokens=False)
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


def test_decode_path():
  tok = path_star.PathStarTokenizer(num_nodes=10)
  star = path_star.Star(degree=3, num_nodes=10, min_arm=2, max_arm=3)
  assert tok.decode_path(tok.encode_path([4, 9, 0])) == [4, 9, 0]
  assert tok.decode_path([tok.PATH] + tok.encode_path([4, 9]) + [1, 0, 0]) == [4, 9]
  assert tok.decode_path([10, 15, 6]) is None  # no end of path
  assert tok.decode_path([10, 2, 6, 5]) is None  # a separator inside
  assert tok.decode_path([5, 10]) is None  # no node
  for seed in range(20):
    x = star.sample(np.random.default_rng(seed))
    ids, marks = tok.example(x)
    start = len(tok.encode_instance(x.edges, x.source, x.goal))
    assert tok.decode_path(ids[start:]) == x.path
    assert np.flatnonzero(marks).tolist() == [start + 1]
    assert ids[start + 1] == tok.node_id(x.path[1])


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
      assert set(r) == {"tokens", "needs_lookahead", "edges", "path", "source", "goal",
                        "depth"}
      x = path_star.PathStarInstance([tuple(e) for e in r["edges"].tolist()], int(r["source"]),
                                     int(r["goal"]), r["path"].tolist())
      _check_star(x, 3)
      assert r["depth"] == x.depth == len(x.path) - 1
      ids, marks = tok.example(x)
      np.testing.assert_array_equal(r["tokens"], ids)
      np.testing.assert_array_equal(r["needs_lookahead"], marks)
      start = len(tok.encode_instance(x.edges, x.source, x.goal))
      assert tok.decode_path(r["tokens"][start:]) == x.path
      assert r["tokens"][r["needs_lookahead"]].tolist() == (
          [tok.node_id(x.path[1])] if x.depth >= 2 else [])
      keys[split].add(path_star.graph_key(x))
  assert sum(map(len, keys.values())) == 30  # distinct, and no graph in two splits
  assert path_star.PathStar.make_config().name == "default"
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


EDGES = {"degree": 2, "min_arm": 1, "max_arm": 4, "min_goal_depth": 1, "num_nodes": 12,
         "edge_tokens": True, "train_size": 20, "validation_size": 5, "test_size": 40}


def test_edge_token_examples_walk_the_edge_list_from_source_to_goal():
  tok = path_star.PathStarTokenizer(num_nodes=12, edge_tokens=True)
  assert tok.vocab_size == 6 + 12 + 144 and tok.edge_id(3, 7) == 18 + 3 * 12 + 7
  star = path_star.Star(degree=2, num_nodes=12, min_arm=1, max_arm=4, min_goal_depth=1)
  depths = set()
  for seed in range(200):
    x = star.sample(np.random.default_rng(seed))
    ids, marks = tok.example(x)
    start = tok.prompt_length(ids)
    listed = [tok.edge_of(t) for t in ids[:start - 4]]
    assert sorted(listed) == sorted(x.edges)  # one token per edge, nothing else
    assert ids[start - 4:start].tolist() == [tok.QUERY, tok.node_id(x.source),
                                             tok.node_id(x.goal), tok.PATH]
    walked = [tok.edge_of(t) for t in ids[start:-1]]
    assert ids[-1] == tok.END_PATH and len(walked) == x.depth
    assert all(e in listed for e in walked)
    assert walked[0][0] == x.source and walked[-1][1] == x.goal
    assert all(a[1] == b[0] for a, b in zip(walked[:-1], walked[1:]))  # consecutive
    assert tok.decode_path(ids[start:]) == x.path
    # The mark: on the first edge exactly when the goal is at depth >= 2.
    assert np.flatnonzero(marks).tolist() == ([start] if x.depth >= 2 else [])
    depths.add(x.depth)
    text = tok.decode(ids)
    assert tok.encode(text) == ids.tolist() and ">" in text
  assert depths == {1, 2, 3, 4}
  assert tok.decode_path(tok.encode("3>7 5>1 .")) is None  # edges that do not follow on
  assert tok.decode_path(tok.encode("3>7 7>1 . 4>2")) == [3, 7, 1]


def test_goal_depths_of_packed_rows_are_the_records_depths(tmp_path):
  from lookahead_jax.data import pipeline  # imports jax and grain

  tok = builders.default_tokenizer("path_star", **EDGES)
  records = builders.data_source("path_star", "test", tmp_path, **EDGES)
  want = sorted(int(records[i]["depth"]) for i in range(len(records))
                if records[i]["depth"] >= 2)
  found = []
  for b in pipeline.make_ordered_iterator("path_star", "test", seq_len=48, global_batch_size=4,
                                          data_dir=tmp_path, options=EDGES, process_index=0,
                                          process_count=1):
    groups = pipeline.mark_groups("path_star", tok, b["targets"], b["needs_lookahead"])
    assert ((groups > 0) == b["needs_lookahead"]).all()
    found += groups[groups > 0].tolist()
  assert sorted(found) == want and 2 in found and 4 in found
  marks = np.array([[False, True, False]])
  assert pipeline.mark_groups("rhyme", tok, np.zeros((1, 3), np.int32), marks).tolist() == [
      [0, 1, 0]]


def test_longest_document_bounds_every_example():
  for options in (EDGES, TINY, dict(EDGES, degree=3, max_arm=3)):
    tok = builders.default_tokenizer("path_star", **options)
    star = path_star.graph_of(path_star.PathStar.make_config(**options))
    longest = max(len(tok.example(star.sample(np.random.default_rng(s)))[0]) for s in range(300))
    assert longest == builders.longest_document("path_star", **options)
  assert builders.longest_document("rhyme") is None


def test_no_search_rules_score_each_arm_and_count_ties_as_one_over_k():
  # Arms in listing order: [1, 2] (its first edge at 1) and [3, 4] (at 3); goal 2.
  x = path_star.PathStarInstance([(3, 4), (0, 1), (1, 2), (0, 3)], 0, 2, [0, 1, 2])
  credit = {k: v.tolist() for k, v in path_star.no_search_credit([x]).items()}
  assert set(credit) == set(path_star.NO_SEARCH_RULES)
  assert credit == {
      "longer arm": [0.5], "shorter arm": [0.5], "first-listed arm": [1.0],
      "last-listed arm": [0.0], "arm of the first edge listed": [0.0],
      "arm of the last edge listed": [0.0], "arm listed earliest on average": [0.5],
      "leaf listed first": [0.0], "largest label": [0.0], "smallest label": [1.0],
      "largest first node": [0.0], "first node nearest the source's label": [1.0],
      "largest label sum": [0.0]}
  # Unequal arms (as the sampler drew them before): arms [3], [1, 2], [5]; goal 3.
  y = path_star.PathStarInstance([(0, 3), (0, 1), (1, 2), (0, 5)], 0, 3, [0, 3])
  credit = path_star.no_search_credit([x, y])
  assert credit["longer arm"].tolist() == [0.5, 0.0]
  assert credit["shorter arm"].tolist() == [0.5, 0.5]  # [3] and [5] tie: 1/2
  accuracy = path_star.no_search_accuracy([x, y])
  assert accuracy["first-listed arm"] == {1: 1.0, 2: 1.0}
  assert accuracy["largest label"] == {1: 0.0, 2: 0.0}
  assert path_star.best_no_search(accuracy)[2] == ("first-listed arm", 1.0)  # first of a tie


def _old_sample(star, rng):
  """A graph as Star.sample drew it before: each arm's length on its own, then the goal
  arm, then the goal's depth inside it (the arm-length shortcut)."""
  lengths = rng.integers(star.min_arm, star.max_arm + 1, size=star.degree)
  labels = rng.choice(star.num_nodes, size=1 + int(lengths.sum()), replace=False).tolist()
  source, arms, start = labels[0], [], 1
  for n in lengths.tolist():
    arms.append(labels[start:start + n])
    start += n
  edges = [(u, v) for arm in arms for u, v in zip([source] + arm[:-1], arm)]
  edges = [edges[i] for i in rng.permutation(len(edges))]
  chosen = arms[int(rng.integers(star.degree))]
  chosen = chosen[:int(rng.integers(min(star.min_goal_depth, len(chosen)), len(chosen) + 1))]
  return path_star.PathStarInstance(edges, source, chosen[-1], [source] + chosen)


def _off_chance(star, sample, count=20_000, seed=0):
  """{(rule, depth): (accuracy, standard error, graphs)} of the no-search rules whose
  accuracy is more than 3 standard errors away from 1/degree."""
  rng = np.random.default_rng(seed)
  graphs = [sample(star, rng) for _ in range(count)]
  credit = path_star.no_search_credit(graphs)
  depth = np.asarray([x.depth for x in graphs])
  off = {}
  for name, c in credit.items():
    for d in sorted(set(depth.tolist())):
      at = c[depth == d]
      se = at.std(ddof=1) / np.sqrt(len(at))
      if abs(at.mean() - 1 / star.degree) > 3 * se + 1e-12:
        off[name, d] = (at.mean(), se, len(at))
  return off


@pytest.mark.parametrize("options", [
    {}, {"min_arm": 1, "max_arm": 3, "min_goal_depth": 1, "degree": 2, "num_nodes": 20}])
def test_with_equal_arms_no_search_rule_beats_chance_at_any_depth(options):
  star = path_star.Star(**options)
  assert _off_chance(star, lambda star, rng: star.sample(rng)) == {}
  # The same check finds the shortcut of arm lengths drawn per arm.
  off = _off_chance(star, _old_sample, count=5_000)
  assert {"longer arm", "shorter arm"} <= {name for name, _ in off}


# ----------------------------------------------------------------------------- task return

# Arms 0>1>2 and 0>3>4, goal 2, in a packed row: another graph's document before it (whose
# edges 0>5 and 5>2 would make a second way to the goal) and the EOD after it.
_TASK_TOK = path_star.PathStarTokenizer(num_nodes=8, edge_tokens=True)
_E = _TASK_TOK.edge_id
_OTHER = _TASK_TOK.example(path_star.PathStarInstance([(0, 5), (5, 2)], 0, 2, [0, 5, 2]))[0]
_DOC = _TASK_TOK.example(path_star.PathStarInstance([(0, 1), (1, 2), (0, 3), (3, 4)], 0, 2,
                                                    [0, 1, 2]))[0]
_ROW = np.concatenate([[1], _OTHER, [1], _DOC, [1]]).astype(np.int32)
_START = 2 + len(_OTHER)  # the document's first token
_MARKER = _START + list(_DOC).index(_TASK_TOK.PATH)  # the PATH marker: anchor of the first step


def _return(path, anchor=_MARKER, row=_ROW):
  """The task's return of `path` after `anchor`: the row's own document given whole (the
  teacher-forced tokens after the anchor included), the other masked as paths_from_pass
  masks other documents."""
  import jax
  import jax.numpy as jnp

  reward = path_star.task_return(num_nodes=8, max_arm=3, edge_tokens=True)
  slots = np.arange(len(row))
  prefix = np.where(slots >= _START, row, -1)
  path = np.asarray(list(path) + [-1] * (6 - len(path)), np.int32)
  return float(jax.jit(reward)(jnp.asarray(prefix), jnp.asarray(anchor), jnp.asarray(path)))


@pytest.mark.parametrize("path, expected", [
    ([_E(0, 1), _E(1, 2), 5], 1.0),  # the goal's arm, ended
    ([_E(0, 1), _E(1, 2), 5, 1, 9, 9], 1.0),  # what follows END_PATH is not read
    ([_E(0, 3), _E(3, 4), 5], 0.0),  # the other arm
    ([_E(0, 1), 5], 0.0),  # stops short of the goal
    ([_E(0, 1), _E(1, 2)], 0.0),  # never ends
    ([_E(0, 5), _E(5, 2), 5], 0.0),  # edges of another graph's prompt
    ([_E(0, 1), _E(3, 4), 5], 0.0),  # listed edges that do not chain
    ([_E(1, 2), 5], 0.0),  # does not start at the source
    ([5], 0.0),  # an empty answer
])
def test_the_task_return_is_one_for_a_chain_of_listed_edges_from_source_to_goal(path, expected):
  assert _return(path) == expected


def test_the_task_return_judges_the_answer_so_far_and_never_reads_past_the_anchor():
  first = _MARKER + 1  # the anchor of the second step: the answer so far is 0>1
  assert _return([_E(1, 2), 5], anchor=first) == 1.0
  assert _return([_E(3, 4), 5], anchor=first) == 0.0
  wrong = _ROW.copy()
  wrong[first] = _E(0, 3)  # the teacher-forced first step down the other arm
  assert _return([_E(1, 2), 5], anchor=first, row=wrong) == 0.0
  # nothing after the anchor is read: not the teacher-forced steps, not another query
  after = np.concatenate([_ROW[:first + 1], [_E(0, 3), 5, _TASK_TOK.QUERY, 6, 9, 4]])
  assert _return([_E(1, 2), 5], anchor=first, row=after) == 1.0
  assert _return([_E(0, 1), _E(1, 2), 5], row=after) == 1.0


def test_the_task_return_needs_edge_tokens():
  with pytest.raises(ValueError, match="edge_tokens=True"):
    path_star.task_return(num_nodes=8, max_arm=3, edge_tokens=False)
