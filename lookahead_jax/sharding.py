"""Device mesh, shardings of the batch and the train state, and multi-process start-up.

The mesh has two named axes (docs/design.md section 4):

  data  pure data parallelism: parameters replicated, the batch split;
  fsdp  fully sharded data parallelism: the batch split too, and every parameter (and
        its optimizer state) sharded over this axis on one of its dimensions.

The batch dimension is split over both axes together, so every device holds
global_batch / (data * fsdp) rows. `jax.jit` with these shardings as in/out shardings
lets XLA insert the all-gathers and reduce-scatters; nothing here is per-device code.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp")
BATCH_AXES = AXES  # the batch dimension is split over both axes


CPU_FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def set_cpu_compiler_flags() -> None:
  """Sets one XLA:CPU option, unless XLA_FLAGS already names it: `CPU_FLAG=` (empty: no
  YNNPACK fusions), so that XLA:CPU runs the model's matmuls with its own kernels.

  Measured on a 2-core CPU it makes the train step about 7% and the all-position
  lookahead about 8% faster (bench/README.md). Only the CPU compiler reads it, so it
  changes nothing on GPU or TPU. Every entry point calls it first (the command line,
  the benchmarks, the tests' conftest): it takes effect only before JAX starts its
  backends.
  """
  if CPU_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {CPU_FLAG}=".strip()


def maybe_initialize_distributed() -> bool:
  """Starts `jax.distributed` when the environment describes several processes.

  Call it first, before anything touches a device. Recognised environments:
    - LOOKAHEAD_JAX_DISTRIBUTED=auto: `jax.distributed.initialize()` without arguments,
      which detects the cluster itself (Cloud TPU VMs from their metadata, SLURM, Open
      MPI, Kubernetes); launch/tpu_pod.sh sets it, since a TPU VM's worker list is in
      its metadata, not its environment. LOOKAHEAD_JAX_DISTRIBUTED=off: never start;
    - explicit: JAX_COORDINATOR_ADDRESS ("host:port"), JAX_NUM_PROCESSES, JAX_PROCESS_ID
      (launch/gpu_local.sh; CPU processes then talk over gloo);
    - SLURM with more than one task (SLURM_JOB_ID, SLURM_NTASKS > 1; launch/slurm.sbatch);
    - a multi-host Cloud TPU slice whose environment lists its hosts
      (TPU_WORKER_HOSTNAMES with several hosts, as on GKE, or
      MEGASCALE_COORDINATOR_ADDRESS for multislice).
  A single process needs none of it. Returns whether it initialised.
  """
  env = os.environ
  if jax.distributed.is_initialized():
    return False
  mode = env.get("LOOKAHEAD_JAX_DISTRIBUTED", "").strip().lower()
  if mode not in ("", "auto", "off"):
    raise ValueError(f"LOOKAHEAD_JAX_DISTRIBUTED={env['LOOKAHEAD_JAX_DISTRIBUTED']!r}: use "
                     "auto (jax detects the cluster) or off (one process), or leave it unset")
  if mode == "off":
    return False
  if mode == "auto":
    jax.distributed.initialize()
  elif "JAX_COORDINATOR_ADDRESS" in env:
    missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if k not in env]
    if missing:
      raise ValueError(f"JAX_COORDINATOR_ADDRESS is set but {', '.join(missing)} is not; set "
                       "JAX_NUM_PROCESSES and JAX_PROCESS_ID for every process")
    jax.distributed.initialize(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                               num_processes=int(env["JAX_NUM_PROCESSES"]),
                               process_id=int(env["JAX_PROCESS_ID"]))
  elif "SLURM_JOB_ID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
    jax.distributed.initialize()  # jax reads the SLURM variables
  elif ("," in env.get("TPU_WORKER_HOSTNAMES", "")
        or "MEGASCALE_COORDINATOR_ADDRESS" in env):
    jax.distributed.initialize()  # jax reads the TPU metadata
  else:
    return False
  logging.info("jax.distributed: process %d of %d, %d local devices of %d",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


def mesh_shape(data: int, fsdp: int, device_count: int) -> tuple[int, int]:
  """(data, fsdp) with a -1 resolved to "all the remaining devices".

  Raises a ValueError naming the config key when the sizes cannot tile the devices.
  """
  for key, size in (("mesh.data", data), ("mesh.fsdp", fsdp)):
    if size == 0 or size < -1:
      raise ValueError(f"{key}={size}: use a positive size, or -1 for all remaining devices")
  if data == -1 and fsdp == -1:
    raise ValueError("mesh.data and mesh.fsdp are both -1: give one of them a size")
  if data == -1 or fsdp == -1:
    key, fixed = ("mesh.fsdp", fsdp) if data == -1 else ("mesh.data", data)
    if device_count % fixed:
      raise ValueError(f"{key}={fixed} does not divide the {device_count} devices; "
                       "use a divisor of the device count")
    rest = device_count // fixed
    data, fsdp = (rest, fsdp) if data == -1 else (data, rest)
  if data * fsdp != device_count:
    raise ValueError(f"mesh.data={data} x mesh.fsdp={fsdp} is not the {device_count} devices; "
                     "make the product the device count (or set one of them to -1)")
  return data, fsdp


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
  """The ("data", "fsdp") mesh over `devices` (default: all), sizes as in `mesh_shape`."""
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(data, fsdp, len(devices))
  return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Rows of a batch [B, ...] split over every device of the mesh."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def fsdp_spec(shape: tuple[int, ...], fsdp: int) -> P:
  """Shards the largest dimension divisible by `fsdp` over "fsdp" (none: replicated).

  Ties go to the earlier dimension. With fsdp == 1 every array is replicated.
  """
  if fsdp == 1:
    return P()
  candidates = [(size, -axis) for axis, size in enumerate(shape) if size % fsdp == 0]
  if not candidates:
    return P()
  _, neg_axis = max(candidates)
  spec = [None] * len(shape)
  spec[-neg_axis] = "fsdp"
  return P(*spec)


def state_sharding(mesh: Mesh, abstract_state: Any) -> Any:
  """NamedShardings for every leaf of a (train state) pytree, by `fsdp_spec`.

  Parameters and the optimizer's moments have the same shapes, so the optimizer state
  follows the parameters; scalars (step, counters) are replicated.
  """
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), fsdp)),
                      abstract_state)


def gather(x) -> np.ndarray:
  """A batch-sharded array whole on every process, as numpy (rows in process order)."""
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
