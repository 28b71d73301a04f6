"""Helpers shared by the benchmarks: timing, JSON output, machine description, HF models.

Every benchmark measures our figure and its baseline in the same run on the same machine
and reports their ratio (docs/design.md section 6); absolute times are never compared across
runs.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

from lookahead_jax import sharding

sharding.set_cpu_compiler_flags()  # as every command does, before JAX starts its backends

INSTALL_HINT = ("pip install torch==2.13.0 (the CPU build, first), then pip install -e .[bench] "
                "(transformers, safetensors)")


def median_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
  """Median wall-clock seconds of `fn()` over `repeats` calls, after `warmup` untimed calls.

  JAX results are waited for (`jax.block_until_ready`), so asynchronous dispatch is timed
  to completion; other results (numpy, torch on CPU) are complete when returned.
  """
  return compare_times({"fn": fn}, repeats, warmup)["fn"]


def compare_times(fns: dict[str, Callable[[], Any]], repeats: int = 5,
                  warmup: int = 1) -> dict[str, float]:
  """{name: median seconds} of several functions timed in turn, one call of each per round.

  Alternating the calls exposes every function to the same changes in machine load, so
  their ratio is steadier than that of back-to-back medians.
  """
  for fn in fns.values():
    for _ in range(warmup):
      jax.block_until_ready(fn())
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def cores() -> int:
  """CPU cores this process may run on."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def warn_if_busy(threshold: float = 0.5) -> float:
  """The 1-minute load average before a run; warns on stderr when it exceeds `threshold`.

  Other processes competing for the cores make timings unreliable, and PyTorch's worker
  threads suffer far more than XLA's from a contended CPU, inflating ratios against it.
  """
  load = os.getloadavg()[0]
  if load > threshold:
    print(f"warning: load average {load:.2f} before the run; other processes compete for the "
          f"{cores()} cores and the ratios below are unreliable", file=sys.stderr)
  return load


def machine() -> str:
  """One line: CPU model, cores, JAX backend and versions (and torch's, when installed)."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  devices = jax.devices()
  parts = [f"{cpu}, {cores()} cores",
           f"jax {jax.__version__} {devices[0].platform} x{len(devices)}"]
  if "torch" in sys.modules:
    parts.append(f"torch {sys.modules['torch'].__version__}")
  return "; ".join(parts)


def write_json(path: str | os.PathLike, figures: dict[str, Any]) -> None:
  """Writes `figures` (one flat object of numbers and strings) plus machine and date."""
  record = {"machine": machine(), "date": datetime.date.today().isoformat(), **figures}
  nested = [k for k, v in record.items() if isinstance(v, (dict, list, tuple))]
  if nested:
    raise ValueError(f"write_json wants a flat object; {nested} are not scalars")
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
  """A plain-text table; floats with 4 significant digits."""
  cells = [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
  widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
  for row in [list(header), ["-" * w for w in widths], *cells]:
    print("  ".join(c.rjust(w) for c, w in zip(row, widths)))


def import_torch(threads: int):
  """(torch, transformers) with torch using `threads` threads, or exit saying how to install."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    sys.exit(f"this benchmark compares with PyTorch/Hugging Face ({e.name} is missing): "
             f"{INSTALL_HINT}")
  torch.set_num_threads(threads)
  transformers.logging.set_verbosity_error()
  return torch, transformers


def hf_gpt2(*, vocab_size: int, max_len: int, num_layers: int, d_model: int, num_heads: int,
            seed: int = 0):
  """A randomly initialised `GPT2LMHeadModel` (eval mode) and the same weights in our model.

  Returns (hf_model, config, params). No EOS/BOS ids, so generation runs every step.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  from lookahead_jax import gpt2  # pylint: disable=g-import-not-at-top

  torch.manual_seed(seed)
  hf_config = transformers.GPT2Config(
      vocab_size=vocab_size, n_positions=max_len, n_layer=num_layers, n_embd=d_model,
      n_head=num_heads, bos_token_id=None, eos_token_id=None, pad_token_id=None)
  hf = transformers.GPT2LMHeadModel(hf_config).eval()
  config = gpt2.config_from_hf(hf_config.to_dict())
  state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
  return hf, config, gpt2.params_from_hf_state_dict(state, config)
