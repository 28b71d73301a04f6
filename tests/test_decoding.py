"""Greedy, sampling and beam search: exactness, equivalences, filters, compile-once."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lookahead_jax import decoding


def _path_log_probs(forward, params, config, prompt, horizon):
  """Exhaustive: {continuation: its total log-probability} over all V**horizon paths."""
  paths = np.array(list(itertools.product(range(config.vocab_size), repeat=horizon)))
  seqs = np.concatenate([np.broadcast_to(prompt, (len(paths), len(prompt))), paths], axis=1)
  positions = np.broadcast_to(np.arange(seqs.shape[1]), seqs.shape)
  logits, _ = forward(params, jnp.asarray(seqs), jnp.asarray(positions), config=config)
  logp = np.asarray(jax.nn.log_softmax(logits))
  p = len(prompt)
  totals = sum(logp[np.arange(len(paths)), p - 1 + j, paths[:, j]] for j in range(horizon))
  return {tuple(path): float(s) for path, s in zip(paths, totals)}


@pytest.mark.parametrize("horizon", [2, 3])
def test_wide_beam_returns_exactly_the_best_enumerated_paths(forward, sharp_config, sharp_params,
                                                             horizon):
  v = sharp_config.vocab_size
  width = v ** (horizon - 1)
  prompts = np.array([[1, 2, 0, 1], [2, 2, 1, 0]])
  beams = decoding.beam_search(sharp_params, jnp.asarray(prompts), config=sharp_config,
                               beam_size=width, max_new_tokens=horizon, length_penalty=0.0)
  for r, prompt in enumerate(prompts):
    ranked = sorted(_path_log_probs(forward, sharp_params, sharp_config, prompt, horizon).items(),
                    key=lambda kv: -kv[1])[:width]
    assert [tuple(s) for s in np.asarray(beams.sequences[r])] == [path for path, _ in ranked]
    np.testing.assert_allclose(beams.log_probs[r], [s for _, s in ranked], atol=1e-5)
    np.testing.assert_allclose(beams.scores[r], beams.log_probs[r])  # length_penalty 0
    assert np.all(beams.valid[r]) and np.all(beams.lengths[r] == horizon)


def test_length_penalty_divides_scores_by_length(sharp_config, sharp_params):
  prompts = jnp.array([[1, 2, 0, 1]])
  beams = decoding.beam_search(sharp_params, prompts, None, 1.0, config=sharp_config, beam_size=3,
                               max_new_tokens=3)
  np.testing.assert_allclose(beams.scores, beams.log_probs / 3.0, rtol=1e-6)
  assert np.all(np.diff(np.asarray(beams.scores), axis=-1) <= 0)  # best first


def test_beam_width_one_equals_greedy(tiny_config, tiny_params):
  prompts = jax.random.randint(jax.random.key(0), (4, 5), 0, tiny_config.vocab_size)
  greedy = decoding.generate(tiny_params, prompts, jax.random.key(1), config=tiny_config,
                             max_new_tokens=8)
  beams = decoding.beam_search(tiny_params, prompts, config=tiny_config, beam_size=1,
                               max_new_tokens=8)
  np.testing.assert_array_equal(beams.sequences[:, 0], greedy)


def test_temperature_to_zero_equals_greedy(tiny_config, tiny_params):
  prompts = jax.random.randint(jax.random.key(2), (4, 5), 0, tiny_config.vocab_size)
  greedy = decoding.generate(tiny_params, prompts, jax.random.key(0), config=tiny_config,
                             max_new_tokens=8)
  for seed in range(3):
    cold = decoding.generate(tiny_params, prompts, jax.random.key(seed), None, 1e-5,
                             config=tiny_config, max_new_tokens=8)
    np.testing.assert_array_equal(cold, greedy)


def _reference_filter(logits, top_k, top_p):
  """Keeps the top_k largest, then the fewest most probable reaching mass top_p."""
  order = np.argsort(-logits, kind="stable")
  kept = order[:top_k] if top_k > 0 else order
  probs = np.exp(logits[kept] - logits[kept].max())
  probs /= probs.sum()
  mass, nucleus = 0.0, []
  for token, p in zip(kept, probs):
    if mass >= top_p:
      break
    nucleus.append(token)
    mass += p
  return set(int(t) for t in nucleus)


def test_top_k_and_top_p_keep_exactly_the_right_tokens():
  probs = np.array([0.05, 0.5, 0.1, 0.2, 0.15])
  logits = jnp.log(jnp.asarray(probs))
  kept = lambda k, p: set(np.flatnonzero(np.isfinite(decoding.filter_logits(logits, k, p))))
  assert kept(0, 1.0) == {0, 1, 2, 3, 4}
  assert kept(2, 1.0) == {1, 3}
  assert kept(0, 0.65) == {1, 3}        # 0.5 + 0.2 reaches 0.65
  assert kept(0, 0.75) == {1, 3, 4}     # 0.5 + 0.2 + 0.15
  assert kept(0, 0.4) == {1}            # the most probable token is always kept
  assert kept(2, 0.9) == {1, 3}         # top-p applies after top-k

  rng = np.random.default_rng(0)
  for _ in range(50):
    row = rng.normal(size=12).astype(np.float32) * 2
    k, p = int(rng.integers(0, 12)), float(rng.uniform(0.05, 1.0))
    got = set(np.flatnonzero(np.isfinite(decoding.filter_logits(jnp.asarray(row), k, p))))
    assert got == _reference_filter(row, k, p)


def test_samples_come_only_from_kept_tokens():
  logits = jnp.log(jnp.asarray([0.05, 0.5, 0.1, 0.2, 0.15]))
  draws = jax.vmap(lambda key: decoding.sample_logits(logits, key, 1.0, 0, 0.65))(
      jax.random.split(jax.random.key(0), 2000))
  counts = np.bincount(np.asarray(draws), minlength=5)
  assert set(np.flatnonzero(counts)) == {1, 3}
  np.testing.assert_allclose(counts[1] / 2000, 0.5 / 0.7, atol=0.04)


def test_second_call_with_the_same_shapes_does_not_recompile(tiny_config, tiny_params):
  prompts = jax.random.randint(jax.random.key(3), (2, 5), 0, tiny_config.vocab_size)
  kw = dict(config=tiny_config, max_new_tokens=6)
  decoding.generate(tiny_params, prompts, jax.random.key(0), None, 0.0, 0, 1.0, **kw)
  decoding.beam_search(tiny_params, prompts, None, 1.0, beam_size=2, **kw)
  sizes = decoding.generate._cache_size(), decoding.beam_search._cache_size()
  decoding.generate(tiny_params, prompts + 1, jax.random.key(5), None, 0.7, 3, 0.9, **kw)
  decoding.beam_search(tiny_params, prompts + 1, None, 0.6, beam_size=2, **kw)
  assert (decoding.generate._cache_size(), decoding.beam_search._cache_size()) == sizes


def test_left_padded_prompts_decode_like_unpadded_ones(tiny_config, tiny_params):
  prompts = np.asarray(jax.random.randint(jax.random.key(4), (2, 6), 0, tiny_config.vocab_size))
  lengths = np.array([6, 3])
  padded = prompts.copy()
  padded[1] = np.concatenate([np.zeros(3, np.int32), prompts[1, :3]])
  kw = dict(config=tiny_config, max_new_tokens=5)
  batch_greedy = decoding.generate(tiny_params, jnp.asarray(padded), jax.random.key(0),
                                   jnp.asarray(lengths), **kw)
  batch_beams = decoding.beam_search(tiny_params, jnp.asarray(padded), jnp.asarray(lengths),
                                     beam_size=3, **kw)
  for r, n in enumerate(lengths):
    alone = jnp.asarray(prompts[r:r + 1, :n])
    np.testing.assert_array_equal(
        batch_greedy[r], decoding.generate(tiny_params, alone, jax.random.key(0), **kw)[0])
    single = decoding.beam_search(tiny_params, alone, beam_size=3, **kw)
    np.testing.assert_array_equal(batch_beams.sequences[r], single.sequences[0])
    np.testing.assert_allclose(batch_beams.scores[r], single.scores[0], atol=1e-5)


def test_end_of_sequence_ends_rows_and_beams(tiny_config, tiny_params):
  prompts = jax.random.randint(jax.random.key(5), (6, 4), 0, tiny_config.vocab_size)
  greedy = np.asarray(decoding.generate(tiny_params, prompts, jax.random.key(0),
                                        config=tiny_config, max_new_tokens=10))
  eos = int(greedy[0, 2])  # a token the greedy decoder does emit
  ended = np.asarray(decoding.generate(tiny_params, prompts, jax.random.key(0), config=tiny_config,
                                       max_new_tokens=10, eos_id=eos, pad_id=15))
  for row, plain in zip(ended, greedy):
    hits = np.flatnonzero(plain == eos)
    stop = hits[0] + 1 if len(hits) else len(plain)
    np.testing.assert_array_equal(row[:stop], plain[:stop])
    assert np.all(row[stop:] == 15)

  beams = decoding.beam_search(tiny_params, prompts, config=tiny_config, beam_size=4,
                               max_new_tokens=10, eos_id=eos, pad_id=15)
  seqs, lengths = np.asarray(beams.sequences), np.asarray(beams.lengths)
  for seq, n in zip(seqs.reshape(-1, 10), lengths.reshape(-1)):
    assert eos not in seq[:n - 1] and np.all(seq[n:] == 15)
    assert n == 10 or seq[n - 1] == eos
  assert (lengths < 10).any()  # some beam did end early
  np.testing.assert_allclose(beams.scores, beams.log_probs / lengths, rtol=1e-6)


def test_beam_search_can_be_vmapped(tiny_config, tiny_params):
  prompts = jax.random.randint(jax.random.key(6), (3, 2, 5), 0, tiny_config.vocab_size)
  search = lambda p: decoding.beam_search(tiny_params, p, config=tiny_config, beam_size=2,
                                          max_new_tokens=4)
  mapped = jax.vmap(search)(prompts)
  for i in range(3):
    np.testing.assert_array_equal(mapped.sequences[i], search(prompts[i]).sequences)
