"""Mesh, shardings and distributed start-up; the sharded train step equals the unsharded one."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from lookahead_jax import settings as settings_lib
from lookahead_jax import sharding, train
from lookahead_jax import state as state_lib
from lookahead_jax.data import pipeline

from conftest import RHYME_CONFIG, load_config


def test_mesh_shape_fills_in_minus_one():
  assert sharding.mesh_shape(-1, 1, 8) == (8, 1)
  assert sharding.mesh_shape(2, -1, 8) == (2, 4)
  assert sharding.mesh_shape(-1, 4, 8) == (2, 4)
  assert sharding.mesh_shape(1, 8, 8) == (1, 8)


@pytest.mark.parametrize("data, fsdp, key", [(3, 1, "mesh.data=3"), (-1, 3, "mesh.fsdp=3"),
                                             (-1, -1, "both -1"), (0, 1, "mesh.data=0"),
                                             (2, 2, "is not the 8 devices")])
def test_mesh_shape_errors_name_the_key(data, fsdp, key):
  with pytest.raises(ValueError, match=key):
    sharding.mesh_shape(data, fsdp, 8)


def test_make_mesh_axes():
  mesh = sharding.make_mesh(2, -1)
  assert mesh.axis_names == ("data", "fsdp") and dict(mesh.shape) == {"data": 2, "fsdp": 4}
  assert sharding.make_mesh(devices=jax.devices()[:1]).size == 1


def test_fsdp_spec_takes_the_largest_divisible_dimension():
  assert sharding.fsdp_spec((32, 96), 4) == P(None, "fsdp")
  assert sharding.fsdp_spec((258, 32), 4) == P(None, "fsdp")  # 258 is not divisible by 4
  assert sharding.fsdp_spec((64, 64), 4) == P("fsdp", None)  # ties: the first
  assert sharding.fsdp_spec((3, 5), 4) == P()
  assert sharding.fsdp_spec((), 4) == P()
  assert sharding.fsdp_spec((64, 64), 1) == P()


def _batches(config, n):
  rng = np.random.default_rng(1)
  b, t = config.train.global_batch, config.data.seq_len
  for _ in range(n):
    tokens = rng.integers(2, config.model.vocab_size, (b, t + 1), dtype=np.int32)
    weights = (rng.random((b, t)) < 0.9).astype(np.float32)
    yield {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": weights,
           "segment_ids": np.ones((b, t), np.int32),
           "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)),
           "needs_lookahead": np.zeros((b, t), bool)}


def _train(config, mesh, steps=3):
  settings = settings_lib.validate(config)
  tx, schedule = state_lib.make_optimizer(settings.train)
  _, shardings = state_lib.state_shardings(settings.model, tx, mesh)
  state = state_lib.create_state(settings, tx, shardings)
  step = train.jit_train_step(settings, mesh, tx, schedule, shardings)
  losses = []
  for batch in _batches(config, steps):
    state, m = step(state, pipeline.global_batch(batch, sharding.batch_sharding(mesh)))
    losses.append(float(m["loss"]))
  return state, losses


# v3_balance weighs each token by sums over the whole global batch, and its lookahead
# runs on each device's own rows inside the step.
STUNTED = {"stunting.mode": "v3_balance", "lookahead.width": 2, "lookahead.horizon": 3,
           "stunting.alignment_every": 1}


@pytest.fixture(scope="module", params=["plain", "stunted"])
def single_device_run(request, tiny_run):
  extra = STUNTED if request.param == "stunted" else {}
  config = load_config(RHYME_CONFIG, {**tiny_run, "train.global_batch": 16, **extra})
  state, losses = _train(config, sharding.make_mesh(devices=jax.devices()[:1]))
  return config, jax.device_get(state), losses


@pytest.mark.parametrize("data, fsdp", [(8, 1), (2, 4)])
def test_sharded_step_equals_single_device(single_device_run, data, fsdp):
  config, single, losses = single_device_run
  mesh = sharding.make_mesh(data, fsdp)
  state, sharded_losses = _train(config, mesh)
  np.testing.assert_allclose(sharded_losses, losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
               jax.device_get(state.params), single.params)
  np.testing.assert_allclose(state.balance_debt, single.balance_debt, atol=1e-6)
  kernel = state.params["blocks"][0]["c_fc"]["kernel"]  # [32, 128]
  assert kernel.sharding.spec == (P(None, "fsdp") if fsdp > 1 else P())
  mu = state.opt_state[1][0].mu["blocks"][0]["c_fc"]["kernel"]  # optimizer state follows
  assert mu.sharding.spec == kernel.sharding.spec


def test_no_distributed_start_without_the_environment(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
  for key in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES",
              "MEGASCALE_COORDINATOR_ADDRESS"):
    monkeypatch.delenv(key, raising=False)
  assert not sharding.maybe_initialize_distributed()
  monkeypatch.setenv("SLURM_JOB_ID", "7")
  monkeypatch.setenv("SLURM_NTASKS", "1")  # one task: nothing to connect
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")  # a single-host TPU
  assert not sharding.maybe_initialize_distributed()
  assert not calls


def test_distributed_start_from_explicit_variables(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append(k))
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("JAX_PROCESS_ID", "2")
  assert sharding.maybe_initialize_distributed()
  assert calls == [{"coordinator_address": "10.0.0.1:1234", "num_processes": 4,
                    "process_id": 2}]
  monkeypatch.delenv("JAX_PROCESS_ID")
  with pytest.raises(ValueError, match="JAX_PROCESS_ID"):
    sharding.maybe_initialize_distributed()


def test_distributed_start_under_slurm(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append(k))
  monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
  monkeypatch.setenv("SLURM_JOB_ID", "7")
  monkeypatch.setenv("SLURM_NTASKS", "2")
  assert sharding.maybe_initialize_distributed()
  assert calls == [{}]
