"""Path-star testbed (Bachmann & Nagarajan 2024): star graphs, paths, vocabulary,
accuracy, the no-search rules, its builder and its record.

A graph (`Star`) has a source with `degree` arms (simple paths leaving the source), all
of the same length L, drawn per graph uniformly in `min_arm .. max_arm` (so L varies from
graph to graph, not from arm to arm); node labels are distinct random draws out of
`0 .. num_nodes-1`. The edges point away from the source and are listed in random order.
The goal arm is drawn uniformly, and the goal is its k-th node, k uniform in
`min_goal_depth .. L` (the goal's *depth*; when L < min_goal_depth the goal is the leaf).
The target is the path from the source to the goal, then an end-of-path token.

Why equal arms (as Bachmann & Nagarajan's graphs): the goal's depth must not tell its
arm. With each arm's length drawn on its own and the depth drawn inside the goal arm, a
deep goal sits on a long arm: with the old default options (arms of 2-5 nodes, depth from
2), P(goal on the longer arm | depth 2, 3, 4, 5) = 0.31, 0.58, 0.82, 1.00 over 40,000
graphs, so a model that compares arm lengths beats `1/degree` without any search back
from the goal. `no_search_accuracy` measures such rules (longer, shorter, first- or
last-listed arm, label rules, ...); with equal arms each is `1/degree` at every depth
(tests/test_path_star.py), and the evaluator (evals/path_star.py) reports the best of
them beside `1/degree`.

Two layouts (`PathStarTokenizer`):

  edge_tokens=False   `u v | u v | ... ? s g : s n_1 ... g .`: node labels, edges as pairs
                      with separators; the path written as its nodes.
  edge_tokens=True    `u>v u>v ... ? s g : s>n_1 n_1>n_2 ... .`: each edge u->v is ONE
                      token of its own, in the edge list and in the path, which is written
                      as the edges it follows; the query names source and goal by label.

What it rewards: every step after the first is one edge look-up from the step before (the
"Clever Hans" walk), which teacher forcing teaches from the edge list alone; the first
step needs a search back from the goal, and a model that has not learned it is right
`1/degree` of the time. Lookahead from the first step can tell the arms apart only by the
model's own continuation of each, so it helps when that continuation down a wrong arm is
improbable under the model ("verifier strength", evals/path_star.py): with edge tokens
the walk is a single attention read (copy the edge whose source is the last edge's
target), learned in a few hundred steps, and a wrong arm's walk reaches its leaf without
meeting the goal, where no training path goes. With the goal anywhere on its arm only "end
after the goal" predicts the end-of-path token (not "end at a leaf"), and with arm lengths
that vary between graphs the end cannot be placed by counting. The horizon the lookahead needs,
from the first step: the longest arm (max_arm) plus 2-3 tokens, past the wrong leaf.

Marks ("needs lookahead"): the first step of the path when the goal's depth is >= 2; at
depth 1 the query's goal is the first step's own target, so it needs no search. With
depth-1 goals mixed in (`min_goal_depth=1`), a model learns one-hop choices at once and
two-hop ones later: the window in which lookahead helps and then is learned.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from lookahead_jax.data import local
from lookahead_jax.data.tokenizers import FixedSpecialIds

NAME = "path_star"


class PathStarInstance(NamedTuple):
  """One graph: edges [(u, v)] shuffled, pointing away from the source; path [P] to goal."""

  edges: list[tuple[int, int]]
  source: int
  goal: int
  path: list[int]

  @property
  def depth(self) -> int:
    """The goal's depth: its place on its arm (1: the source's neighbour)."""
    return len(self.path) - 1


@dataclasses.dataclass(frozen=True)
class Star:
  """The graph options of the testbed (module docstring); `check` says what no graph meets."""

  degree: int = 2
  num_nodes: int = 20
  min_arm: int = 2
  max_arm: int = 5
  min_goal_depth: int = 2
  leaf_goals: bool = True

  def check(self) -> None:
    """Raises a one-line ValueError naming the option and the fix."""
    if self.degree < 1:
      raise ValueError(f"path_star degree={self.degree} must be >= 1")
    if not 1 <= self.min_arm <= self.max_arm:
      raise ValueError(f"path_star min_arm={self.min_arm}, max_arm={self.max_arm}: need "
                       "1 <= min_arm <= max_arm")
    if not 1 <= self.min_goal_depth <= self.max_arm:
      raise ValueError(f"path_star min_goal_depth={self.min_goal_depth} must be in 1 .. "
                       f"max_arm={self.max_arm} (no arm has a node that deep); lower it or "
                       "raise max_arm")
    if not self.leaf_goals and self.min_arm <= self.min_goal_depth:
      raise ValueError(f"path_star leaf_goals=False needs arms longer than min_goal_depth="
                       f"{self.min_goal_depth} (the goal sits before the leaf); set min_arm >= "
                       f"{self.min_goal_depth + 1}")
    need = 1 + self.degree * self.max_arm
    if self.num_nodes < need:
      raise ValueError(f"path_star num_nodes={self.num_nodes} is too small: degree="
                       f"{self.degree} arms of up to max_arm={self.max_arm} nodes and a source "
                       f"need >= {need}; raise num_nodes or lower degree or max_arm")

  @property
  def longest_path(self) -> int:
    """Nodes of the longest path, the source included."""
    return self.max_arm + 1

  def sample(self, rng: np.random.Generator) -> PathStarInstance:
    """A random star graph and the path to its goal; depends only on `rng` and the options.

    Every arm has the same length L, uniform in min_arm .. max_arm per graph; the goal arm
    is uniform and the goal's depth uniform in min(min_goal_depth, L) .. L (.. L - 1
    without leaf goals).
    """
    self.check()
    length = int(rng.integers(self.min_arm, self.max_arm + 1))
    labels = rng.choice(self.num_nodes, size=1 + self.degree * length, replace=False).tolist()
    source, rest = labels[0], labels[1:]
    arms = [rest[i * length:(i + 1) * length] for i in range(self.degree)]
    edges = [(u, v) for arm in arms for u, v in zip([source] + arm[:-1], arm)]
    edges = [edges[i] for i in rng.permutation(len(edges))]
    chosen = arms[int(rng.integers(self.degree))]
    low = min(self.min_goal_depth, length)
    chosen = chosen[:int(rng.integers(low, length + int(self.leaf_goals)))]
    return PathStarInstance(edges, source, chosen[-1], [source] + chosen)

  def generate(self, rng: np.random.Generator, count: int,
               exclude: Iterable[tuple[int, ...]] = ()) -> list[PathStarInstance]:
    """`count` instances whose `graph_key` is neither in `exclude` nor repeated."""
    seen = set(exclude)
    kept: list[PathStarInstance] = []
    sampled = 0
    while len(kept) < count:
      if sampled > 100 * count + 1000:
        raise RuntimeError(f"found only {len(kept)} of {count} distinct path_star graphs "
                           f"with {self}; raise num_nodes or lower the split sizes")
      x = self.sample(rng)
      sampled += 1
      key = graph_key(x)
      if key not in seen:
        seen.add(key)
        kept.append(x)
    return kept


def arms(instance: PathStarInstance) -> list[list[int]]:
  """The arms of a star graph, each a node list from the source's neighbour to its leaf,
  in the order their first edges are listed."""
  succ = {u: v for u, v in instance.edges if u != instance.source}
  out = []
  for u, v in instance.edges:
    if u == instance.source:
      arm = [v]
      while arm[-1] in succ:
        arm.append(succ[arm[-1]])
      out.append(arm)
  return out


def graph_key(instance: PathStarInstance) -> tuple[int, ...]:
  """Order-free key of an instance: its goal, then its sorted edges, flattened."""
  return (int(instance.goal),) + tuple(int(x) for e in sorted(map(tuple, instance.edges))
                                       for x in e)


def is_valid_path(path: Sequence[int] | None, instance: PathStarInstance) -> bool:
  """True when `path` goes from the source to the goal along the instance's edges."""
  if not path or path[0] != instance.source or path[-1] != instance.goal:
    return False
  edges = {tuple(e) for e in instance.edges}
  return all((u, v) in edges for u, v in zip(path[:-1], path[1:]))


