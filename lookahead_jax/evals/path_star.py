"""The path-star evaluator: where along the path the model is right, by goal depth, how
each way of decoding does on the first step, and why lookahead helps or not.

On every graph of `eval.test_split` (data/path_star.py), in the split's order: the same
graphs whose first steps the gain grid (evals/gain.py) groups into G per goal depth,
which scores the whole split (config validation demands eval.max_batches == 0 on
path_star), so every figure here and G come from one set of graphs.

- **Teacher-forced accuracy** (argmax on the true path): of the first step per goal depth
  (depth 1 gives the answer away in the query; from depth 2 the step needs a search back
  from the goal, and a model that has not learned it is right 1/d of the time), of the
  walk (every later step, one edge look-up each) and of the end-of-path token.
- **Decoding** from the prompt: greedy, beam (width B), plain sampling (temperature 1)
  and sampling from the amplified mixture p~ of the evaluation's headline lookahead (its
  tau and lam): the first step right, and the share of paths that reach the goal, per
  goal depth. One length rule: beam decoding ranks finished paths by
  log p / length**alpha with alpha = `lookahead.length_penalty`, the rule of the
  lookahead's own beams (lookahead.py), so the decoder and q_H agree (alpha = 0: plain
  log p).
- **No-search rules** (data/path_star.py, NO_SEARCH_RULES): per goal depth, the
  first-step accuracy of each rule that picks an arm without any search back from the
  goal (longer, shorter, first- or last-listed arm, label rules, ...; ties count 1/k),
  and the best of them beside 1/d. With equal arms each is 1/d up to sampling error; a
  model's first-step accuracy is read against the best one. The best of a dozen rules on a
  few hundred graphs sits above 1/d by selection alone (by one to two standard errors of
  one rule): a conservative reference, not an estimate of a shortcut.
- **Per graph**, in the split's order (for comparisons paired by graph across runs):
  the goal depth, and per method 0/1 first step right and path reaches the goal.
- **Verifier strength**: the model teacher-forced down every wrong arm of each graph to
  its leaf, then greedy for `AFTER_LEAF` more tokens. Lookahead from the first step can
  only tell the arms apart when that continuation is improbable under the model:
    walk         mean log-prob of the wrong arm's walk tokens (after its first step);
                 near 0 when the walk is learned, which the lookahead needs
    end_max      the largest log-prob of the end-of-path token at a node of the wrong arm
                 (none is the goal): should be very negative
    leaf_max     the largest log-prob of any token at the wrong leaf, where no edge leaves
                 and the goal was never met: should be low (a diffuse prediction)
    after_max    the same, mean over the AFTER_LEAF greedy steps after the leaf
  beside goal_end, the log-prob of the end-of-path token at the goal on the true path.
  Each is a mean over graphs (of the mean over their wrong arms).

G on the first steps per goal depth comes from the gain grid (evals/gain.py, its
token-level G of the headline row grouped by `pipeline.mark_groups`). compare pairs a
mode with the baseline by test graph (`Evaluator.paired`): at goal depth 2, the
teacher-forced first step and the headline row's g, seed i against seed i, one bootstrap
over the graphs for every seed and both modes (stats.paired_bootstrap_diff).
"""

from __future__ import annotations

import functools
import itertools
import json
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lookahead_jax import aot, decoding, evals, report, stats
from lookahead_jax import lookahead as lookahead_lib
from lookahead_jax import model as model_lib
from lookahead_jax.data import builders, path_star, registry
from lookahead_jax.settings import Data, Settings

NAME = path_star.NAME
AFTER_LEAF = 2  # greedy tokens after a wrong leaf whose confidence is reported
METHODS = ("teacher_forced", "greedy", "beam", "sample", "amplified")
# compare's figures at goal depth 2 bootstrapped over test graphs paired across runs
# (`Evaluator.paired`): key -> the per-graph field of `per_graph` it is taken from
PAIRED = {"first_d2_paired": "first", "G_d2_paired": "g"}
PAIRED_DEPTH = 2


def test_graphs(data: Data, split: str, limit: int | None = None
                ) -> list[path_star.PathStarInstance]:
  """The split's graphs in its order: all of them, or the first `limit`."""
  records = builders.data_source(NAME, split, data.data_dir, **data.options)
  count = len(records) if limit is None else min(limit, len(records))
  return [path_star.instance_of(records[i]) for i in range(count)]


