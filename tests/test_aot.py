"""Compiling ahead: the compiled function of `submit`, the persistent cache `warm` fills."""

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import compilation_cache  # reset_cache: the dir is read once per process

from lookahead_jax import aot

HITS = "/jax/compilation_cache/cache_hits"


@functools.partial(jax.jit, static_argnames=("power",))
def _work(x, scale, *, power):
  return jnp.tanh(x @ x.T * scale) ** power


def test_submit_gives_the_jitted_function_compiled_for_abstract_arguments():
  x = jnp.arange(12.0).reshape(3, 4) / 10
  with aot.Ahead() as ahead:
    compiled = ahead.submit(_work, aot.abstract(x), 0.5, power=3).result()
  assert isinstance(compiled, jax.stages.Compiled)
  np.testing.assert_array_equal(compiled(x, 0.5), _work(x, 0.5, power=3))
  with pytest.raises(TypeError):  # compiled for [3, 4]: another shape is refused
    compiled(jnp.ones((2, 4)), 0.5)


@contextlib.contextmanager
def _cache(path):
  """The persistent compilation cache in `path` (None: none) for a block, then the old one."""
  old = (jax.config.jax_compilation_cache_dir,
         jax.config.jax_persistent_cache_min_compile_time_secs)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  compilation_cache.reset_cache()
  try:
    yield
  finally:
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
    compilation_cache.reset_cache()


@pytest.fixture
def cache_dir(tmp_path):
  with _cache(str(tmp_path)):
    yield tmp_path


def test_warm_compiles_into_the_cache_so_a_later_jit_of_the_function_loads_it(cache_dir):
  hits = []
  listener = lambda event, **_: hits.append(event)  # noqa: E731
  jax.monitoring.register_event_listener(listener)
  try:
    x = jnp.ones((5, 7))
    with aot.Ahead() as ahead:
      assert ahead.warm(jax.jit(functools.partial(_work.__wrapped__, power=2)),
                        x, 2.0).result() is None
    assert any(cache_dir.iterdir())  # the executable is on disk
    assert hits.count(HITS) == 0
    # A new jit of the same function, as the evaluation makes its own, loads it.
    out = jax.jit(functools.partial(_work.__wrapped__, power=2))(x, 2.0)
    assert hits.count(HITS) == 1
    np.testing.assert_allclose(out, jnp.tanh(x @ x.T * 2.0) ** 2, rtol=1e-6)
  finally:
    jax.monitoring.unregister_event_listener(listener)


def test_warm_without_a_cache_does_nothing():
  with _cache(None), aot.Ahead() as ahead:
    assert not aot.caching()
    assert ahead.warm(_work, jnp.ones((2, 2)), 1.0, power=1) is None


def test_a_failed_warm_is_logged_not_raised(cache_dir, caplog):
  with aot.Ahead() as ahead:
    future = ahead.warm(_work, jnp.ones((2, 3)), 1.0)  # `power` missing
    assert future.result() is None
  assert "compiling ahead failed" in caplog.text