def goal_depths(targets: np.ndarray, marks: np.ndarray, end_id: int) -> np.ndarray:
  """Goal depth int32 [b, T] of each marked target (a first step), 0 elsewhere.

  targets, marks: [b, T] of packed rows. The depth is the distance from the marked target
  to the next end-of-path token in its row: the path's steps in either layout.
  """
  out = np.zeros(targets.shape, np.int32)
  for r, t in zip(*np.nonzero(marks)):
    ends = np.flatnonzero(targets[r, t:] == end_id)
    out[r, t] = ends[0] if len(ends) else 0
  return out


def chance_first_node(degree: int) -> float:
  """First-step accuracy of a model that picks one of the d arms at random: 1/d."""
  return 1.0 / degree


# A first-step rule that uses no search: a score per arm, from the arm's nodes (source's
# neighbour first), the places of its edges in the edge list (its first edge's first) and
# the source; the rule picks the arm of the highest score. None of them reads the goal, so
# none follows an edge back from it. With equal arms each is right 1/degree of the time at
# every goal depth. With arm lengths drawn per arm (before 3.0.0) most were not: a longer
# arm also holds more edges and labels, so at the deepest goals "largest label sum" was
# right about 0.77 of the time and "arm of the last edge listed" 0.62 (default options).
NO_SEARCH_RULES: dict[str, Callable[[list[int], list[int], int], float]] = {
    "longer arm": lambda arm, at, source: len(arm),
    "shorter arm": lambda arm, at, source: -len(arm),
    "first-listed arm": lambda arm, at, source: -at[0],  # its first edge listed first
    "last-listed arm": lambda arm, at, source: at[0],  # its first edge nearest the query
    "arm of the first edge listed": lambda arm, at, source: -min(at),
    "arm of the last edge listed": lambda arm, at, source: max(at),  # the edge before the query
    "arm listed earliest on average": lambda arm, at, source: -sum(at) / len(at),
    "leaf listed first": lambda arm, at, source: -at[-1],
    "largest label": lambda arm, at, source: max(arm),
    "smallest label": lambda arm, at, source: -min(arm),
    "largest first node": lambda arm, at, source: arm[0],
    "first node nearest the source's label": lambda arm, at, source: -abs(arm[0] - source),
    "largest label sum": lambda arm, at, source: sum(arm),
}