def _right_padded(rows: list[list[int]], pad: int, width: int) -> tuple[jax.Array, jax.Array]:
  """(tokens [n, width] right-padded, positions [n, width]) of token lists."""
  tokens = np.full((len(rows), width), pad, np.int32)
  for i, r in enumerate(rows):
    tokens[i, :len(r)] = r
  return jnp.asarray(tokens), jnp.broadcast_to(jnp.arange(width, dtype=jnp.int32), tokens.shape)


@functools.partial(jax.jit, static_argnames=("config",))
def _log_softmax_pass(params, tokens, positions, *, config: model_lib.Config) -> jax.Array:
  logits, _ = model_lib.forward(params, tokens, positions, config=config)
  return jax.nn.log_softmax(logits.astype(jnp.float32))


def log_probs(params, rows: list[list[int]], *, config: model_lib.Config, pad: int
              ) -> np.ndarray:
  """Next-token log-probs [n, max_len, V] of token lists right-padded to the model's
  length (one compiled pass per row count; row i valid to len-1)."""
  tokens, positions = _right_padded(rows, pad, config.max_len)
  return np.asarray(_log_softmax_pass(params, tokens, positions, config=config))


def prompt(tok: path_star.PathStarTokenizer, x: path_star.PathStarInstance) -> list[int]:
  """A document's start as the model reads it: [EOD] + edges, query, path marker."""
  return [tok.eod_id] + tok.encode_instance(x.edges, x.source, x.goal)


def teacher_forced(params, graphs, tok, model_cfg) -> dict[str, np.ndarray]:
  """Per graph: first (first step right), walk (share of walk steps right; NaN without
  any), end (end-of-path right), first_log_p and goal_end (log p of the end-of-path
  token at the goal)."""
  rows = [prompt(tok, x) + tok.encode_path(x.path) for x in graphs]
  lp = log_probs(params, rows, config=model_cfg, pad=tok.pad_id)
  out = {k: [] for k in ("first", "walk", "end", "first_log_p", "goal_end")}
  for x, ids, row in zip(graphs, rows, lp):
    start = len(prompt(tok, x))  # index of the first path token
    path = ids[start:]
    guess = row[start - 1:len(ids) - 1].argmax(-1)  # predictions of path[0], path[1], ...
    first = tok.first_step
    right = guess == np.asarray(path)
    out["first"].append(right[first])
    walk = right[first + 1:-1]
    out["walk"].append(walk.mean() if len(walk) else np.nan)
    out["end"].append(right[-1])
    out["first_log_p"].append(row[start - 1 + first, path[first]])
    out["goal_end"].append(row[len(ids) - 2, tok.END_PATH])
  return {k: np.asarray(v, np.float64) for k, v in out.items()}


def verifier_strength(params, graphs, tok, model_cfg) -> dict[str, float]:
  """The figures of the module docstring (means over graphs with a wrong arm)."""
  arms, owner = [], []
  for i, x in enumerate(graphs):
    for arm in path_star.arms(x):
      if arm[0] != x.path[1]:
        ids = prompt(tok, x)
        arms.append(ids + tok.encode_path([x.source] + arm)[:-1])
        owner.append((i, len(ids)))
  if not arms:
    return {}
  prompts, lengths = decoding.left_pad(arms, tok.pad_id)
  more = np.asarray(decoding.generate(params, prompts, jax.random.key(0), lengths,
                                      config=model_cfg, max_new_tokens=1 + AFTER_LEAF))
  lp = log_probs(params, [a + m.tolist() for a, m in zip(arms, more)], config=model_cfg,
                 pad=tok.pad_id)
  per: dict[int, list[list[float]]] = {}
  for row, ids, (graph, start) in zip(lp, arms, owner):
    walk = [row[j - 1, ids[j]] for j in range(start + tok.first_step + 1, len(ids))]
    at_nodes = row[start - 1 + tok.first_step + 1:len(ids), tok.END_PATH]  # after n_1 .. leaf
    leaf = len(ids) - 1
    per.setdefault(graph, []).append([np.mean(walk) if walk else np.nan, at_nodes.max(),
                                      row[leaf].max(), row[leaf + 1:leaf + 1 + AFTER_LEAF]
                                      .max(-1).mean()])
  with warnings.catch_warnings():  # an arm of one node has no walk: NaN, left out
    warnings.simplefilter("ignore", RuntimeWarning)
    means = np.array([np.nanmean(v, axis=0) for v in per.values()])
  return {k: float(np.nanmean(means[:, i]))
          for i, k in enumerate(("walk", "end_max", "leaf_max", "after_max"))}


