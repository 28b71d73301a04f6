"""The path-star evaluator: first steps by goal depth, decoding, verifier strength."""

import dataclasses
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lookahead_jax import decoding
from lookahead_jax import model as model_lib
from lookahead_jax import settings as settings_lib
from lookahead_jax.data import builders, path_star
from lookahead_jax.evals import path_star as ps_eval

from conftest import tiny_path_star


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  config = tiny_path_star(tmp_path_factory.mktemp("tfds_path_star"))
  config.lookahead.horizon, config.eval.widths = 4, (2,)
  settings = settings_lib.validate(config)
  params = model_lib.init(settings.model, jax.random.key(0))
  params = jax.tree.map(lambda x: 3.0 * x, params)  # peaked predictions, not near uniform
  return config, settings, params


def test_verifier_strength_equals_a_one_graph_at_a_time_computation(setup, forward):
  config, settings, params = setup
  tok, cfg = settings.tokenizer, settings.model
  graphs = ps_eval.test_graphs(settings.data, "test", 4)  # the reference is one graph at a time
  batched = ps_eval.verifier_strength(params, graphs, tok, cfg)

  def logits_of(ids):  # one row, right-padded (causal: the padding changes no earlier logit)
    tokens = jnp.asarray([ids + [tok.pad_id] * (cfg.max_len - len(ids))])
    return forward(params, tokens, jnp.arange(cfg.max_len)[None], config=cfg)[0][0, :len(ids)]

  per_graph = []
  for x in graphs:
    prompt = [tok.eod_id] + tok.encode_instance(x.edges, x.source, x.goal)
    arms = []
    for arm in path_star.arms(x):
      if arm[0] == x.path[1]:
        continue
      ids = prompt + [tok.edge_id(u, v) for u, v in zip([x.source] + arm[:-1], arm)]
      for _ in range(1 + ps_eval.AFTER_LEAF):  # greedy past the leaf, one token at a time
        ids.append(int(logits_of(ids)[-1].argmax()))
      lp = np.asarray(jax.nn.log_softmax(logits_of(ids)))
      leaf = len(prompt) + len(arm) - 1  # the input position of the leaf's edge
      walk = [lp[j - 1, ids[j]] for j in range(len(prompt) + 1, leaf + 1)]
      arms.append([np.mean(walk) if walk else np.nan,  # an arm of one node has no walk
                   lp[len(prompt):leaf + 1, tok.END_PATH].max(), lp[leaf].max(),
                   lp[leaf + 1:leaf + 1 + ps_eval.AFTER_LEAF].max(-1).mean()])
    with np.errstate(all="ignore"), warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)
      per_graph.append(np.nanmean(arms, axis=0))
  expected = np.nanmean(per_graph, axis=0)
  for k, name in enumerate(("walk", "end_max", "leaf_max", "after_max")):
    assert batched[name] == pytest.approx(expected[k], abs=1e-4), name