def no_search_credit(instances: Sequence[PathStarInstance]) -> dict[str, np.ndarray]:
  """Per rule of NO_SEARCH_RULES, float64 [n]: the chance that the rule's first step is
  right on each instance. A tie among k arms that holds the goal's arm counts 1/k (the
  expected accuracy of breaking ties uniformly at random), so with equal arms the length
  rules score exactly 1/degree."""
  out = {name: np.empty(len(instances)) for name in NO_SEARCH_RULES}
  for i, x in enumerate(instances):
    at = {tuple(e): j for j, e in enumerate(x.edges)}
    star = [(arm, [at[e] for e in zip([x.source] + arm[:-1], arm)]) for arm in arms(x)]
    goal_arm = next(k for k, (arm, _) in enumerate(star) if arm[0] == x.path[1])
    for name, rule in NO_SEARCH_RULES.items():
      scores = [rule(arm, places, x.source) for arm, places in star]
      best = max(scores)
      ties = [k for k, v in enumerate(scores) if v == best]
      out[name][i] = (goal_arm in ties) / len(ties)
  return out


def no_search_accuracy(instances: Sequence[PathStarInstance],
                       credit: Mapping[str, np.ndarray] | None = None
                       ) -> dict[str, dict[int, float]]:
  """{rule: {goal depth: first-step accuracy}} of the no-search rules (`no_search_credit`,
  or its result `credit`) over the instances of each depth."""
  credit = no_search_credit(instances) if credit is None else credit
  depth = np.asarray([x.depth for x in instances])
  return {name: {int(d): float(c[depth == d].mean()) for d in sorted(set(depth.tolist()))}
          for name, c in credit.items()}


