"""The GPT forward pass: cache paths equal teacher forcing, segments, dtypes, myopic, remat."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lookahead_jax import model as model_lib


def _tokens(config, b, n, seed=0):
  tokens = jax.random.randint(jax.random.key(seed), (b, n), 0, config.vocab_size)
  return tokens, jnp.broadcast_to(jnp.arange(n), (b, n))


def test_one_token_at_a_time_with_cache_equals_full_causal_forward(forward, tiny_config,
                                                                  tiny_params):
  tokens, positions = _tokens(tiny_config, 3, 12)
  full, _ = forward(tiny_params, tokens, positions, config=tiny_config)
  cache = model_lib.Cache.empty(tiny_config, 3, 16)
  steps = []
  for i in range(12):
    logits, cache = forward(tiny_params, tokens[:, i:i + 1], positions[:, i:i + 1], cache,
                            config=tiny_config)
    steps.append(logits)
  np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5, rtol=0)
  assert int(cache.index) == 12


def test_prefill_then_decode_equals_full_forward(forward, tiny_config, tiny_params):
  tokens, positions = _tokens(tiny_config, 2, 10, seed=1)
  full, _ = forward(tiny_params, tokens, positions, config=tiny_config)
  cache = model_lib.Cache.empty(tiny_config, 2, 10)
  first, cache = forward(tiny_params, tokens[:, :7], positions[:, :7], cache, config=tiny_config)
  rest, _ = forward(tiny_params, tokens[:, 7:], positions[:, 7:], cache, config=tiny_config)
  np.testing.assert_allclose(np.concatenate([first, rest], axis=1), full, atol=1e-5, rtol=0)


def test_rows_reading_a_shared_prefix_equal_the_teacher_forced_pass(forward, tiny_config,
                                                                   tiny_params):
  tokens, positions = _tokens(tiny_config, 1, 10, seed=2)
  full, teacher = forward(tiny_params, tokens, positions, config=tiny_config)
  k, v, _ = teacher.row(0)
  # Three rows read tokens 0..5 from the shared prefix, then decode 6, 7, 8 themselves.
  cache = model_lib.Cache.empty(tiny_config, 3, 3).with_prefix(k, v, jnp.arange(10) < 6)
  for t in (6, 7, 8):
    logits, cache = forward(tiny_params, jnp.full((3, 1), tokens[0, t]),
                                      jnp.full((3, 1), t), cache, config=tiny_config)
    np.testing.assert_allclose(logits[:, 0], jnp.broadcast_to(full[0, t], (3, 16)), atol=1e-5)


def test_packed_segments_do_not_attend_to_each_other(forward, tiny_config, tiny_params):
  a, _ = _tokens(tiny_config, 1, 5, seed=3)
  b, _ = _tokens(tiny_config, 1, 7, seed=4)
  alone_b, _ = forward(tiny_params, b, jnp.arange(7)[None], config=tiny_config)
  packed = jnp.concatenate([a, b], axis=1)
  positions = jnp.concatenate([jnp.arange(5), jnp.arange(7)])[None]
  segments = jnp.array([[1] * 5 + [2] * 7])
  logits, _ = forward(tiny_params, packed, positions, config=tiny_config,
                                segment_ids=segments)
  np.testing.assert_allclose(logits[:, 5:], alone_b, atol=1e-5)


def test_bfloat16_compute_stays_close_to_float32(forward, tiny_config, tiny_params):
  tokens, positions = _tokens(tiny_config, 2, 16, seed=5)
  f32, _ = forward(tiny_params, tokens, positions, config=tiny_config)
  bf16_config = dataclasses.replace(tiny_config, dtype="bfloat16")
  bf16, cache = forward(tiny_params, tokens, positions, config=bf16_config)
  assert cache.k[0].dtype == jnp.bfloat16 and bf16.dtype == jnp.float32
  np.testing.assert_allclose(bf16, f32, atol=2e-2, rtol=0)


def test_myopic_keeps_values_but_cuts_gradient_into_earlier_keys_and_values(forward, tiny_config,
                                                                            tiny_params):
  tokens, positions = _tokens(tiny_config, 1, 8, seed=6)
  plain, _ = forward(tiny_params, tokens, positions, config=tiny_config)
  myopic, _ = forward(tiny_params, tokens, positions, config=tiny_config, myopic=True)
  np.testing.assert_allclose(myopic, plain, atol=1e-6)

  # The loss at the last position as a function of position 0's embedding row (used by
  # position 0 only): it reaches position 0 only through attention to its keys/values.
  def last_loss(row_0, myopic):
    def with_row(path, x):
      names = [getattr(k, "key", None) for k in path]
      return x.at[0].set(row_0) if names[:2] == ["wpe", "embedding"] else x

    params = jax.tree_util.tree_map_with_path(with_row, tiny_params)
    logits, _ = forward(params, tokens, positions, config=tiny_config, myopic=myopic)
    return jax.nn.logsumexp(logits[0, -1])

  row_0 = tiny_params["wpe"]["embedding"][0]
  grad = jax.jit(jax.grad(last_loss), static_argnums=1)
  assert np.abs(grad(row_0, False)).max() > 1e-4
  np.testing.assert_array_equal(grad(row_0, True), 0.0)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_remat_gives_the_same_gradients(forward, tiny_config, tiny_params, dropout):
  tokens, positions = _tokens(tiny_config, 2, 8, seed=7)
  config = dataclasses.replace(tiny_config, dropout=dropout)

  def loss(params, config):
    logits, _ = forward(params, tokens, positions, config=config, dropout_rng=jax.random.key(1))
    return jnp.mean(logits**2)

  grad = jax.jit(jax.grad(loss), static_argnums=1)
  plain = grad(tiny_params, config)
  remat = grad(tiny_params, dataclasses.replace(config, remat=True))
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_bad_head_count_is_a_one_line_error():
  with pytest.raises(ValueError, match="num_heads"):
    model_lib.Config(d_model=30, num_heads=4)


@pytest.mark.parametrize("remat", [False, True])
def test_internals_come_from_the_same_pass_the_residual_stream_and_attention_weights(
    forward, tiny_config, tiny_params, remat):
  config = dataclasses.replace(tiny_config, remat=remat)
  tokens, positions = _tokens(config, 2, 9, seed=8)
  plain, _ = forward(tiny_params, tokens, positions, config=config)
  logits, _, internals = forward(tiny_params, tokens, positions, config=config, internals=True)
  np.testing.assert_array_equal(logits, plain)
  hidden, attention = internals["hidden"], internals["attention"]
  assert hidden.shape == (config.num_layers + 1, 2, 9, config.d_model)
  embed = tiny_params["wte"]["embedding"][tokens] + tiny_params["wpe"]["embedding"][positions]
  np.testing.assert_allclose(hidden[0], embed, atol=1e-6)
  model = nnx.merge(model_lib.graphdef(config), tiny_params)
  np.testing.assert_allclose(model.wte.attend(model.ln_f(hidden[-1])), plain, atol=1e-5)
  assert attention.shape == (config.num_layers, 2, config.num_heads, 9, 9)
  np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(np.triu(attention, 1), 0.0)  # causal


def _numeric_configs():
  from lookahead_jax.data import tsp  # pylint: disable=import-outside-toplevel
  tok = tsp.TspTokenizer(grid_size=64, max_cities=10)
  base = dict(vocab_size=tok.vocab_size, max_len=16, num_layers=1, d_model=32, num_heads=2)
  return tok, model_lib.Config(**base), model_lib.Config(
      **base, numeric_features=4, numeric_tokens=tok.numeric_tokens())


def test_numeric_input_off_by_default_adds_no_parameters(forward):
  """Off (the default), the params are those of a model without the option, and the
  tokenizer's numeric tokens alone change nothing: no projection is built."""
  tok, off, on = _numeric_configs()
  assert off.numeric_features == 0 and off.numeric_channels == 0
  declared = dataclasses.replace(off, numeric_tokens=tok.numeric_tokens())
  tokens, positions = _tokens(off, 2, 12)
  p_off, p_declared = model_lib.init(off, jax.random.key(0)), model_lib.init(declared,
                                                                              jax.random.key(0))
  assert jax.tree.structure(p_off) == jax.tree.structure(p_declared)
  np.testing.assert_array_equal(forward(p_off, tokens, positions, config=off)[0],
                                forward(p_declared, tokens, positions, config=declared)[0])
  p_on = model_lib.abstract_params(on)
  extra = model_lib.num_params(p_on) - model_lib.num_params(p_off)
  # per channel (x, y): a kernel [2K + 1, d] and a bias [d]
  assert extra == on.numeric_channels * (2 * on.numeric_features + 2) * on.d_model == 2 * 10 * 32