def _first_step_and_goal(tok, graphs, decoded: np.ndarray) -> dict[str, np.ndarray]:
  """Per graph: first step right, and path reaches the goal, of decoded path tokens."""
  first, reached = [], []
  for x, ids in zip(graphs, decoded):
    want = tok.encode_path(x.path)[tok.first_step]
    first.append(int(ids[tok.first_step]) == want)
    reached.append(path_star.is_valid_path(tok.decode_path(ids), x))
  return {"first": np.asarray(first, np.float64), "goal": np.asarray(reached, np.float64)}


def _decoder_calls(params, graphs, tok, settings: Settings, beam_size: int,
                   amplified: dict[str, Any] | None, seed: int
                   ) -> dict[str, tuple[Callable, tuple, dict[str, Any]]]:
  """(jitted function, args, kwargs) of each decoding method of `decoded`; `compile_ahead`
  lowers the same calls."""
  model_cfg = settings.model
  prompts, lengths = decoding.left_pad([prompt(tok, x) for x in graphs], tok.pad_id)
  new = max(len(tok.encode_path(x.path)) for x in graphs) + 1  # the longest path, its EOD
  new = min(new, model_cfg.max_len - prompts.shape[1])
  key = jax.random.key(seed)
  common = dict(config=model_cfg, max_new_tokens=new, eos_id=tok.END_PATH)
  calls = {
      "greedy": (decoding.generate, (params, prompts, key, lengths), common),
      "beam": (decoding.beam_search,
               (params, prompts, lengths, settings.lookahead.length_penalty),
               dict(common, beam_size=beam_size)),
      "sample": (decoding.generate, (params, prompts, key, lengths, 1.0), common)}
  if amplified is not None:
    la = settings.lookahead.as_kind(amplified["kind"], width=amplified["width"],
                                    horizon=amplified["horizon"])
    calls["amplified"] = (
        lookahead_lib.sample_amplified,
        (params, prompts, key, lengths, amplified["temperature"], amplified["lam"],
         settings.mixture.beta),
        dict(config=model_cfg, lookahead=la, max_new_tokens=new, scheme=amplified["scheme"],
             mixture=amplified["mixture"], pad_id=tok.pad_id))
  return calls


def decoded(params, graphs, tok, settings: Settings, beam_size: int,
            amplified: dict[str, Any] | None, seed: int) -> dict[str, dict[str, np.ndarray]]:
  """Per method of METHODS[1:] (amplified only with a headline row `amplified`): per graph,
  the first step right and the path reaching the goal. Beam decoding ranks by
  log p / length**settings.lookahead.length_penalty (the lookahead's rule)."""
  out = {}
  for method, (fn, args, kwargs) in _decoder_calls(params, graphs, tok, settings, beam_size,
                                                  amplified, seed).items():
    ids = fn(*args, **kwargs)
    out[method] = ids.sequences[:, 0] if method == "beam" else ids
  return {m: _first_step_and_goal(tok, graphs, np.asarray(ids)) for m, ids in out.items()}


def _compile_ahead(ahead: aot.Ahead, settings: Settings, params) -> None:
  """Queues on `ahead` the decoders' compiles `evaluate` makes for parameters shaped like
  `params` (aot.Ahead.warm); amplified sampling's only when the grid has one setting (its
  headline row is then known before the fits)."""
  ev = settings.eval
  graphs = test_graphs(settings.data, ev.test_split)
  amplified = None
  grid = list(itertools.product(ev.kinds, ev.widths, ev.horizons, ev.schemes, ev.mixtures))
  if len(grid) == 1 and grid[0][2] > 1:
    kind, width, horizon, scheme, mixture = grid[0]
    amplified = dict(kind=kind, width=width, horizon=horizon, scheme=scheme, mixture=mixture,
                     temperature=1.0, lam=0.5)  # (traced: any values)
  for fn, args, kwargs in _decoder_calls(params, graphs, settings.tokenizer, settings,
                                         max(ev.widths), amplified, ev.seed).values():
    ahead.warm(fn, *args, **kwargs)


