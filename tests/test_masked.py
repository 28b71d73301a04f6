"""The masked objective: the mask spectrum, its loss and PLL (masked.py)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lookahead_jax import masked, sharding, train
from lookahead_jax import state as state_lib
from lookahead_jax import stunting as st_lib

MASK = 15  # the tiny model's last id (tokens are drawn from 2..14)
BERT = masked.Objective(kind="spectrum", rho=0.0, mask_rate=0.4, mask_id=MASK)


def _batch(b=4, t=12, seed=0, pad=3):
  """Random rows whose last `pad` slots are padding."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(2, MASK, (b, t + 1)).astype(np.int32)
  seg = np.ones((b, t), np.int32)
  seg[:, t - pad:] = 0
  return {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:]),
          "weights": jnp.asarray(seg, jnp.float32), "segment_ids": jnp.asarray(seg),
          "positions": jnp.broadcast_to(jnp.arange(t), (b, t)),
          "needs_lookahead": jnp.zeros((b, t), bool)}


_apply = jax.jit(masked.apply, static_argnums=2)


@functools.lru_cache(maxsize=None)
def _step(config, objective, grad_accum=1, sgd=False):
  tx = optax.sgd(1e-2) if sgd else optax.adam(1e-2)  # sgd: updates are the gradient
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  step = functools.partial(train.train_step, tx=tx, schedule=optax.constant_schedule(1e-2),
                           model_cfg=config, stunt=st_lib.Stunting(), grad_accum=grad_accum,
                           micro_sharding=NamedSharding(mesh, P(None, sharding.BATCH_AXES)),
                           objective=objective)
  return tx, jax.jit(step)


def _train(config, objective, steps=4):
  tx, step = _step(config, objective)
  state = state_lib.init_state(config, tx, 0)
  losses = []
  for i in range(steps):
    state, metrics = step(state, _batch(seed=i))
    losses.append(float(metrics["loss"]))
  return state, losses


def test_rho_one_trains_exactly_like_next_token_training(tiny_config):
  spectrum = masked.Objective(kind="spectrum", rho=1.0, mask_id=MASK)
  state, losses = _train(tiny_config, spectrum)
  reference, reference_losses = _train(tiny_config, masked.NEXT_TOKEN)
  np.testing.assert_allclose(losses, reference_losses, atol=1e-6, rtol=0)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), state.params,
               reference.params)
  # ... while rho = 0 trains on another loss.
  _, bert_losses = _train(tiny_config, BERT, steps=1)
  assert abs(bert_losses[0] - losses[0]) > 1e-3


def test_a_position_sees_later_tokens_under_bidirectional_attention_only(tiny_config,
                                                                         tiny_params, forward):
  batch = _batch(b=2, pad=0)
  tokens = jnp.broadcast_to(batch["inputs"][0], (2, 12))
  changed = tokens.at[:, 7].set(jnp.where(tokens[0, 7] == 2, 3, 2))
  flags = jnp.array([True, False])
  run = lambda x: forward(tiny_params, x, batch["positions"], config=tiny_config,
                          bidirectional=flags)[0]
  before, after = run(tokens), run(changed)
  moved = np.abs(np.asarray(after - before))[:, :7].max(axis=(1, 2))
  assert moved[0] > 1e-4  # bidirectional row: earlier outputs move
  assert moved[1] == 0.0  # causal row: they do not
  np.testing.assert_array_equal(before[1], forward(tiny_params, tokens, batch["positions"],
                                                   config=tiny_config)[0][1])


@pytest.mark.parametrize("mean_span", [0.0, 1.0, 4.0])
def test_the_mask_rate_is_mask_rate_within_binomial_tolerance_and_padding_is_never_masked(
    mean_span):
  objective = masked.Objective(kind="spectrum", rho=0.0, mask_rate=0.3, mean_span=mean_span,
                               mask_id=MASK)
  batch = _batch(b=256, t=64, pad=16)
  out = _apply(batch, jax.random.key(3), objective)
  hidden = np.asarray(out["inputs"] == MASK)
  valid = np.asarray(batch["segment_ids"] > 0)
  assert not (hidden & ~valid).any()
  np.testing.assert_array_equal(np.asarray(out["weights"]), hidden.astype(np.float32))
  np.testing.assert_array_equal(np.asarray(out["targets"]), np.asarray(batch["inputs"]))
  assert np.asarray(out["bidirectional"]).all()
  # A Markov chain's sum has the binomial variance times (1 + lam) / (1 - lam), lam its
  # second eigenvalue (0 for independent tokens).
  r, n = objective.mask_rate, valid.sum()
  lam = 1.0 - 1.0 / objective.span - objective.span_start
  sd = np.sqrt(r * (1 - r) / n * (1 + lam) / (1 - lam))
  assert abs(hidden[valid].mean() - r) < 4 * sd
  runs = np.diff(np.pad(hidden[:, :48].astype(np.int8), ((0, 0), (1, 1))), axis=1)
  starts, ends = np.nonzero(runs == 1), np.nonzero(runs == -1)
  interior = (starts[1] > 0) & (ends[1] < 48)  # spans cut by the row's ends are shorter
  assert abs((ends[1] - starts[1])[interior].mean() / objective.span - 1) < 0.1


