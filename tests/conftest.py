"""Shared fixtures: tiny models whose compiled functions every test module reuses."""

import os

# 8 simulated CPU devices for the sharding tests; set before jax initialises its backend.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax
import pytest

from lookahead_jax import model as model_lib

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(scope="session")
def tiny_config():
  """A 2-layer model over a 16-token vocabulary."""
  return model_lib.Config(vocab_size=16, max_len=32, num_layers=2, d_model=32, num_heads=4)


@pytest.fixture(scope="session")
def tiny_params(tiny_config):
  return model_lib.init(tiny_config, jax.random.key(0))


@pytest.fixture(scope="session")
def sharp_config():
  """A 3-token vocabulary, for exhaustive enumeration of continuations."""
  return model_lib.Config(vocab_size=3, max_len=16, num_layers=2, d_model=16, num_heads=2)


@pytest.fixture(scope="session")
def sharp_params(sharp_config):
  """Scaled-up weights: peaked, far from uniform next-token distributions."""
  params = model_lib.init(sharp_config, jax.random.key(1))
  return jax.tree.map(lambda x: 4.0 * x, params)


@pytest.fixture(scope="session")
def forward():
  """`model.forward`, jitted once for the whole session."""
  return jax.jit(model_lib.forward, static_argnames=("config", "myopic"))
