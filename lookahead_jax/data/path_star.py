"""Path-star testbed (Bachmann & Nagarajan 2024): star graphs, paths, vocabulary, accuracy.

Pure numpy; no TFDS, so the evaluation can import the accuracy helpers.

A graph has a source with `d` arms (simple paths leaving the source); node labels are
distinct random draws out of `0 .. N-1`. With fixed lengths every arm has `L-1` nodes
after the source; with `vary_lengths` each arm's length is drawn independently and
uniformly from `2 .. L-1` nodes. The goal is the last node (a leaf; but see
`goal_anywhere` below) of one arm drawn uniformly, independently of the lengths, so
neither "the longest arm" nor any other
rule on lengths beats chance; no arm is shorter than 2 nodes, so the first node after
the source is never the goal itself (which the query would give away). The edges point
away from the source and are listed in random order; the target is the path from the
source to the goal.

Token layout of `PathStarTokenizer(num_nodes=N)`:

    0            pad
    1            end of document (EOD)
    2            edge separator, between two edges ("|" in text form)
    3            query marker, before "source goal" ("?")
    4            path marker, before the path (":")
    5            end of path, after the goal (".")
    6 .. 6+N-1   node labels 0 .. N-1

An example is `u v | u v | ... | u v ? s g : s n_1 n_2 ... g .`, e.g. with d=2, L=3:
`7 2 | 4 9 | 4 7 | 9 0 ? 4 0 : 4 9 0 .`. "Needs lookahead" marks `n_1` only, the first
node after the source: the one choice in the path.

What it rewards: every node after `n_1` is one edge look-up from the node before it, so
under teacher forcing the model learns those from the edge list alone (the "Clever Hans"
cheat) and has no training signal left to learn the search toward the goal that `n_1`
needs: a model that has not learned it is right `chance_first_node(d) = 1/d` of the time.
Lookahead from the anchor at the source can tell the arms apart only by the model's own
continuation of each: `n_1 ... leaf` are probable on every arm (one look-up each), so the
arm must be judged by the token after its leaf. With fixed arm lengths the end of path
comes after `L-1` nodes on any arm, a count the model can learn without looking at the
goal, and lookahead adds nothing (measured: beam lookahead over the whole arm equal to
its control). With `vary_lengths` (the default) the end-of-path token must be placed by
content; a model that learned "end after the goal" finds a wrong arm's leaf followed by
anything improbable, and a lookahead that reaches that token picks the right arm. The
horizon it needs, counted from `n_1`, is the longest arm plus one: `L` tokens (`n_1` to
the leaf, then the end-of-path token); `L-1` reaches the last node of a full-length arm
but not the token that tells its leaf from the goal. Caveat: the goal is always a leaf,
so "end where no edge leaves the node" predicts the end-of-path token as well as "end
after the goal" in training; only the second gives the lookahead something to score.
`goal_anywhere` removes that shortcut: the goal is any node of its arm from the second
on (uniform), so the path often stops before a leaf and only "end after the goal" fits
the training paths. A wrong arm's continuation then reaches its leaf without meeting
the goal, a state no training path shows, and the lookahead needs the horizon that gets
past that leaf: the longest arm plus one (`L`) again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np


class PathStarInstance(NamedTuple):
  """One graph: edges [(u, v)] shuffled, pointing away from the source; path [P] to goal."""

  edges: list[tuple[int, int]]
  source: int
  goal: int
  path: list[int]


def check_graph_options(degree: int, path_length: int, num_nodes: int,
                        vary_lengths: bool) -> None:
  """Raises a one-line ValueError for options that no star graph satisfies."""
  if degree < 1:
    raise ValueError(f"path_star degree={degree} must be >= 1")
  if path_length < (3 if vary_lengths else 2):
    raise ValueError(f"path_star path_length={path_length} must be >= 2 (>= 3 with "
                     "vary_lengths: arms of 2 .. L-1 nodes)")
  need = 1 + degree * (path_length - 1)
  if num_nodes < need:
    raise ValueError(f"path_star num_nodes={num_nodes} is too small: degree={degree} arms of "
                     f"path_length-1={path_length - 1} nodes and a source need >= {need}")


def sample_graph(rng: np.random.Generator, degree: int, path_length: int, num_nodes: int,
                 vary_lengths: bool, goal_anywhere: bool = False) -> PathStarInstance:
  """A random star graph (rules in the module docstring) and the path to its goal.

  Args:
    rng: the random generator (the result depends only on it and the arguments).
    degree: d, the number of arms (edges leaving the source).
    path_length: L, the nodes of the longest possible path, the source included.
    num_nodes: N, labels are drawn from 0 .. N-1; needs N >= 1 + d * (L-1).
    vary_lengths: arm lengths uniform in 2 .. L-1 nodes, else all L-1.
    goal_anywhere: the goal is the arm's k-th node, k uniform in 2 .. its length; else
      its leaf.

  Returns:
    PathStarInstance: edges (sum of arm lengths pairs), source, goal and the path
    [source, n_1, ..., goal] (arm length + 1 nodes).
  """
  check_graph_options(degree, path_length, num_nodes, vary_lengths)
  if vary_lengths:
    lengths = rng.integers(2, path_length, size=degree)  # 2 .. L-1 inclusive
  else:
    lengths = np.full(degree, path_length - 1)
  labels = rng.choice(num_nodes, size=1 + int(lengths.sum()), replace=False).tolist()
  source, rest = labels[0], labels[1:]
  arms, start = [], 0
  for n in lengths.tolist():
    arms.append(rest[start:start + n])
    start += n
  edges = [(u, v) for arm in arms for u, v in zip([source] + arm[:-1], arm)]
  edges = [edges[i] for i in rng.permutation(len(edges))]
  chosen = arms[int(rng.integers(degree))]
  if goal_anywhere:
    chosen = chosen[:int(rng.integers(2, len(chosen) + 1))]
  return PathStarInstance(edges, source, chosen[-1], [source] + chosen)


def graph_key(instance: PathStarInstance) -> tuple[int, ...]:
  """Order-free key of an instance: its goal, then its sorted edges, flattened."""
  return (int(instance.goal),) + tuple(int(x) for e in sorted(map(tuple, instance.edges))
                                       for x in e)


def generate_instances(rng: np.random.Generator, count: int, degree: int, path_length: int,
                       num_nodes: int, vary_lengths: bool, goal_anywhere: bool = False,
                       exclude: Iterable[tuple[int, ...]] = ()) -> list[PathStarInstance]:
  """`count` instances whose `graph_key` is neither in `exclude` nor repeated."""
  seen = set(exclude)
  kept: list[PathStarInstance] = []
  sampled = 0
  while len(kept) < count:
    if sampled > 100 * count + 1000:
      raise RuntimeError(f"found only {len(kept)} of {count} distinct path_star graphs with "
                         f"degree={degree}, path_length={path_length}, num_nodes={num_nodes}")
    x = sample_graph(rng, degree, path_length, num_nodes, vary_lengths, goal_anywhere)
    sampled += 1
    key = graph_key(x)
    if key not in seen:
      seen.add(key)
      kept.append(x)
  return kept


def is_valid_path(path: Sequence[int] | None, instance: PathStarInstance) -> bool:
  """True when `path` goes from the source to the goal along the instance's edges."""
  if not path or path[0] != instance.source or path[-1] != instance.goal:
    return False
  edges = {tuple(e) for e in instance.edges}
  return all((u, v) in edges for u, v in zip(path[:-1], path[1:]))