def best_no_search(accuracy: Mapping[str, Mapping[int, float]]) -> dict[int, tuple[str, float]]:
  """{goal depth: (rule, accuracy)} of the most accurate no-search rule at each depth
  (`no_search_accuracy`'s result); the first rule in NO_SEARCH_RULES order wins a tie."""
  depths = sorted({d for per in accuracy.values() for d in per})
  out = {}
  for d in depths:
    name = max((n for n in accuracy if d in accuracy[n]), key=lambda n: accuracy[n][d])
    out[d] = (name, accuracy[name][d])
  return out


class PathStarTokenizer(FixedSpecialIds):
  """Token vocabulary of the path-star testbed.

      0                  pad
      1                  end of document (EOD)
      2                  edge separator, between two edges ("|" in text form; node layout)
      3                  query marker, before "source goal" ("?")
      4                  path marker, before the path (":")
      5                  end of path, after the goal (".")
      6 .. 6+N-1         node labels 0 .. N-1
      6+N .. 6+N+N²-1    with edge_tokens: the edge u->v is 6 + N + u*N + v ("u>v")

  Text form, for `encode`/`decode`: "4 9 | 4 7 ? 4 7 : 4 7 ." (nodes), or
  "4>9 4>7 ? 4 7 : 4>7 ." (edge tokens).
  """

  EDGE_SEP, QUERY, PATH, END_PATH = 2, 3, 4, 5
  _FIRST_NODE = 6
  _SYMBOLS = {"|": EDGE_SEP, "?": QUERY, ":": PATH, ".": END_PATH}

  def __init__(self, num_nodes: int, edge_tokens: bool = False):
    if num_nodes < 2:
      raise ValueError(f"path_star num_nodes={num_nodes} must be >= 2")
    self.num_nodes, self.edge_tokens = num_nodes, edge_tokens
    self._first_edge = self._FIRST_NODE + num_nodes

  @property
  def vocab_size(self) -> int:
    return self._first_edge + (self.num_nodes ** 2 if self.edge_tokens else 0)

  def node_id(self, node: int) -> int:
    if not 0 <= node < self.num_nodes:
      raise ValueError(f"node {node} is outside 0..{self.num_nodes - 1}")
    return self._FIRST_NODE + int(node)

  def node_of(self, token: int) -> int | None:
    """Node label of a token id, or None when the token is not a node."""
    node = int(token) - self._FIRST_NODE
    return node if 0 <= node < self.num_nodes else None

  def edge_id(self, u: int, v: int) -> int:
    """The token of edge u->v (edge_tokens only)."""
    self.node_id(u), self.node_id(v)  # both in range, or a one-line error
    return self._first_edge + int(u) * self.num_nodes + int(v)

  def edge_of(self, token: int) -> tuple[int, int] | None:
    """(u, v) of an edge token, or None when the token is not one."""
    e = int(token) - self._first_edge
    if not self.edge_tokens or not 0 <= e < self.num_nodes ** 2:
      return None
    return divmod(e, self.num_nodes)

  def encode_instance(self, edges: Sequence[tuple[int, int]], source: int,
                      goal: int) -> list[int]:
    """The prompt: edges, query, source, goal and the path marker (no EOD)."""
    ids: list[int] = []
    for i, (u, v) in enumerate(edges):
      if self.edge_tokens:
        ids.append(self.edge_id(u, v))
      else:
        ids += ([self.EDGE_SEP] if i else []) + [self.node_id(u), self.node_id(v)]
    return ids + [self.QUERY, self.node_id(source), self.node_id(goal), self.PATH]

  def prompt_length(self, ids: Sequence[int]) -> int:
    """Tokens of an example's prompt: up to and including its path marker."""
    return list(map(int, ids)).index(self.PATH) + 1

  def encode_path(self, path: Sequence[int]) -> list[int]:
    """The path [source ... goal] as tokens, followed by the end-of-path token: its nodes,
    or with edge_tokens the edges it follows."""
    if self.edge_tokens:
      return [self.edge_id(u, v) for u, v in zip(path[:-1], path[1:])] + [self.END_PATH]
    return [self.node_id(v) for v in path] + [self.END_PATH]

  @property
  def first_step(self) -> int:
    """Offset in `encode_path(path)` of the token that makes the path's one choice: the
    first edge, or the node after the source."""
    return 0 if self.edge_tokens else 1

  def decode_path(self, ids: Sequence[int]) -> list[int] | None:
    """Node labels [source ... goal] up to the first end-of-path token (a leading path
    marker is skipped).

    None when malformed: no end-of-path token, no node (edge) before it, another token
    before it, or (edge tokens) edges that do not follow on from each other. Tokens after
    the end-of-path token are ignored.
    """
    ids = [int(t) for t in ids]
    if ids and ids[0] == self.PATH:
      ids = ids[1:]
    if self.END_PATH not in ids:
      return None
    body = ids[:ids.index(self.END_PATH)]
    if self.edge_tokens:
      edges = [self.edge_of(t) for t in body]
      if not edges or any(e is None for e in edges):
        return None
      if any(a[1] != b[0] for a, b in zip(edges[:-1], edges[1:])):
        return None
      return [edges[0][0]] + [v for _, v in edges]
    nodes = [self.node_of(t) for t in body]
    return None if not nodes or any(v is None for v in nodes) else nodes

  def example(self, instance: PathStarInstance) -> tuple[np.ndarray, np.ndarray]:
    """Tokens int32 [n] of an instance; marks bool [n], on the first step when the goal's
    depth is >= 2."""
    prompt = self.encode_instance(instance.edges, instance.source, instance.goal)
    ids = prompt + self.encode_path(instance.path)
    marks = np.zeros(len(ids), dtype=bool)
    marks[len(prompt) + self.first_step] = instance.depth >= 2
    return np.asarray(ids, dtype=np.int32), marks

  def encode(self, text: str) -> list[int]:
    """Parses the text form (class docstring) into token ids."""
    return self.encode_with_offsets(text)[0].tolist()

  def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 [n], character offsets int32 [n, 2]) of the text form."""
    ids, offsets = [], []
    for match in re.finditer(r"\d+>\d+|\d+|\S", text):
      word = match.group()
      if ">" in word and self.edge_tokens:
        ids.append(self.edge_id(*map(int, word.split(">"))))
      elif word.isdigit():
        ids.append(self.node_id(int(word)))
      elif word in self._SYMBOLS:
        ids.append(self._SYMBOLS[word])
      else:
        raise ValueError(f"not a path-star text: unexpected {word!r} at {match.start()} "
                         f"in {text!r}")
      offsets.append(match.span())
    return np.asarray(ids, np.int32), np.asarray(offsets, np.int32).reshape(-1, 2)

  def decode(self, ids: Sequence[int]) -> str:
    """Text form of token ids; pad, EOD and [MASK] are dropped, other ids print as <id>."""
    symbols = {v: k for k, v in self._SYMBOLS.items()}
    words = []
    for t in (int(t) for t in ids):
      if t in (self.PAD, self.EOD, self.mask_id):
        continue
      node, edge = self.node_of(t), self.edge_of(t)
      words.append(str(node) if node is not None else f"{edge[0]}>{edge[1]}"
                   if edge is not None else symbols.get(t, f"<{t}>"))
    return " ".join(words)


# ----------------------------------------------------------------------------- builder


@dataclasses.dataclass(eq=False)
class PathStarConfig(tfds.core.BuilderConfig):
  degree: int = 2  # d, arms of the star
  num_nodes: int = 20  # N, node labels
  min_arm: int = 2  # nodes of an arm: all arms of a graph have L, uniform in min_arm .. max_arm
  max_arm: int = 5  # the longest L
  min_goal_depth: int = 2  # the goal is the k-th node of its arm, k uniform from this
  # False: the goal is never its arm's leaf (k up to L - 1), so no training path ends at a
  # leaf and "end at a leaf" is never taught (module docstring, "verifier strength")
  leaf_goals: bool = True
  edge_tokens: bool = True  # each edge one token, in the edge list and the path
  train_size: int = 100_000
  validation_size: int = 1_000
  test_size: int = 1_000
  seed: int = 0


def graph_of(config: PathStarConfig) -> Star:
  """The graph options of a builder config."""
  return Star(degree=config.degree, num_nodes=config.num_nodes, min_arm=config.min_arm,
              max_arm=config.max_arm, min_goal_depth=config.min_goal_depth,
              leaf_goals=config.leaf_goals)


class PathStar(local.LocalBuilder):
  """Star graphs, a source and a goal, and the path between them (path_star.py).

  Features: tokens int32 [n], needs_lookahead bool [n] (on the path's first step when the
  goal's depth is >= 2), edges int32 [E, 2] (shuffled, pointing away from the source),
  path int32 [P] (source .. goal), source, goal, depth (the goal's place on its arm).
  Splits train/validation/test; no graph is in two splits.
  """

  VERSION = tfds.core.Version("3.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {
      "1.0.0": "Node-label paths.",
      "2.0.0": "Edge tokens, arm lengths min_arm..max_arm, goal depth from min_goal_depth, "
               "marks only at depth >= 2, a depth feature.",
      "3.0.0": "Arms of one length within a graph (uniform in min_arm..max_arm per graph): "
               "the goal's depth no longer tells its arm."}
  BUILDER_CONFIGS: ClassVar[list[PathStarConfig]] = [PathStarConfig(name="default")]

  @classmethod
  def make_config(cls, **options: Any) -> PathStarConfig:
    """As for every local builder; a graph that cannot be drawn fails here, in one line."""
    config = super().make_config(**options)
    graph_of(config).check()
    return config

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__,
        features=tfds.features.FeaturesDict({
            "tokens": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "needs_lookahead": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
            "edges": tfds.features.Tensor(shape=(None, 2), dtype=np.int32),
            "path": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "source": np.int32,
            "goal": np.int32,
            "depth": np.int32,
        }),
        metadata=tfds.core.MetadataDict(
            tokenizer=NAME, num_nodes=cfg.num_nodes, edge_tokens=cfg.edge_tokens,
            vocab_size=_tokenizer_of(cfg).vocab_size))

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg = self.builder_config
    graph = graph_of(cfg)
    seen: set[tuple[int, ...]] = set()
    instances = {}
    for split in reversed(local.SPLITS):  # test first: it never loses graphs to train
      rng = np.random.default_rng([cfg.seed, local.SPLITS.index(split)])
      kept = graph.generate(rng, local.split_size(split, cfg), exclude=seen)
      seen.update(graph_key(x) for x in kept)
      instances[split] = kept
    tok = _tokenizer_of(cfg)
    return {split: self._generate_examples(tok, instances[split])
            for split in local.SPLITS if local.split_size(split, cfg)}

  def _generate_examples(self, tok, kept):
    for i, x in enumerate(kept):
      tokens, marks = tok.example(x)
      yield i, {"tokens": tokens, "needs_lookahead": marks,
                "edges": np.asarray(x.edges, np.int32).reshape(-1, 2),
                "path": np.asarray(x.path, np.int32), "source": x.source, "goal": x.goal,
                "depth": x.depth}


def _tokenizer_of(config: PathStarConfig) -> PathStarTokenizer:
  return PathStarTokenizer(num_nodes=config.num_nodes, edge_tokens=config.edge_tokens)


def tokenizer(**options: Any) -> PathStarTokenizer:
  """The vocabulary of the dataset built with these builder options."""
  return _tokenizer_of(PathStar.make_config(**options))


def longest_document(**options: Any) -> int:
  """Tokens of the longest example: the edge list, the query, the longest path, its end."""
  cfg = PathStar.make_config(**options)
  edges = cfg.degree * cfg.max_arm
  prompt = (edges if cfg.edge_tokens else 3 * edges - 1) + 4  # edges, ? s g :
  path = cfg.max_arm + (0 if cfg.edge_tokens else 1) + 1  # steps (nodes), end of path
  return prompt + path


def instance_of(record: Mapping[str, Any]) -> PathStarInstance:
  """The graph, source, goal and path of a stored example."""
  return PathStarInstance([tuple(map(int, e)) for e in record["edges"]], int(record["source"]),
                          int(record["goal"]), [int(v) for v in record["path"]])


def judge(tok: PathStarTokenizer, records: Sequence[Mapping[str, Any]],
          continuations: list[list[int]]) -> dict[str, np.ndarray]:
  """goal: the continuation is a path of the graph from the source to the goal."""
  return {"goal": np.asarray([is_valid_path(tok.decode_path(c), instance_of(r))
                              for r, c in zip(records, continuations)], np.float64)}


# ----------------------------------------------------------------------------- task return


@dataclasses.dataclass(frozen=True)
class GoalReturn:
  """The task's return of an answer (edge_tokens layout), a pure JAX function: 1.0 when
  the answer, up to its END_PATH, is a chain of the prompt's edges from the query's
  source to its goal, else 0.0. Hashable by value (it rides in the static `Lookahead`).

  end_id: the token that ends an answer (END_PATH); a search ends a path there.
  """

  num_nodes: int
  end_id: int = PathStarTokenizer.END_PATH

  def __call__(self, prefix, anchor, path):
    """prefix [T] int32: the anchor's own document (-1 elsewhere; mcts.Context), of which
    nothing after the anchor is read; anchor []: its index; path [D] int32: the tokens
    after it (-1 where there are none). The answer is prefix's tokens after the PATH
    marker up to the anchor, then `path`; it is judged up to its first END_PATH (none, or
    an anchor before the PATH marker: 0).
    """
    tok = PathStarTokenizer
    t, d = prefix.shape[0], path.shape[0]
    slots = jnp.arange(t)
    query = jnp.max(jnp.where((slots <= anchor) & (prefix == tok.QUERY), slots, -1))
    source, goal = (prefix[jnp.clip(query + i, 0, t - 1)] - tok._FIRST_NODE for i in (1, 2))
    start = query + 4  # the first answer token (after "? s g :")
    given = jnp.maximum(anchor + 1 - start, 0)  # answer tokens of the prefix
    i = jnp.arange(t + d)
    answer = jnp.where(i < given, prefix[jnp.clip(start + i, 0, t - 1)],
                       jnp.where(i - given < d, path[jnp.clip(i - given, 0, d - 1)], -1))
    end = jnp.argmax(answer == self.end_id)
    body = i < end
    first_edge = tok._FIRST_NODE + self.num_nodes
    edge = answer - first_edge
    u, v = edge // self.num_nodes, edge % self.num_nodes
    listed = jnp.any((answer[:, None] == prefix[None]) & (slots < query)[None], axis=1)
    chained = jnp.concatenate([u[:1] == source, u[1:] == v[:-1]])
    ok = jnp.all(jnp.where(body, (edge >= 0) & (edge < self.num_nodes ** 2) & listed & chained,
                           True))
    ok &= (query >= 0) & (anchor >= start - 1) & (answer[end] == self.end_id) & (end > 0)
    ok &= v[jnp.maximum(end - 1, 0)] == goal
    return ok.astype(jnp.float32)


def task_return(**options: Any) -> GoalReturn:
  """The return of the dataset built with these builder options (edge_tokens only)."""
  tok = tokenizer(**options)
  if not tok.edge_tokens:
    raise ValueError("path_star's task return reads edge-token answers; set "
                     "data.options.edge_tokens=True (or lookahead.reward='log_prob')")
  return GoalReturn(num_nodes=tok.num_nodes)


TESTBED = local.Testbed(
    name=NAME, builder=PathStar, tokenizer=tokenizer, longest_document=longest_document,
    mark_groups=lambda tok, targets, marks: goal_depths(np.asarray(targets), np.asarray(marks),
                                                        tok.END_PATH),
    judge=judge, judge_columns=(("goal", "reaches goal", ".3f"),), marked_probe=True,
    task_return=task_return)
