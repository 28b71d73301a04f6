"""The generation report: text figures by hand, samplers reproducible, amplified with
lam = 0 is plain sampling, the report's NLL is the model's, testbed judges, errors."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lookahead_jax import config as config_lib
from lookahead_jax import decoding
from lookahead_jax import model as model_lib
from lookahead_jax import settings as settings_lib
from lookahead_jax.data import rhyme
from lookahead_jax.evals import generation

from conftest import RHYME_CONFIG, load_config, tiny_path_star


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """A path_star testbed of small graphs and a random model with peaked predictions."""
  config = tiny_path_star(tmp_path_factory.mktemp("tfds_path_star"))
  config.lookahead.horizon, config.lookahead.width = 3, 2
  config.generate.update(prompts=10, batch_size=4, new_tokens=5, beams=2)
  settings = settings_lib.validate(config)
  params = jax.tree.map(lambda x: 3.0 * x, model_lib.init(settings.model, jax.random.key(0)))
  return config, settings, params


def test_text_figures_equal_counts_by_hand():
  # 4-grams 1234 2341 3412 4123 1234 2341: 4 unique of 6.
  assert generation.seq_rep([1, 2, 3, 4, 1, 2, 3, 4, 1], 4) == pytest.approx(1 - 4 / 6)
  assert np.isnan(generation.seq_rep([1, 2, 3], 4))
  # [5 | 5 1 5 2], window 2: 5 (after 5) yes, 1 no, 5 (after 5 1) yes, 2 (after 1 5) no.
  assert generation.rep_l([5], [5, 1, 5, 2], 2) == 0.5
  assert generation.rep_l([7, 1], [3, 1], 1) == 0.0  # 1 is 2 tokens back, past the window
  # unigrams 1 2 1 2 1: 2 unique of 5; bigrams 12 21 21: 2 unique of 3.
  assert generation.distinct([[1, 2, 1], [2, 1]], 1) == pytest.approx(2 / 5)
  assert generation.distinct([[1, 2, 1], [2, 1]], 2) == pytest.approx(2 / 3)
  assert generation.continuation([3, 4, 1, 5], eod_id=1, pad_id=0) == [3, 4]


def test_each_sampler_is_reproducible_and_amplified_with_lam_0_is_plain_sampling(setup):
  config, settings, params = setup
  found = generation.prompts(settings)
  tokens, lengths = decoding.left_pad(found["prompts"][:4], settings.tokenizer.pad_id)
  key = jax.random.key(3)

  def run(sampler, settings=settings):
    return np.asarray(generation.continue_prompts(
        sampler, params, tokens, lengths, key, 5, settings=settings, beams=2, temperature=1.0))

  out = {s: run(s) for s in ("greedy", "beam", "sample", "amplified")}
  for sampler, first in out.items():
    np.testing.assert_array_equal(run(sampler), first, err_msg=sampler)
  assert not np.array_equal(out["amplified"], out["sample"])  # lam 0.5: the mixture differs
  without_q = dataclasses.replace(settings.mixture, lam=0.0)
  np.testing.assert_array_equal(
      run("amplified", dataclasses.replace(settings, mixture=without_q)), out["sample"])


def test_the_reports_nll_is_the_models_teacher_forced_nll(setup):
  _, settings, params = setup
  prompts = [[1, 7, 8, 9], [1, 10], [1, 11, 12]]
  conts = [[20, 21], [22, 23, 24], []]
  sums, counts = generation.nll(params, prompts, conts, settings=settings, batch_size=2)
  np.testing.assert_array_equal(counts, [2, 3, 0])
  for p, c, got in zip(prompts, conts, sums):
    ids = jnp.asarray([p + c])
    logits, _ = model_lib.forward(params, ids, jnp.arange(len(p + c))[None],
                                  config=settings.model)
    lp = np.asarray(jax.nn.log_softmax(logits[0]))
    want = -sum(lp[len(p) - 1 + i, t] for i, t in enumerate(c))
    assert got == pytest.approx(want, abs=1e-4)


def test_the_report_on_path_star_table_plot_and_the_held_out_paths_reach_their_goals(
    setup, tmp_path):
  config, settings, params = setup
  found = generation.prompts(settings)
  gen = generation.run(params, found, settings, str(tmp_path))
  rows = gen["rows"]
  assert list(rows) == [generation.REFERENCE, "greedy", "beam", "sample", "amplified"]
  assert rows[generation.REFERENCE]["goal"]["mean"] == 1.0  # the true paths
  assert rows["greedy"]["goal"]["mean"] < 1.0  # a random model
  for sampler, row in rows.items():
    lo, hi = row["nll"]["ci"]
    assert lo <= row["nll"]["mean"] <= hi, sampler
    assert (sampler == generation.REFERENCE) == ("tok_s" not in row)
  saved = json.loads((tmp_path / "generate" / "report.json").read_text())
  assert saved["rows"]["beam"]["goal"] == rows["beam"]["goal"]
  assert (tmp_path / "generate" / "seq_rep_vs_nll.png").stat().st_size > 0
  assert "reaches goal" in (tmp_path / "generate" / "table.md").read_text()


def test_rhyme_prompts_end_at_a_poems_first_line_and_the_true_second_lines_rhyme(
    tiny_run, rhyme_data_dir):
  # Rows of 96 bytes: continuations of 48, room for a second line.
  config = load_config(RHYME_CONFIG, dict(tiny_run, **{"generate.prompts": 8,
                                                       "data.seq_len": 96}))
  settings = settings_lib.validate(config)
  found = generation.prompts(settings)
  tok = settings.tokenizer
  assert len(found["prompts"]) == 8
  for p in found["prompts"]:
    text = tok.decode(p[1:])
    assert text.startswith("A poem:\n") and text.count("\n") == 2
  refs = [r[:config.generate.new_tokens] for r in found["references"]]
  judged = rhyme.judge(tok, found["records"], refs)["rhymed"]
  np.testing.assert_array_equal(judged, 1.0)
  wrong = [tok.encode("a line that ends in nothing\n")] * 8
  np.testing.assert_array_equal(
      rhyme.judge(tok, found["records"], wrong)["rhymed"], 0.0)


@pytest.mark.parametrize("key, value, named", [
    ("generate.samplers", ("greedy", "nucleus"), "generate.samplers"),
    ("generate.new_tokens", 40, "generate.new_tokens"),
    ("generate.prompts", 0, "generate.prompts"),
])
def test_bad_generate_settings_are_one_line_errors(setup, key, value, named):
  config = setup[0]
  bad = config.copy_and_resolve_references()
  bad.update_from_flattened_dict({key: value})
  with pytest.raises(config_lib.ConfigError, match=named) as e:
    settings_lib.validate(bad)
  assert "\n" not in str(e.value)


def test_a_missing_test_split_is_a_one_line_error(setup):
  _, settings, _ = setup
  bad = dataclasses.replace(settings, eval=dataclasses.replace(settings.eval,
                                                                test_split="heldout"))
  with pytest.raises(config_lib.ConfigError, match="eval.test_split") as e:
    generation.prompts(bad)
  assert "\n" not in str(e.value)
