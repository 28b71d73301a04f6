"""fit.py: each side's tau and lam fitted on validation NLL reach the known optimum."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lookahead_jax import fit
from lookahead_jax import lookahead as lookahead_lib


def expected_cache(log_p: np.ndarray, truth: np.ndarray, k: int, loglinear: bool = False):
  """A host cache whose weighted NLL is the expected NLL under `truth`: every context
  [n, V] appears once per vocabulary token y, weighted truth(y). Paths: p's top k."""
  n, v = log_p.shape
  lp = jnp.asarray(np.repeat(log_p, v, axis=0))[None]  # [1, n*V, V]
  targets = jnp.asarray(np.tile(np.arange(v), n), jnp.int32)[None]
  score, first = jax.lax.top_k(lp, k)
  paths = lookahead_lib.Paths(first=first.astype(jnp.int32), score=score,
                              valid=jnp.ones(targets.shape, bool))
  cache = fit.pass_cache(lp, paths, targets, loglinear)
  host = fit.host_cache([cache], [np.ones(targets.shape, bool)])
  return host, fit.weights_of(truth.reshape(-1), host.size)


def test_calibrated_p_fits_lam_zero():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(40, 6)) * 2.0
  log_p = np.asarray(jax.nn.log_softmax(logits))
  cache, w = expected_cache(log_p, np.exp(log_p), k=2)
  for mixture in ("linear", "loglinear"):
    if mixture == "loglinear":
      cache, w = expected_cache(log_p, np.exp(log_p), k=2, loglinear=True)
    got = fit.fit_side(cache, w, scheme="sum", mixture=mixture)
    assert got.nll == pytest.approx(got.naive_nll, abs=1e-3)  # nothing beats a calibrated p
    assert got.lam < 0.02


def test_truth_uniform_over_top_two_fits_the_uniform_limit():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(30, 8))
  logits[:, :2] += 3.0 + rng.uniform(0.0, 2.0, size=(30, 2))  # two clear leaders, unequal
  log_p = np.asarray(jax.nn.log_softmax(logits))
  truth = np.zeros_like(log_p)
  top2 = np.argsort(-log_p, axis=1)[:, :2]
  np.put_along_axis(truth, top2, 0.5, axis=1)
  cache, w = expected_cache(log_p, truth, k=4)
  got = fit.fit_control(cache, w, mixture="linear", widths=range(1, 5))
  assert got.width == 2
  assert got.nll == pytest.approx(math.log(2.0), abs=1e-3)  # the optimum: uniform on top 2
  assert math.isinf(got.temperature) and "tau=inf" in got.on_bound
  assert got.lam > 0.99


def test_both_sides_share_the_routine():
  """A lookahead whose paths are p's top-k fits exactly as the control of that width."""
  rng = np.random.default_rng(2)
  log_p = np.asarray(jax.nn.log_softmax(rng.normal(size=(20, 5)) * 1.5))
  truth = np.asarray(jax.nn.softmax(rng.normal(size=(20, 5)) * 3.0))
  cache, w = expected_cache(log_p, truth, k=3)
  side = fit.fit_side(cache, w, scheme="sum", mixture="linear")
  control = fit.fit_control(cache, w, mixture="linear", widths=range(3, 4))
  assert side == control
  test = fit.log_mixture_at(cache, side, scheme="sum", mixture="linear")
  assert -np.sum(test * w) / w.sum() == pytest.approx(side.nll, abs=1e-5)


def test_uniform_limit_ignores_empty_paths():
  """At tau = inf only real paths share the mass (an empty path scores decoding.NEG)."""
  paths = lookahead_lib.Paths(first=jnp.array([[[3, 4, 0]]], jnp.int32),
                              score=jnp.array([[[-0.1, -5.0, -1e9]]]),
                              valid=jnp.ones((1, 1), bool))
  amp = lookahead_lib.amplify_inverse(paths, 0.0, "sum")
  np.testing.assert_allclose(np.exp(amp.log_q[0, 0, :2]), [0.5, 0.5], atol=1e-6)
  assert amp.log_q[0, 0, 2] == -np.inf