def test_numeric_input_reads_coordinates_as_numbers_and_learns():
  """On: a coordinate token's embedding gains proj(features(v)), features the specified
  Fourier function of v = value / grid; nearby values get nearby embeddings; x and y
  have projections of their own; a gradient reaches the projections."""
  tok, _, on = _numeric_configs()
  feats = model_lib.numeric_features(jnp.asarray([0.25]), 2)
  np.testing.assert_allclose(feats[0], [0.25, 1.0, 0.0, 0.0, -1.0], atol=1e-6)
  params = model_lib.init(on, jax.random.key(0))
  gpt = nnx.merge(model_lib.graphdef(on), params)
  xs = jnp.asarray([tok.coord_ids(np.array([v, 0]))[0] for v in range(64)])[None]
  added, numeric = gpt.numeric(xs)
  assert bool(numeric.all())
  values = jnp.arange(64) / 64
  np.testing.assert_allclose(added[0], gpt.numeric.proj[0](model_lib.numeric_features(values, 4)),
                             atol=1e-6)
  d = lambda i, j: float(jnp.linalg.norm(added[0, i] - added[0, j]))  # noqa: E731
  assert d(10, 11) < d(10, 42) / 3
  ys = jnp.asarray([[tok.coord_ids(np.array([0, 10]))[1]]])
  assert not np.allclose(gpt.numeric(ys)[0][0, 0], added[0, 10])  # y reads its own map
  city, _ = gpt.numeric(jnp.asarray([[tok.city_id(3)]]))
  np.testing.assert_array_equal(city, 0.0)

  tokens = jnp.asarray([[1, int(xs[0, 5]), int(ys[0, 0]), tok.city_id(0)]])
  positions = jnp.arange(4)[None]

  def loss(p):
    return model_lib.forward(p, tokens, positions, config=on)[0][0, -1, 0]

  grads = jax.jit(jax.grad(loss))(params)
  for proj in grads["numeric"]["proj"].values():
    assert float(jnp.abs(proj["kernel"][...]).sum()) > 0
