"""Internal-lookahead probes: future-token probe and its floor, logit lens, induction, ICL."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lookahead_jax import config as config_lib
from lookahead_jax import model as model_lib
from lookahead_jax import probes
from lookahead_jax import settings as settings_lib

V, B, T = 16, 8, 32
PROBES = probes.Probes(max_offset=3, layers=(1, 2), steps=50, learning_rate=0.1, l2=0.03,
                       induction_rows=4, induction_length=8, marked=True, eval_batches=2)


def _batch(seed, b=B, t=T):
  """Random tokens in rows of two pieces (segments 1 and 2), the last tokens padding."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, V, (b, t + 1)).astype(np.int32)
  seg = np.where(np.arange(t) < t // 2, 1, 2)[None].repeat(b, 0)
  seg[:, -3:] = 0
  positions = np.where(seg == 2, np.arange(t) - t // 2, np.arange(t))
  return {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:]),
          "weights": jnp.asarray((seg > 0).astype(np.float32)),
          "segment_ids": jnp.asarray(seg, jnp.int32), "positions": jnp.asarray(positions),
          "needs_lookahead": jnp.asarray(rng.random((b, t)) < 0.3)}


@functools.lru_cache(maxsize=None)
def _future_probe():
  return jax.jit(functools.partial(probes.future_token_probe, offsets=(2,), num_classes=V,
                                   steps=PROBES.steps, learning_rate=PROBES.learning_rate,
                                   l2=PROBES.l2))


def test_future_labels_are_the_token_k_ahead_within_the_same_piece():
  batch = _batch(0)
  labels, w = probes.future_labels(batch, 3)
  inputs = np.asarray(batch["inputs"])
  seg = np.asarray(batch["segment_ids"])
  for t in range(T):
    expected = t + 3 < T and seg[0, t] > 0 and seg[0, t] == seg[0, t + 2]
    assert w[0, t] == float(expected), t
    if t + 3 < T and expected:
      assert labels[0, t] == inputs[0, t + 3]


def test_future_token_probe_is_near_perfect_on_features_holding_x_t_plus_2_and_chance_on_random():
  rng = np.random.default_rng(1)
  code = rng.normal(size=(V, 24))  # a fixed linear code of the token

  def features(batch):
    labels, _ = probes.future_labels(batch, 2)
    signal = code[np.asarray(labels)] + 0.5 * rng.normal(size=labels.shape + (24,))
    return np.stack([signal, rng.normal(size=signal.shape)]).astype(np.float32)

  fit, score = _batch(2, b=32), _batch(3, b=32)
  out = _future_probe()(features(fit), fit, features(score), score)
  assert float(out["accuracy"][0, 0]) > 0.97
  assert float(out["nll"][0, 0]) < 0.5
  # Random features: accuracy near chance 1/V, NLL near log V (the fit set is small).
  assert abs(float(out["accuracy"][1, 0]) - 1 / V) < 0.05
  assert abs(float(out["nll"][1, 0]) - math.log(V)) < 0.5


@pytest.fixture(scope="module")
def metrics(tiny_config, tiny_params):
  fn = jax.jit(functools.partial(probes.probe_metrics, config=tiny_config, probes=PROBES))
  return jax.device_get(fn(tiny_params, _batch(4), _batch(5), jax.random.key(0)))


def test_the_embedding_floor_is_the_same_fit_on_the_token_embedding_alone(metrics, tiny_config,
                                                                        tiny_params):
  fit, score = _batch(4), _batch(5)
  wte = nnx.merge(model_lib.graphdef(tiny_config), tiny_params).wte
  embed = lambda batch: wte(batch["inputs"])[None]
  floor = _future_probe()(embed(fit), fit, embed(score), score)
  np.testing.assert_allclose(metrics["future_nll"][0, 0], floor["nll"][0, 0], rtol=1e-5)
  np.testing.assert_allclose(metrics["future_accuracy"][0, 0], floor["accuracy"][0, 0])
  assert metrics["future_nll"].shape == (3, 2)  # floor + layers 1, 2; k = 2, 3
  assert metrics["marked_nll"].shape == (3,) and np.isfinite(metrics["marked_nll"]).all()


def test_logit_lens_at_the_last_layer_equals_the_models_own_nll(metrics, forward, tiny_config,
                                                               tiny_params):
  score = _batch(5)
  logits, _ = forward(tiny_params, score["inputs"], score["positions"], config=tiny_config,
                      segment_ids=score["segment_ids"])
  log_p = jax.nn.log_softmax(logits)
  token = -jnp.take_along_axis(log_p, score["targets"][..., None], -1)[..., 0]
  nll = float((token * score["weights"]).sum() / score["weights"].sum())
  assert metrics["lens_nll"].shape == (tiny_config.num_layers + 1,)
  assert abs(float(metrics["lens_nll"][-1]) - nll) < 1e-5


