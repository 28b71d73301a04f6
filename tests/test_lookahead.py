"""All-anchor lookahead: equals per-prefix beam search, exact on tiny vocabularies, SMC
unbiased and concentrating, distributions normalised, chunking and compilation."""

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lookahead_jax import decoding
from lookahead_jax import lookahead as la_lib
from lookahead_jax import model as model_lib

# Two packed rows: row 0 holds documents of 5 and 7 tokens, row 1 one document and padding.
SEGMENTS = np.array([[1] * 5 + [2] * 7, [1] * 10 + [0] * 2])
POSITIONS = np.array([list(range(5)) + list(range(7)), list(range(10)) + [0, 0]])


# Shared settings, so the tests reuse compiled functions.
BEAM = la_lib.Lookahead(width=3, horizon=3)
SMC = la_lib.Lookahead(kind="smc", width=3, horizon=3)


def _packed_tokens(config, seed=0):
  return jax.random.randint(jax.random.key(seed), SEGMENTS.shape, 0, config.vocab_size)


@pytest.mark.parametrize("eos_id", [None, 3])
def test_all_anchor_beam_lookahead_equals_beam_search_rerun_from_each_prefix(
    tiny_config, tiny_params, eos_id):
  lookahead = la_lib.Lookahead(width=3, horizon=3, eos_id=eos_id)
  tokens = np.asarray(_packed_tokens(tiny_config))
  _, paths, _ = la_lib.teacher_forced_paths(
      tiny_params, jnp.asarray(tokens), jnp.asarray(POSITIONS),
                          jnp.asarray(SEGMENTS), config=tiny_config, lookahead=lookahead)
  np.testing.assert_array_equal(paths.valid, SEGMENTS > 0)
  # The reference: for every anchor, a fresh beam search from its own prefix (its document
  # up to and including the anchor), prompts left-padded to one length.
  anchors = list(zip(*np.nonzero(SEGMENTS)))
  width = SEGMENTS.shape[1]
  prompts = np.zeros((len(anchors), width), np.int32)
  lengths = np.zeros(len(anchors), np.int32)
  for i, (r, t) in enumerate(anchors):
    start = np.flatnonzero(SEGMENTS[r] == SEGMENTS[r, t])[0]
    lengths[i] = t + 1 - start
    prompts[i, width - lengths[i]:] = tokens[r, start:t + 1]
  beams = decoding.beam_search(tiny_params, jnp.asarray(prompts), jnp.asarray(lengths),
                               config=tiny_config, beam_size=3, max_new_tokens=3, eos_id=eos_id)
  for i, (r, t) in enumerate(anchors):
    np.testing.assert_array_equal(paths.first[r, t], beams.sequences[i, :, 0])
    stretch = (3 / beams.lengths[i]) ** lookahead.length_penalty
    np.testing.assert_allclose(paths.score[r, t], beams.log_probs[i] * stretch, atol=1e-5)


def _exhaustive(forward, params, config, tokens, t, horizon):
  """All V**horizon continuations of tokens[:t+1]: (paths [P, H], total log-probs [P]).

  Sequences keep one length for every t (one compilation): the causal model's logits at
  positions <= t + H - 1 ignore the filler after the path.
  """
  v = config.vocab_size
  paths = np.array(list(itertools.product(range(v), repeat=horizon)))
  n = len(tokens) + horizon
  seqs = np.zeros((len(paths), n), np.int32)
  seqs[:, :t + 1] = tokens[:t + 1]
  seqs[:, t + 1:t + 1 + horizon] = paths
  positions = jnp.asarray(np.broadcast_to(np.arange(n), seqs.shape))
  logits, _ = forward(params, jnp.asarray(seqs), positions, config=config)
  logp = np.asarray(jax.nn.log_softmax(logits), np.float64)
  return paths, sum(logp[np.arange(len(paths)), t + j, paths[:, j]] for j in range(horizon))