def test_first_steps_by_depth_and_decoding(setup):
  config, settings, params = setup
  figures = ps_eval.graph_figures(params, settings, {
      "kind": "beam", "width": 2, "horizon": 4, "temperature": 1.0, "lam": 0.9,
      "scheme": "sum", "mixture": "linear"})
  graphs = ps_eval.test_graphs(settings.data, "test")
  records = builders.data_source("path_star", "test", config.data.data_dir,
                                 **config.data.options.to_dict())
  depths = sorted({x.depth for x in graphs})
  assert figures["depths"] == depths == [1, 2, 3] and figures["chance"] == 0.5
  # Every graph of the test split, as the main evaluation scores them.
  assert sum(figures["counts"].values()) == figures["graphs"] == len(records) == 24
  assert figures["split"] == "test"
  assert set(figures["first_step"]) == set(ps_eval.METHODS)
  # Teacher-forced first steps equal the argmax of a direct forward pass, per depth.
  tok = settings.tokenizer
  right = {d: [] for d in depths}
  for x in graphs:
    prompt = [tok.eod_id] + tok.encode_instance(x.edges, x.source, x.goal)
    logits, _ = model_lib.forward(params, jnp.asarray([prompt]),
                                  jnp.arange(len(prompt))[None], config=settings.model)
    right[x.depth].append(int(logits[0, -1].argmax()) == tok.edge_id(x.path[0], x.path[1]))
  for d in depths:
    assert figures["first_step"]["teacher_forced"][str(d)] == pytest.approx(np.mean(right[d]))
    for method in ("greedy", "beam", "sample", "amplified"):
      # A path can only reach the goal through the right first step.
      assert figures["goal"][method][str(d)] <= figures["first_step"][method][str(d)] + 1e-9
  # Greedy decoding's first step is the teacher-forced argmax.
  assert figures["first_step"]["greedy"] == figures["first_step"]["teacher_forced"]
  # Per graph, in the split's order: the goal depth and 0/1 per method, whose means by
  # depth are the figures.
  per = figures["per_graph"]
  assert per["depth"] == [int(records[i]["depth"]) for i in range(len(records))]
  assert set(per["first_step"]) == set(ps_eval.METHODS) and set(per["goal"]) == set(
      ps_eval.METHODS) - {"teacher_forced"}
  depth = np.asarray(per["depth"])
  for key, by_depth in (("first_step", figures["first_step"]), ("goal", figures["goal"])):
    for method, right in per[key].items():
      assert len(right) == 24 and set(right) <= {0, 1} and all(type(v) is int for v in right)
      for d in depths:
        assert np.mean(np.asarray(right)[depth == d]) == pytest.approx(by_depth[method][str(d)])
  # The no-search rules on the same graphs, and the best of them per depth.
  rules = path_star.no_search_accuracy(graphs)
  assert figures["no_search"]["rules"] == {
      name: {str(d): a for d, a in per_depth.items()} for name, per_depth in rules.items()}
  best = figures["no_search"]["best"]
  assert set(best) == {str(d) for d in depths}
  for d in depths:
    assert best[str(d)]["accuracy"] == max(a[d] for a in rules.values())
    assert rules[best[str(d)]["rule"]][d] == best[str(d)]["accuracy"]
  json.dumps(figures)  # the report stores it
  groups = {"2": {"G": 0.1, "G_ci": [0.05, 0.15], "tokens": 9}}
  text = ps_eval.table(figures, {"test_groups": groups})
  assert "depth 2" in text and "+0.100 [+0.050, +0.150]" in text and "verifier strength" in text
  line = next(t for t in text.splitlines() if "no-search rules" in t)
  assert f"{best['2']['accuracy']:.3f} {best['2']['rule']}" in line
  cols = ps_eval.run_figures(figures, {"dev": {"test_groups": groups}})
  assert cols["G_dev_d2"] == 0.1 and cols["G_dev_d2_ci"] == [0.05, 0.15]
  assert cols["first_d2"] == figures["first_step"]["teacher_forced"]["2"]
  assert cols["walk"] == figures["walk"] and "verifier_end_max" in cols
  assert cols["no_search_d2"] == best["2"]["accuracy"]
  assert {k for k in cols if not k.endswith(("_ci", "_n"))} <= {
      c.key for c in ps_eval.Evaluator.columns}


def test_sampling_is_reproducible_and_amplified_with_lam_0_is_plain_sampling(setup):
  config, settings, params = setup
  graphs = ps_eval.test_graphs(settings.data, "test")
  tok = settings.tokenizer
  plain = {"kind": "beam", "width": 2, "horizon": 4, "temperature": 1.0, "lam": 0.0,
           "scheme": "sum", "mixture": "linear"}
  one = ps_eval.decoded(params, graphs, tok, settings, 2, plain, seed=3)
  two = ps_eval.decoded(params, graphs, tok, settings, 2, plain, seed=3)
  for method in one:
    np.testing.assert_array_equal(one[method]["first"], two[method]["first"])
  np.testing.assert_array_equal(one["amplified"]["first"], one["sample"]["first"])
  np.testing.assert_array_equal(one["amplified"]["goal"], one["sample"]["goal"])


@pytest.mark.parametrize("length_penalty", [0.0, 0.5])
def test_beam_decoding_ranks_by_the_lookaheads_length_penalty(setup, length_penalty,
                                                              monkeypatch):
  config, settings, params = setup
  settings = dataclasses.replace(settings, lookahead=dataclasses.replace(
      settings.lookahead, length_penalty=length_penalty))
  graphs = ps_eval.test_graphs(settings.data, "test")
  tok = settings.tokenizer
  used, beam_search = [], decoding.beam_search

  def spy(params, prompts, lengths, penalty, **kwargs):
    used.append(penalty)
    return beam_search(params, prompts, lengths, penalty, **kwargs)

  monkeypatch.setattr(ps_eval.decoding, "beam_search", spy)
  got = ps_eval.decoded(params, graphs, tok, settings, 2, None, seed=0)["beam"]
  assert used == [length_penalty]  # one length rule: the lookahead's (q_H's)
  prompts, lengths = decoding.left_pad([ps_eval.prompt(tok, x) for x in graphs], tok.pad_id)
  new = max(len(tok.encode_path(x.path)) for x in graphs) + 1
  want = beam_search(params, prompts, lengths, length_penalty, config=settings.model,
                     beam_size=2, max_new_tokens=new, eos_id=tok.END_PATH)
  first = [int(ids[tok.first_step]) == tok.encode_path(x.path)[tok.first_step]
           for x, ids in zip(graphs, np.asarray(want.sequences[:, 0]))]
  np.testing.assert_array_equal(got["first"], first)