def test_induction_score_is_one_for_a_head_reading_the_token_after_the_earlier_occurrence():
  m, b = 6, 2
  n = 2 * m
  induction = np.zeros((n, n))
  induction[np.arange(n), 0] = 1.0  # the first half reads the first token
  induction[m + np.arange(m), np.arange(m) + 1] = 1.0
  induction[m + np.arange(m), 0] = 0.0
  self_only = np.eye(n)
  uniform = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
  attention = np.stack([induction, self_only, uniform])[None, None].repeat(b, 1)  # [1, b, 3, ..]
  scores = np.asarray(probes.prefix_matching_score(jnp.asarray(attention), m))
  assert scores.shape == (1, 3)
  assert scores[0, 0] == pytest.approx(1.0) and scores[0, 1] == pytest.approx(0.0)
  assert scores[0, 2] == pytest.approx(np.mean(1.0 / (m + np.arange(m) + 1)))


def test_induction_scores_of_a_model_are_attention_weights(metrics, tiny_config):
  scores = metrics["induction"]
  assert scores.shape == (tiny_config.num_layers, tiny_config.num_heads)
  assert ((scores >= 0) & (scores <= 1)).all()


def test_icl_score_of_a_fixed_loss_curve_equals_the_hand_computation():
  t = 128
  assert probes.icl_positions(512) == ((50, 58), (500, 508))  # Olsson et al.'s 50 and 500
  assert probes.icl_positions(128) == ((12, 14), (125, 127))
  positions = jnp.broadcast_to(jnp.arange(t), (3, t))
  curve = 3.0 - positions / 64.0  # loss falling with the position
  weights = jnp.ones((3, t)).at[0, 125].set(0.0)  # one token of the late window left out
  out = probes.icl_score(curve, positions, weights, t)
  early = (3.0 - 12 / 64 + 3.0 - 13 / 64) / 2
  late = (2 * (3.0 - 125 / 64) + 3 * (3.0 - 126 / 64)) / 5
  assert float(out["icl_early"]) == pytest.approx(early)
  assert float(out["icl_late"]) == pytest.approx(late)
  assert float(out["icl_score"]) == pytest.approx(late - early)


def test_named_figures_give_every_probe_and_the_gain_over_the_floor(metrics):
  named = probes.named(metrics, PROBES)
  best = np.min(metrics["future_nll"][1:, 0])
  assert named["future_gain_k2"] == pytest.approx(float(metrics["future_nll"][0, 0] - best))
  assert named["future_gain"] == pytest.approx(
      (named["future_gain_k2"] + named["future_gain_k3"]) / 2)
  assert {"probe_k3_L2_acc", "marked_emb_nll", "lens_L0_nll", "icl_score",
          "induction_L2H3", "induction_max"} <= set(named)


def test_probe_settings_are_derived_and_checked(tiny_run):
  from conftest import RHYME_CONFIG, load_config

  config = load_config(RHYME_CONFIG, tiny_run)
  p = settings_lib.validate(config).probes
  assert p.layers == (1, 2) and p.induction_length == 16 and not p.marked
  config.probes.enabled = False
  assert settings_lib.validate(config).probes is None
  for key, value, message in (("probes.max_offset", 1, "probes.max_offset=1: must be in"),
                              ("probes.layers", (3,), "probes.layers=(3,): layers are 1..")):
    bad = load_config(RHYME_CONFIG, {**tiny_run, key: value})
    with pytest.raises(config_lib.ConfigError, match=message.replace("(", r"\(").replace(
        ")", r"\)")):
      settings_lib.validate(bad)
  one = load_config(RHYME_CONFIG, {**tiny_run, "monitor.every": 2,
                                     "monitor.batches": 1})
  with pytest.raises(config_lib.ConfigError, match="monitor.batches=1"):
    settings_lib.validate(one)


def test_the_monitor_logs_the_probes_to_jsonl_and_the_summary(tiny_run, tmp_path, capsys):
  from lookahead_jax import aot, train
  from lookahead_jax import metrics as metrics_lib

  from conftest import RHYME_CONFIG, load_config

  config = load_config(RHYME_CONFIG, {
      **tiny_run, "train.steps": 4, "train.checkpoint_every": 0, "lookahead.width": 2,
      "lookahead.horizon": 2, "monitor.every": 2, "monitor.dev_width": 2,
      "probes.steps": 5, "probes.induction_rows": 2})
  summary = train.run(settings_lib.validate(config), str(tmp_path))
  records = [r for r in metrics_lib.read(str(tmp_path)) if "monitor_future_gain" in r]
  assert [r["step"] for r in records] == [2, 4]
  # With an aot.Ahead (as the command line runs it) the checks compile ahead and run
  # beside the loop, on copies of the parameters: the same records, at the same steps.
  with aot.Ahead() as ahead:
    train.run(settings_lib.validate(config), str(tmp_path / "ahead"), ahead)
  beside = [r for r in metrics_lib.read(str(tmp_path / "ahead")) if "monitor_future_gain" in r]
  assert beside == records
  for r in records:
    assert {"monitor_G_dev", "monitor_probe_k2_emb_nll", "monitor_lens_L2_nll",
            "monitor_induction_max", "monitor_icl_score"} <= set(r)
    assert math.isfinite(r["monitor_future_gain"])
  assert summary["monitor"]["monitor_future_gain"] == records[-1]["monitor_future_gain"]
  assert "future-token gain" in capsys.readouterr().out
  assert list((tmp_path / "tb").iterdir())  # TensorBoard events beside the JSONL