@pytest.mark.parametrize("width", [9, 27])  # V**(H-1) and V**H for V = 3, H = 3
@pytest.mark.parametrize("scheme", ["sum", "max"])
def test_wide_beam_q_equals_exhaustive_enumeration(forward, sharp_config, sharp_params, width,
                                                   scheme):
  horizon, temperature = 3, 0.7
  tokens = jnp.array([[1, 2, 0, 1, 1, 0]])
  positions = jnp.arange(6)[None]
  lookahead = la_lib.Lookahead(width=width, horizon=horizon, length_penalty=0.0)
  logits, paths, _ = la_lib.teacher_forced_paths(
      sharp_params, tokens, positions, config=sharp_config,
                               lookahead=lookahead)
  log_p = jax.nn.log_softmax(logits)
  q = np.exp(la_lib.amplify(paths, temperature, scheme).dense(log_p))[0]
  for t in range(6):
    conts, scores = _exhaustive(forward, sharp_params, sharp_config, np.asarray(tokens[0]), t,
                                horizon)
    best = np.argsort(-scores, kind="stable")[:width]  # the width best of all V**H paths
    s, first = scores[best] / temperature, conts[best, 0]
    expected = np.zeros(3)
    for w in range(3):
      if scheme == "sum":
        expected[w] = np.exp(s[first == w] - s.max()).sum()
      elif (first == w).any():
        expected[w] = np.exp(s[first == w].max() - s.max())
    np.testing.assert_allclose(q[t], expected / expected.sum(), atol=1e-5)


def test_beam_over_every_path_at_temperature_one_recovers_p(sharp_config, sharp_params):
  """With all V**H paths in the beam, sum_b softmax(S_b)[f_b = w] is the marginal p(w)."""
  lookahead = la_lib.Lookahead(width=27, horizon=3, length_penalty=0.0)
  tokens = jnp.array([[2, 0, 1, 1, 0, 2]])
  logits, paths, _ = la_lib.teacher_forced_paths(
      sharp_params, tokens, jnp.arange(6)[None], config=sharp_config,
                               lookahead=lookahead)
  log_p = jax.nn.log_softmax(logits)
  np.testing.assert_allclose(np.exp(la_lib.amplify(paths, 1.0).dense(log_p)), np.exp(log_p),
                             atol=1e-5)


def test_smc_at_beta_one_is_unbiased_for_p(tiny_config, tiny_params):
  runs, particles = 256, 16
  lookahead = la_lib.Lookahead(kind="smc", width=particles, horizon=3)
  tokens = jnp.broadcast_to(_packed_tokens(tiny_config, seed=1)[0, :6], (runs, 6))
  positions = jnp.broadcast_to(jnp.arange(6), (runs, 6))
  logits, paths, _ = la_lib.teacher_forced_paths(
      tiny_params, tokens, positions, None, jax.random.key(7), 1.0,
                               config=tiny_config, lookahead=lookahead)
  log_p = jax.nn.log_softmax(logits)
  np.testing.assert_allclose(paths.score, -np.log(particles), atol=1e-5)  # equal weights
  mean_q = np.exp(la_lib.amplify(paths).dense(log_p)).mean(axis=0)  # [T, V] over the runs
  p = np.exp(log_p[0])
  # Each run's q(w) is a mean of 16 indicators: its mean over 256 runs has standard error
  # sqrt(p (1 - p) / 4096) <= 0.008; allow 5 standard errors.
  tolerance = 5 * np.sqrt(p * (1 - p) / (runs * particles)) + 1e-6
  assert np.all(np.abs(mean_q - p) <= tolerance), np.abs(mean_q - p).max()


def test_smc_with_large_beta_concentrates_on_the_most_probable_path(forward, sharp_config,
                                                                   sharp_params):
  horizon = 3
  lookahead = la_lib.Lookahead(kind="smc", width=64, horizon=horizon)
  tokens = jnp.array([[1, 2, 0, 1, 1, 0]])
  logits, paths, _ = la_lib.teacher_forced_paths(sharp_params, tokens, jnp.arange(6)[None], None,
                               jax.random.key(3), 30.0, config=sharp_config, lookahead=lookahead)
  q = np.exp(la_lib.amplify(paths).dense(jax.nn.log_softmax(logits)))[0]
  for t in range(6):
    conts, scores = _exhaustive(forward, sharp_params, sharp_config, np.asarray(tokens[0]), t,
                                horizon)
    best_first = conts[np.argmax(scores), 0]
    assert q[t, best_first] > 0.95, (t, q[t], scores.max())