def _fraction(right: list[bool]) -> float:
  return float(np.mean(right)) if right else float("nan")


def _pairs(decoded: Sequence[Sequence[int] | None], true: Sequence[Sequence[int]]):
  if len(decoded) != len(true):
    raise ValueError(f"{len(decoded)} decoded paths for {len(true)} true paths")
  return [(None if d is None else [int(v) for v in d], [int(v) for v in t])
          for d, t in zip(decoded, true)]


def first_node_accuracy(decoded: Sequence[Sequence[int] | None],
                        true: Sequence[Sequence[int]]) -> float:
  """Fraction of decoded paths (None: malformed) that start `source, n_1` like the true one.

  Both are node lists [source, n_1, ...]; nan for no paths.
  """
  return _fraction([d is not None and d[:2] == t[:2] for d, t in _pairs(decoded, true)])


def path_accuracy(decoded: Sequence[Sequence[int] | None],
                  true: Sequence[Sequence[int]]) -> float:
  """Fraction of decoded paths (None: malformed) equal to the true path; nan for none."""
  return _fraction([d == t for d, t in _pairs(decoded, true)])


def chance_first_node(degree: int) -> float:
  """First-node accuracy of a model that picks one of the d arms at random: 1/d."""
  return 1.0 / degree


class PathStarTokenizer:
  """Token vocabulary of the path-star testbed (layout in the module docstring).

  Text form, for `encode`/`decode`: "u v | u v ? s g : s n ... g ." with node labels in
  decimal, e.g. "4 9 | 4 7 ? 4 7 : 4 7 .".
  """

  PAD, EOD, EDGE_SEP, QUERY, PATH, END_PATH = 0, 1, 2, 3, 4, 5
  _FIRST_NODE = 6
  _SYMBOLS = {"|": EDGE_SEP, "?": QUERY, ":": PATH, ".": END_PATH}

  def __init__(self, num_nodes: int):
    if num_nodes < 2:
      raise ValueError(f"path_star num_nodes={num_nodes} must be >= 2")
    self.num_nodes = num_nodes

  @property
  def vocab_size(self) -> int:
    return self._FIRST_NODE + self.num_nodes

  @property
  def pad_id(self) -> int:
    return self.PAD

  @property
  def eod_id(self) -> int:
    return self.EOD

  @property
  def mask_id(self) -> int:
    """[MASK] of the masked objective: the first id past the vocabulary (tokenizers.py)."""
    return self.vocab_size

  def node_id(self, node: int) -> int:
    if not 0 <= node < self.num_nodes:
      raise ValueError(f"node {node} is outside 0..{self.num_nodes - 1}")
    return self._FIRST_NODE + int(node)

  def node_of(self, token: int) -> int | None:
    """Node label of a token id, or None when the token is not a node."""
    node = int(token) - self._FIRST_NODE
    return node if 0 <= node < self.num_nodes else None

  def encode_instance(self, edges: Sequence[tuple[int, int]], source: int,
                      goal: int) -> list[int]:
    """The prompt: edges, query, source, goal and the path marker (no EOD)."""
    ids: list[int] = []
    for i, (u, v) in enumerate(edges):
      ids += ([self.EDGE_SEP] if i else []) + [self.node_id(u), self.node_id(v)]
    return ids + [self.QUERY, self.node_id(source), self.node_id(goal), self.PATH]

  def prompt_length(self, ids: Sequence[int]) -> int:
    """Tokens of an example's prompt: up to and including its path marker."""
    return list(map(int, ids)).index(self.PATH) + 1

  def encode_path(self, path: Sequence[int]) -> list[int]:
    """Path tokens [source ... goal] followed by the end-of-path token."""
    return [self.node_id(v) for v in path] + [self.END_PATH]

  def decode_path(self, ids: Sequence[int]) -> list[int] | None:
    """Node labels up to the first end-of-path token (a leading path marker is skipped).

    None when malformed: no end-of-path token, no node before it, or another token
    before it. Tokens after the end-of-path token are ignored.
    """
    ids = [int(t) for t in ids]
    if ids and ids[0] == self.PATH:
      ids = ids[1:]
    if self.END_PATH not in ids:
      return None
    nodes = [self.node_of(t) for t in ids[:ids.index(self.END_PATH)]]
    return None if not nodes or any(v is None for v in nodes) else nodes

  def example(self, instance: PathStarInstance) -> tuple[np.ndarray, np.ndarray]:
    """Tokens int32 [3E+4+P] of an instance (E edges, P path nodes); marks bool, on n_1."""
    prompt = self.encode_instance(instance.edges, instance.source, instance.goal)
    ids = prompt + self.encode_path(instance.path)
    marks = np.zeros(len(ids), dtype=bool)
    marks[len(prompt) + 1] = True  # the path's source sits at len(prompt)
    return np.asarray(ids, dtype=np.int32), marks

  def encode(self, text: str) -> list[int]:
    """Parses the text form "u v | ... ? s g : s ... g ." into token ids."""
    return self.encode_with_offsets(text)[0].tolist()

  def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 [n], character offsets int32 [n, 2]) of the text form."""
    ids, offsets = [], []
    for match in re.finditer(r"\d+|\S", text):
      word = match.group()
      if word.isdigit():
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
      node = self.node_of(t)
      words.append(str(node) if node is not None else symbols.get(t, f"<{t}>"))
    return " ".join(words)