def graph_figures(params, settings: Settings,
                  headline: dict[str, Any] | None) -> dict[str, Any]:
  """The path-star figures of the module docstring, on every graph of eval.test_split.

  headline: the evaluation's headline row (its lookahead, tau and lam drive amplified
  sampling), or None. Returns {split, depths, chance, graphs, counts, first_step: {method:
  {depth: accuracy}}, goal: {method: {depth: share}}, no_search: {rules: {rule: {depth:
  accuracy}}, best: {depth: {rule, accuracy}}}, walk, end, verifier, goal_end, per_graph:
  {depth: [int], first_step: {method: [0/1]}, goal: {method: [0/1]}}, graphs_of
  (`graphs_of`)}; depths are strings
  as dict keys; per_graph lists the graphs in the split's order.
  """
  ev, tok = settings.eval, settings.tokenizer
  graphs = test_graphs(settings.data, ev.test_split)
  depth = np.asarray([x.depth for x in graphs])
  tf = teacher_forced(params, graphs, tok, settings.model)
  methods = {"teacher_forced": {"first": tf["first"]}}
  methods.update(decoded(params, graphs, tok, settings, max(ev.widths), headline, ev.seed))
  depths = sorted(set(depth.tolist()))

  def by_depth(values):
    return {str(d): float(values[depth == d].mean()) for d in depths}

  def per_graph(key):
    return {m: v[key].astype(int).tolist() for m, v in methods.items() if key in v}

  rules = path_star.no_search_accuracy(graphs)
  return dict(
      split=ev.test_split, depths=depths, graphs=len(graphs),
      counts={str(d): int((depth == d).sum()) for d in depths},
      chance=path_star.chance_first_node(len(path_star.arms(graphs[0]))),
      first_step={m: by_depth(v["first"]) for m, v in methods.items()},
      goal={m: by_depth(v["goal"]) for m, v in methods.items() if "goal" in v},
      no_search=dict(
          rules={name: {str(d): a for d, a in per.items()} for name, per in rules.items()},
          best={str(d): {"rule": name, "accuracy": a}
                for d, (name, a) in path_star.best_no_search(rules).items()}),
      walk=float(np.nanmean(tf["walk"])), end=float(tf["end"].mean()),
      goal_end=float(tf["goal_end"].mean()),
      verifier=verifier_strength(params, graphs, tok, settings.model),
      per_graph=dict(depth=depth.astype(int).tolist(), first_step=per_graph("first"),
                     goal=per_graph("goal")),
      graphs_of=graphs_of(settings))


def table(figures: dict[str, Any], headline: dict[str, Any] | None = None) -> str:
  """First-step accuracy and reach-the-goal share per method and goal depth, the best
  no-search rule per depth (its accuracy and name, beside chance 1/d), G per depth (the
  evaluation's headline row's G grouped by goal depth), verifier strength."""
  groups = (headline or {}).get("test_groups")
  depths = [str(d) for d in figures["depths"]]
  rows = []
  for method, accs in figures["first_step"].items():
    goal = figures["goal"].get(method, {})
    rows.append([method] + [f"{accs[d]:.3f}" + (f" / {goal[d]:.3f}" if d in goal else "")
                            for d in depths])
  best = figures.get("no_search", {}).get("best")
  if best is not None:
    rows.append([f"best of {len(path_star.NO_SEARCH_RULES)} no-search rules"] + [
        f"{best[d]['accuracy']:.3f} {best[d]['rule']}" if d in best else "-" for d in depths])
  if groups:
    rows.append(["G (first step)"] + [
        f"{groups[d]['G']:+.3f} {report.cell(groups[d]['G_ci'], '+.3f')}" if d in groups
        else "-" for d in depths])
  counts = figures["counts"]
  text = report.table(
      ["first step right / path reaches the goal"] + [f"depth {d} ({counts[d]})" for d in depths],
      rows, title=f"Path-star, {figures['graphs']} test graphs: the first step by goal depth "
      f"(chance 1/d = {figures['chance']:.3f} from depth 2; depth 1 is given by the query; "
      "the best no-search rule is picked on these graphs, so it sits 1-2 standard errors "
      "above 1/d by selection alone)")
  v = figures["verifier"]
  walk = (f"teacher-forced: walk {figures['walk']:.3f}, end of path {figures['end']:.3f}, "
          f"log p(end) at the goal {figures['goal_end']:+.2f}")
  if not v:
    return text + "\n" + walk
  return (text + "\n" + walk + "\nverifier strength, down every wrong arm (log-probs, means "
          f"over graphs): walk {v['walk']:+.2f}, largest log p(end of path) at a wrong node "
          f"{v['end_max']:+.2f}, largest log p at the wrong leaf {v['leaf_max']:+.2f} and "
          f"after it {v['after_max']:+.2f}")


