"""Compiling ahead: the XLA compiles of functions a run calls later, on a background thread.

A training run calls the monitor's held-out pass first at step `monitor.every`,
and the evaluation's passes after the last step. Compiled when first called, each stops
the run for its compile (on the default run about 70 s of XLA compiles in all, most of
them these). `Ahead` starts them when the run starts, on one thread beside the training
loop (XLA's compiler is single-threaded; the loop leaves a core of a 2-core CPU mostly
idle), so the run pays for them only where the loop finishes first.

Two ways to hand a compile over:
  - `submit`: the caller keeps the `jax.stages.Compiled` (a Future of it) and calls it
    instead of the jitted function: no trace, lowering or compile when it is used. For
    a caller that knows its arguments' shapes and shardings ahead (the monitor).
  - `warm`: only the persistent compilation cache (`jax_compilation_cache_dir`) keeps the
    executable; the caller later calls the jitted function as usual, which traces and
    lowers again and loads the compile from the cache. For a caller whose call sites
    compute their arguments as they go (the evaluation); without a cache directory it
    does nothing.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable
from typing import Any

import jax
from absl import logging


def abstract(tree: Any) -> Any:
  """ShapeDtypeStructs (with their sharding) of a pytree of arrays, for `lower`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                      tree)


def use_cache() -> None:
  """Sets the persistent compilation cache (the command line calls it), unless
  $JAX_COMPILATION_CACHE_DIR sets one: runs of one shape (seeds, modes of a comparison, a
  resumed run) compile once."""
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", os.path.join(
        os.path.expanduser("~"), ".cache", "lookahead_jax", "jax_compilation_cache"))


def caching() -> bool:
  """Whether a persistent compilation cache is set (the command line sets one)."""
  return bool(jax.config.jax_compilation_cache_dir)


class Ahead:
  """One background thread of compiles, run in the order queued."""

  def __init__(self):
    self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compile-ahead")

  def submit(self, jitted: Callable, *args, **kwargs) -> concurrent.futures.Future:
    """A Future of `jitted.lower(*args, **kwargs).compile()` (args may be abstract)."""
    return self.pool.submit(lambda: jitted.lower(*args, **kwargs).compile())

  def warm(self, jitted: Callable, *args, **kwargs) -> concurrent.futures.Future | None:
    """Compiles `jitted` for these arguments into the persistent cache, if one is set (a
    Future of None; else None); a failure is logged, never raised (the later call then
    compiles for itself)."""
    if not caching():
      return None

    def compile_():
      try:
        jitted.lower(*args, **kwargs).compile()
      except Exception as e:  # noqa: BLE001 - a warm-up must not stop the run
        logging.warning("compiling ahead failed (%s: %s); it compiles when first called",
                        type(e).__name__, e)

    return self.pool.submit(compile_)

  def close(self, cancel: bool = False) -> None:
    """Waits for the queued compiles, or (cancel) drops those not started."""
    self.pool.shutdown(wait=not cancel, cancel_futures=cancel)

  def __enter__(self) -> Ahead:
    return self

  def __exit__(self, kind, *_) -> None:  # an error drops what has not started
    self.close(cancel=kind is not None)