@pytest.mark.parametrize("kind", ["beam", "smc"])
def test_q_and_every_mixture_sum_to_one_and_stay_finite_where_p_has_mass(tiny_config,
                                                                         tiny_params, kind):
  lookahead = BEAM if kind == "beam" else SMC
  tokens = _packed_tokens(tiny_config, seed=2)
  logits, paths, _ = la_lib.teacher_forced_paths(tiny_params, tokens, jnp.asarray(POSITIONS),
                               jnp.asarray(SEGMENTS), jax.random.key(0), 2.0,
                               config=tiny_config, lookahead=lookahead)
  log_p = jax.nn.log_softmax(logits)
  for scheme in la_lib.SCHEMES:
    log_q = la_lib.amplify(paths, 0.5, scheme).dense(log_p)
    np.testing.assert_allclose(jnp.exp(log_q).sum(-1), 1.0, atol=1e-5)
    for mixture, lams in (("linear", [0.0, 0.3, 0.99]), ("loglinear", [0.0, 0.5, 1.0])):
      for lam in lams:
        log_mix = la_lib.mix(log_p, log_q, lam, mixture)
        assert np.all(np.isfinite(log_mix)), (scheme, mixture, lam)
        np.testing.assert_allclose(jnp.exp(log_mix).sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(la_lib.mix(log_p, log_q, 0.0), log_p, atol=1e-6)


@pytest.mark.parametrize("kind", ["beam", "smc"])
def test_sparse_q_at_the_target_equals_the_dense_computation(tiny_config, tiny_params, kind):
  lookahead = BEAM if kind == "beam" else SMC
  tokens = _packed_tokens(tiny_config, seed=6)
  positions = jnp.asarray(POSITIONS + 21)  # some anchors without a lookahead too
  logits, paths, _ = la_lib.teacher_forced_paths(
      tiny_params, tokens, positions, jnp.asarray(SEGMENTS),
                               jax.random.key(2), 3.0, config=tiny_config, lookahead=lookahead)
  assert not paths.valid[SEGMENTS > 0].all()
  log_p = jax.nn.log_softmax(logits)
  targets = jnp.roll(tokens, -1, axis=1)
  for scheme, temperature in (("sum", 1.0), ("sum", 0.3), ("max", 2.0)):
    amp = la_lib.amplify(paths, temperature, scheme)
    dense = amp.dense(log_p)
    np.testing.assert_allclose(amp.expect(jnp.ones_like(amp.log_q)), 1.0, atol=1e-5)
    p_at_tokens = jnp.exp(jnp.take_along_axis(log_p, amp.tokens, axis=-1))
    np.testing.assert_allclose(
        jnp.where(paths.valid, amp.expect(p_at_tokens), 0.0),
        jnp.where(paths.valid, (jnp.exp(dense) * jnp.exp(log_p)).sum(-1), 0.0), atol=1e-6)
    for mixture, lams in (("linear", [0.0, 0.4, 0.9]), ("loglinear", [0.0, 0.5, 1.0])):
      for lam in lams:
        expected = la_lib.token_log_prob(la_lib.mix(log_p, dense, lam, mixture), targets)
        got = la_lib.mix_at(amp, log_p, targets, lam, mixture)
        np.testing.assert_allclose(got, expected, atol=2e-5, err_msg=f"{scheme} {mixture} {lam}")


@pytest.mark.parametrize("kind", ["beam", "smc"])
def test_chunked_anchors_equal_unchunked(tiny_config, tiny_params, kind):
  tokens = _packed_tokens(tiny_config, seed=3)
  args = (tiny_params, tokens, jnp.asarray(POSITIONS), jnp.asarray(SEGMENTS), jax.random.key(1))
  lookahead = BEAM if kind == "beam" else SMC
  whole = la_lib.teacher_forced_paths(*args, config=tiny_config, lookahead=lookahead)[1]
  chunked = la_lib.teacher_forced_paths(*args, config=tiny_config,
                         lookahead=dataclasses.replace(lookahead, chunk=5))[1]
  np.testing.assert_array_equal(whole.first, chunked.first)
  np.testing.assert_allclose(whole.score, chunked.score, atol=1e-6)


@pytest.mark.parametrize("kind", ["beam", "smc"])
def test_only_needed_anchors_run_and_their_paths_are_the_full_computations(
    tiny_config, tiny_params, kind):
  tokens = _packed_tokens(tiny_config, seed=6)
  positions, segments = jnp.asarray(POSITIONS), jnp.asarray(SEGMENTS)
  lookahead = dataclasses.replace(BEAM if kind == "beam" else SMC, chunk=3)
  logits, cache = model_lib.forward(tiny_params, tokens, positions, config=tiny_config,
                                    segment_ids=segments)
  # Row 0 needs 4 anchors (two chunks, the second partly padding), row 1 needs 1.
  needed = np.zeros(SEGMENTS.shape, bool)
  needed[0, [1, 6, 7, 11]] = needed[1, 4] = True
  run = functools.partial(la_lib.paths_from_pass, tiny_params, logits, cache, positions,
                          segments, jax.random.key(2), 1.5, config=tiny_config,
                          lookahead=lookahead)
  full, some = run(), run(jnp.asarray(needed))
  np.testing.assert_array_equal(some.valid, np.asarray(full.valid) & needed)
  np.testing.assert_array_equal(np.asarray(some.first)[needed], np.asarray(full.first)[needed])
  np.testing.assert_allclose(np.asarray(some.score)[needed], np.asarray(full.score)[needed],
                             atol=1e-6)
  assert not np.asarray(some.valid)[~needed].any()


def test_anchors_whose_lookahead_passes_max_len_are_masked_to_p(tiny_config, tiny_params):
  # Positions shifted so that the last anchors sit near max_len = 32: an anchor at position
  # p needs positions p+1 .. p+H-1 for its H - 1 further tokens, so p + H <= 32.
  positions = POSITIONS + 23
  tokens = _packed_tokens(tiny_config, seed=4)
  logits, paths, _ = la_lib.teacher_forced_paths(
      tiny_params, tokens, jnp.asarray(positions), jnp.asarray(SEGMENTS),
                               config=tiny_config, lookahead=BEAM)
  expected = (SEGMENTS > 0) & (positions + BEAM.horizon <= tiny_config.max_len)
  assert expected.sum() < (SEGMENTS > 0).sum()
  np.testing.assert_array_equal(paths.valid, expected)
  log_p = jax.nn.log_softmax(logits)
  log_q = la_lib.amplify(paths).dense(log_p)
  np.testing.assert_array_equal(log_q[~expected], log_p[~expected])
  assert not np.allclose(log_q[expected], log_p[expected])


def test_lookahead_compiles_once_per_shape(tiny_config, tiny_params):
  tokens = _packed_tokens(tiny_config, seed=5)
  args = (jnp.asarray(POSITIONS), jnp.asarray(SEGMENTS))
  la_lib.teacher_forced_paths(
      tiny_params, tokens, *args, jax.random.key(0), 1.0, config=tiny_config,
               lookahead=SMC)
  size = la_lib.teacher_forced_paths._cache_size()
  la_lib.teacher_forced_paths(
      tiny_params, tokens + 1, *args, jax.random.key(1), 3.0, config=tiny_config,
               lookahead=SMC)
  assert la_lib.teacher_forced_paths._cache_size() == size


@pytest.mark.parametrize("tau", [0.5, 1.0, 3.0])
def test_the_beam_control_is_top_b_of_p_renormalised_at_tau(tiny_config, tiny_params, tau):
  tokens = _packed_tokens(tiny_config, seed=6)
  logits, found, control = la_lib.teacher_forced_paths(
      tiny_params, tokens, jnp.asarray(POSITIONS), jnp.asarray(SEGMENTS),
      config=tiny_config, lookahead=la_lib.Lookahead(width=3, horizon=4))
  log_p = np.asarray(jax.nn.log_softmax(logits), np.float64)
  top = np.argsort(-log_p, axis=-1)[..., :3]
  sharpened = np.exp(np.take_along_axis(log_p, top, -1) / tau)
  expected = np.zeros_like(log_p)
  np.put_along_axis(expected, top, sharpened / sharpened.sum(-1, keepdims=True), -1)
  q_1 = np.exp(np.asarray(la_lib.amplify(control, tau).dense(jnp.asarray(log_p, jnp.float32))))
  valid = np.asarray(found.valid)
  np.testing.assert_allclose(q_1[valid], expected[valid], atol=1e-6)
  np.testing.assert_array_equal(control.valid, found.valid)  # the same anchors


def test_the_smc_control_draws_the_lookaheads_first_tokens(tiny_config, tiny_params):
  """Same keys: the control's N draws are the lookahead's first tokens before resampling;
  at horizon 1 (no resampling) the two are the same."""
  tokens = _packed_tokens(tiny_config, seed=7)
  args = (tiny_params, tokens, jnp.asarray(POSITIONS), jnp.asarray(SEGMENTS),
          jax.random.key(3), 2.0)
  smc1 = la_lib.Lookahead(kind="smc", width=5, horizon=1)
  _, found, control = la_lib.teacher_forced_paths(*args, config=tiny_config, lookahead=smc1)
  np.testing.assert_array_equal(found.first, control.first)
  np.testing.assert_allclose(found.score, control.score, atol=1e-5)


def test_gain_and_helps_fraction():
  log_p = jnp.log(jnp.array([[0.5, 0.2, 0.1]]))
  log_mix = jnp.log(jnp.array([[0.6, 0.1, 0.1]]))
  weights = jnp.array([[1.0, 1.0, 0.0]])
  gain, helps = la_lib.gain(log_p, log_mix, weights)
  np.testing.assert_allclose(gain, (np.log(0.6 / 0.5) + np.log(0.1 / 0.2)) / 2, rtol=1e-6)
  np.testing.assert_allclose(helps, 0.5)


def test_settings_the_model_cannot_run_are_one_line_errors(tiny_config):
  with pytest.raises(ValueError, match="width=17 beams exceed the vocabulary"):
    la_lib.Lookahead(width=17).check(tiny_config)
  with pytest.raises(ValueError, match="horizon=40 exceeds the model's max_len=32"):
    la_lib.Lookahead(horizon=40).check(tiny_config)
  with pytest.raises(ValueError, match="kind='greedy'"):
    la_lib.Lookahead(kind="greedy")


def test_amplified_sampling_with_one_beam_of_one_token_and_all_weight_on_q_is_greedy(
    tiny_config, tiny_params):
  prompts = jax.random.randint(jax.random.key(8), (3, 5), 0, tiny_config.vocab_size)
  greedy = decoding.generate(tiny_params, prompts, jax.random.key(0), config=tiny_config,
                             max_new_tokens=6)
  amplified = la_lib.sample_amplified(tiny_params, prompts, jax.random.key(1), None, 1.0, 1.0,
                              config=tiny_config, lookahead=la_lib.Lookahead(width=1, horizon=1),
                              max_new_tokens=6, mixture="loglinear")
  np.testing.assert_array_equal(amplified, greedy)  # q is one-hot on the argmax


def test_amplified_sampling_with_one_mcts_child_and_all_weight_on_q_is_greedy(
    tiny_config, tiny_params):
  prompts = jax.random.randint(jax.random.key(8), (3, 5), 0, tiny_config.vocab_size)
  greedy = decoding.generate(tiny_params, prompts, jax.random.key(0), config=tiny_config,
                             max_new_tokens=6)
  one_child = la_lib.Lookahead(kind="mcts", width=1, horizon=3)  # q: one-hot on p's argmax
  amplified = la_lib.sample_amplified(tiny_params, prompts, jax.random.key(1), None, 1.0, 1.0,
                                      config=tiny_config, lookahead=one_child,
                                      max_new_tokens=6, mixture="loglinear")
  np.testing.assert_array_equal(amplified, greedy)


def test_amplified_decoding_takes_the_mixtures_most_probable_token(tiny_config, tiny_params):
  prompts = jax.random.randint(jax.random.key(8), (3, 5), 0, tiny_config.vocab_size)
  greedy = decoding.generate(tiny_params, prompts, jax.random.key(0), config=tiny_config,
                             max_new_tokens=6)
  search = la_lib.Lookahead(kind="mcts", width=4, horizon=3)
  decode = functools.partial(la_lib.sample_amplified, tiny_params, prompts, config=tiny_config,
                             lookahead=search, max_new_tokens=6, greedy=True)
  # No weight on q: p's argmax, whatever the key.
  for key in (1, 2):
    np.testing.assert_array_equal(decode(jax.random.key(key), None, 1.0, 0.0), greedy)
  # All weight on q: the search's own move, the same for every key (the search is
  # deterministic), and a draw from the same mixture differs from it somewhere.
  planned = decode(jax.random.key(1), None, 1.0, 1.0)
  np.testing.assert_array_equal(decode(jax.random.key(2), None, 1.0, 1.0), planned)
  drawn = [la_lib.sample_amplified(tiny_params, prompts, jax.random.key(k), None, 1.0, 1.0,
                                   config=tiny_config, lookahead=search, max_new_tokens=6)
           for k in range(4)]
  assert any(not np.array_equal(d, planned) for d in drawn)


def test_amplified_sampling_stops_at_eos(tiny_config, tiny_params):
  prompts = jax.random.randint(jax.random.key(9), (4, 5), 0, tiny_config.vocab_size)
  lookahead = la_lib.Lookahead(kind="smc", width=3, horizon=2, eos_id=3)
  out = np.asarray(la_lib.sample_amplified(
      tiny_params, prompts, jax.random.key(2), None, 1.0, 0.5, 2.0,
                                   config=tiny_config, lookahead=lookahead, max_new_tokens=12,
                                   pad_id=15))
  for row in out:
    ends = np.flatnonzero(row == 3)
    if len(ends):
      assert np.all(row[ends[0] + 1:] == 15)