def run_figures(figures: dict[str, Any], best_rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
  """compare's figures of a run: G on the first steps per goal depth of each lookahead's
  best row (`best_rows`: label -> row), teacher-forced first-step accuracy per goal depth,
  the first step of beam decoding and the share of sampled (plain, amplified) paths that
  reach a depth-2 goal, walk and end-of-path accuracy, the verifier strength, and the best
  no-search rule's accuracy at depth 2 (None in figures saved before it existed)."""
  out = {}
  for label, row in best_rows.items():
    for depth, g in row["test_groups"].items():
      out[f"G_{label}_d{depth}"], out[f"G_{label}_d{depth}_ci"] = g["G"], g["G_ci"]
      if g.get("tokens") is not None:  # what the per-depth intervals resample: graphs
        out[f"G_{label}_d{depth}_n"] = f"{g['tokens']} graphs"
  out.update({f"first_d{d}": a for d, a in figures["first_step"]["teacher_forced"].items()})
  out["first_d2_beam"] = figures["first_step"]["beam"].get("2")
  out["no_search_d2"] = figures.get("no_search", {}).get("best", {}).get("2", {}).get("accuracy")
  for method in ("amplified", "sample"):
    out[f"goal_d2_{method}"] = figures["goal"].get(method, {}).get("2")
  out.update(walk=figures["walk"], end=figures["end"])
  out.update({f"verifier_{k}": v for k, v in figures["verifier"].items()})
  return out


# ----------------------------------------------------------------------------- paired by graph


def graphs_of(settings: Settings) -> dict[str, Any]:
  """What fixes the test graphs: the testbed, its data options and the test split."""
  return {"name": settings.data.name, "split": settings.eval.test_split,
          "options": json.loads(json.dumps(settings.data.options, sort_keys=True))}


def per_graph(figures: dict[str, Any], report_: dict[str, Any]) -> dict[str, Any] | None:
  """A run's per-test-graph figures for the comparisons paired by graph: {data (graphs_of),
  depth [int], first [0/1] (teacher-forced first step right), g [float | None] (the
  headline row's g on the graph's marked first step; None on graphs without one)}, in the
  test split's order; None without per-graph figures.

  The headline row's marked test tokens (report["best"]["test_marked_g"], in the split's
  order) are the first steps of the graphs of goal depth >= 2, one each."""
  per = figures.get("per_graph")
  if not per or "teacher_forced" not in per.get("first_step", {}):
    return None
  depth = [int(d) for d in per["depth"]]
  out = {"data": figures["graphs_of"], "depth": depth,
         "first": [float(v) for v in per["first_step"]["teacher_forced"]], "g": None}
  marked_g = report_.get("best", {}).get("test_marked_g")
  marked = [i for i, d in enumerate(depth) if d >= 2]
  if marked_g is not None and len(marked_g) == len(marked):
    out["g"] = [None] * len(depth)
    for i, g in zip(marked, marked_g):
      out["g"][i] = float(g)
  elif marked_g is not None:
    warnings.warn(f"{len(marked_g)} marked test tokens for {len(marked)} graphs of depth >= 2: "
                  "G is not paired by graph", stacklevel=2)
  return out


def paired_by_graph(mode: list[dict[str, Any]], base: list[dict[str, Any]],
                    resamples: int, seed: int) -> dict[str, Any]:
  """The PAIRED figures of a mode against the baseline (run figures with "per_graph"):
  seed i against seed i (runs matched by seed), resampled over the test graphs of goal
  depth PAIRED_DEPTH, paired across runs (stats.paired_bootstrap_diff); {} unless both
  share the test graphs."""
  by_seed = {b.get("seed", i): b for i, b in enumerate(base)}
  pairs = [(r.get("per_graph"), by_seed[r.get("seed", i)].get("per_graph"))
           for i, r in enumerate(mode) if r.get("seed", i) in by_seed]
  pairs = [(a, b) for a, b in pairs if a and b]
  if not pairs:
    return {}
  first = pairs[0][0]
  if any(p["data"] != first["data"] or p["depth"] != first["depth"]
         for pair in pairs for p in pair):
    return {}  # not the same test graphs: nothing to pair by
  chosen = np.asarray(first["depth"]) == PAIRED_DEPTH
  out = {}
  for key, field in PAIRED.items():
    if any(p[field] is None for pair in pairs for p in pair) or not chosen.any():
      continue

    def values(side: int, field=field) -> np.ndarray:
      return np.asarray([[np.nan if v is None else v for v in pair[side][field]]
                         for pair in pairs], np.float64)[:, chosen]

    diff, lo, hi = stats.paired_bootstrap_diff(values(0), values(1), resamples, seed)
    out[key], out[key + "_ci"] = diff, [lo, hi]
    out[key + "_n"] = (f"{len(pairs)} seed{'s' if len(pairs) > 1 else ''} x "
                       f"{int(chosen.sum())} graphs")
  return out


# ----------------------------------------------------------------------------- evaluator


class Evaluator(evals.Base):
  """The figures of the module docstring, on a path_star run."""

  name = NAME
  columns = (
      *(evals.Column(f"G_{who}_d{d}", f"G depth {d} ({who})", "+.3f",
                     paired=(who, d) == ("dev", 2))
        for who in ("stunting", "dev") for d in range(2, 6)),
      *(evals.Column(f"first_d{d}", f"first step depth {d}", ".3f", paired=d == 2)
        for d in range(1, 6)),
      evals.Column("no_search_d2", "best no-search rule depth 2", ".3f"),
      evals.Column("first_d2_beam", "first step depth 2 (beam)", ".3f"),
      evals.Column("goal_d2_sample", "depth-2 goal reached (sampling)", ".3f"),
      evals.Column("goal_d2_amplified", "depth-2 goal reached (amplified)", ".3f"),
      evals.Column("walk", "walk", ".3f"), evals.Column("end", "end of path", ".3f"),
      evals.Column("verifier_walk", "wrong arm: walk log p", "+.2f"),
      evals.Column("verifier_end_max", "wrong arm: max log p(end)", "+.2f"),
      evals.Column("verifier_leaf_max", "wrong leaf: max log p", "+.2f"),
      evals.Column("verifier_after_max", "after it: max log p", "+.2f"),
      evals.Column("G_d2_paired", "G depth 2 (headline la.) vs none, paired by graph", "+.3f"),
      evals.Column("first_d2_paired", "first step depth 2 vs none, paired by graph", "+.3f"))
  # compare's printed columns: what answers the stunting question on path_star
  headline = ("mode", "seeds", "version", "test_nll", "first_d1", "first_d2", "first_d3",
              "no_search_d2", "first_d2_paired", "walk", "G_dev_d2", "G_dev_d3",
              "G_d2_paired", "verifier_end_max", "toward", "balanced", "cost")

  def applies(self, context: evals.Context) -> bool:
    return registry.base_name(context.settings.data.name) == NAME

  def evaluate(self, params, context: evals.Context) -> dict[str, Any]:
    return graph_figures(params, context.settings, context.headline)

  def table(self, figures: dict[str, Any], report_: dict[str, Any]) -> str:
    return table(figures, report_["best"])

  def run_figures(self, figures: dict[str, Any], report_: dict[str, Any],
                  best_rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {**run_figures(figures, best_rows), "per_graph": per_graph(figures, report_)}

  def paired(self, mode_runs: list[dict[str, Any]], base_runs: list[dict[str, Any]],
             resamples: int, seed: int) -> dict[str, Any]:
    return paired_by_graph(mode_runs, base_runs, resamples, seed)

  def compile_ahead(self, ahead: aot.Ahead, context: evals.Context, params) -> None:
    _compile_ahead(ahead, context.settings, params)