def test_next_token_rows_are_untouched_and_suffix_rows_hide_a_whole_suffix():
  objective = masked.Objective(kind="spectrum", rho=0.5, suffix=0.5, mask_id=MASK)
  batch = _batch(b=2000, t=16, pad=4)
  out = masked.apply(batch, jax.random.key(0), objective)
  causal = ~np.asarray(out["bidirectional"])
  assert abs(causal.mean() - 0.5) < 0.05
  for key in ("inputs", "targets", "weights"):
    np.testing.assert_array_equal(np.asarray(out[key])[causal], np.asarray(batch[key])[causal])
  hidden = np.asarray(out["inputs"] == MASK)[~causal]
  assert not hidden[:, 12:].any()  # padding
  # every other row hides one block from a cut to its last real token, the cut uniform
  assert hidden[:, 11].all() and (np.diff(hidden[:, :12].astype(np.int8), axis=1) >= 0).all()
  counts = np.bincount(hidden.sum(1), minlength=13)[1:]
  assert counts.min() > 0.5 * counts.mean()


def test_the_masked_loss_counts_only_masked_positions(tiny_config, forward):
  objective = BERT
  tx, step = _step(tiny_config, objective)
  state = state_lib.init_state(tiny_config, tx, 0)
  batch = _batch()
  _, metrics = step(state, batch)
  key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), 0)
  out = _apply(batch, jax.random.fold_in(key, masked.STREAM), objective)
  hidden = np.asarray(out["inputs"] == MASK)
  logits, _ = forward(state.params, out["inputs"], batch["positions"],
                                config=tiny_config, segment_ids=batch["segment_ids"],
                                bidirectional=jnp.ones((4,), bool))
  logp = np.asarray(jax.nn.log_softmax(logits))
  picked = np.take_along_axis(logp, np.asarray(batch["inputs"])[..., None], -1)[..., 0]
  assert 0 < hidden.sum() < hidden.size
  np.testing.assert_allclose(float(metrics["loss"]), -picked[hidden].mean(), rtol=1e-5)


def test_masks_and_their_normalisation_make_accumulation_exact(tiny_config):
  """Masks are drawn for the global batch, so two micro-batches give its update."""
  objective = dataclasses.replace(BERT, rho=0.5)
  results = []
  for accum in (1, 2):
    tx, step = _step(tiny_config, objective, accum, sgd=True)
    state, metrics = step(state_lib.init_state(tiny_config, tx, 0), _batch(b=8))
    results.append((state.params, float(metrics["loss"])))
  np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7), results[0][0],
               results[1][0])


def test_pll_and_readout_equal_one_row_at_a_time_references(tiny_config, tiny_params, forward):
  batch = _batch(b=2, t=10, pad=2)
  batch["segment_ids"] = batch["segment_ids"].at[:, 5:8].set(2 * batch["segment_ids"][:, 5:8])
  tokens, seg, pos = batch["inputs"], batch["segment_ids"], batch["positions"]
  for pattern in (masked.pll_pattern, masked.readout_pattern):
    hide, predict = pattern(10)
    got = masked.hidden_log_probs(tiny_params, tokens, seg, pos, hide, predict,
                                  config=tiny_config, mask_id=MASK)
    for row in range(2):
      for k in range(10):
        x = jnp.where(hide[k], MASK, tokens[row])[None]
        logits = forward(tiny_params, x, pos[row:row + 1], config=tiny_config,
                         segment_ids=seg[row:row + 1], bidirectional=jnp.ones((1,), bool))[0]
        want = jax.nn.log_softmax(logits[0, predict[k]])[tokens[row, predict[k]]]
        np.testing.assert_allclose(got[row, k], want, atol=1e-5)
  sums = masked.held_out_sums(tiny_params, batch, config=tiny_config, mask_id=MASK)
  np.testing.assert_array_equal(sums["pll_tokens"], [8, 8])
  np.testing.assert_array_equal(sums["readout_tokens"], [6, 6])  # slots 1-4, 6-7
