"""The train state, the optimizer, their shardings, and the parameters a command runs on.

Every command reads its parameters here (`load_params`: the workdir's newest checkpoint,
else the config's `pretrained` GPT-2 directory, else fresh ones from the seed); only the
commands that train import train.py, which builds its step and loop on `TrainState`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from absl import logging
from etils import epath

from lookahead_jax import checkpoint, gpt2, sharding
from lookahead_jax import model as model_lib
from lookahead_jax import settings as settings_lib
from lookahead_jax.settings import Settings

Array = jax.Array


def make_mesh(mesh: settings_lib.Mesh) -> jax.sharding.Mesh:
  return sharding.make_mesh(mesh.data, mesh.fsdp)


# ----------------------------------------------------------------------------- model and optimizer


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes; a pytree orbax saves as it is.

  step:               [] int32 steps taken (batches consumed), skipped ones included.
  params:             the model's parameters (nnx.State).
  opt_state:          optax state (moments follow the parameters' shapes and shardings).
  rng:                [2] uint32 key data of the run's base key; step i uses fold_in(key, i).
  nonfinite_in_a_row: [] int32 non-finite steps since the last finite one.
  nonfinite_total:    [] int32 non-finite (skipped) steps of the whole run.
  skipped_total:      [] int32 updates skipped by stunting (v1_update) in the whole run;
                      a skipped step changes neither params nor opt_state.
  balance_debt:       [] float32 movement v3_balance has yet to balance (see stunting.py).
  """

  step: Array
  params: model_lib.Params
  opt_state: optax.OptState
  rng: Array
  nonfinite_in_a_row: Array
  nonfinite_total: Array
  skipped_total: Array
  balance_debt: Array


def _decay_mask(params: model_lib.Params) -> Any:
  """Weight decay on matrices and embeddings (ndim >= 2); not on biases or LayerNorm."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(train: settings_lib.Train
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Clip by global norm, then AdamW on a linear warm-up + cosine decay schedule.

  Its `updates` (clipped, preconditioned, weight decay included) are what train_step
  applies and what stunting's v1_update tests and v3_project projects (stunting.py).
  """
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=train.learning_rate, warmup_steps=train.warmup_steps,
      decay_steps=train.steps, end_value=train.learning_rate * train.min_lr_ratio)
  adamw = optax.adamw(schedule, b1=train.b1, b2=train.b2, weight_decay=train.weight_decay,
                      mask=_decay_mask)
  if train.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(train.grad_clip), adamw), schedule
  return adamw, schedule


def init_state(model_cfg: model_lib.Config, tx: optax.GradientTransformation, seed: int,
               params: model_lib.Params | None = None) -> TrainState:
  """A state at step 0: `params` (e.g. GPT-2 weights) or fresh ones from `seed`.

  Jit it with out_shardings to create the state directly in its shardings.
  """
  params_key, run_key = jax.random.split(jax.random.key(seed))
  if params is None:
    params = model_lib.init(model_cfg, params_key)
  zero = jnp.zeros((), jnp.int32)
  return TrainState(step=zero, params=params, opt_state=tx.init(params),
                    rng=jax.random.key_data(run_key), nonfinite_in_a_row=zero,
                    nonfinite_total=zero, skipped_total=zero,
                    balance_debt=jnp.zeros((), jnp.float32))


def state_shardings(model_cfg: model_lib.Config, tx: optax.GradientTransformation,
                    mesh: jax.sharding.Mesh) -> tuple[TrainState, TrainState]:
  """(abstract state with shardings, shardings): parameters replicated or fsdp-sharded."""
  shapes = jax.eval_shape(functools.partial(init_state, model_cfg, tx, 0))
  shardings = sharding.state_sharding(mesh, shapes)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          shapes, shardings)
  return abstract, shardings


def create_state(settings: Settings, tx: optax.GradientTransformation,
                 shardings: TrainState) -> TrainState:
  """The initial state (from `pretrained`, if any), created directly in its shardings."""
  init = functools.partial(init_state, settings.model, tx, settings.seed)
  return jax.jit(init, out_shardings=shardings)(params=pretrained_params(settings))


# ----------------------------------------------------------------------------- parameters


def pretrained_params(settings: Settings) -> model_lib.Params | None:
  """The parameters of `pretrained` (None without one), in the model's dtypes."""
  if not settings.pretrained:
    return None
  mc = settings.model
  return gpt2.load(settings.pretrained, dtype=mc.dtype, param_dtype=mc.param_dtype,
                   dropout=mc.dropout, remat=mc.remat)[1]


def restore_params(settings: Settings, workdir: str,
                   mesh: jax.sharding.Mesh | None = None) -> model_lib.Params | None:
  """The parameters of the workdir's newest readable checkpoint (None: no checkpoint).

  They are placed as training places them on `mesh` (default: the config's mesh).
  """
  if not (epath.Path(workdir) / "checkpoints").is_dir():
    return None
  mesh = make_mesh(settings.mesh) if mesh is None else mesh
  tx, _ = make_optimizer(settings.train)
  abstract, _ = state_shardings(settings.model, tx, mesh)
  with checkpoint.manager(workdir) as mngr:
    restored = checkpoint.restore(mngr, abstract)
  return None if restored is None else restored[0].params


def load_params(settings: Settings, workdir: str,
                mesh: jax.sharding.Mesh | None = None) -> tuple[model_lib.Params, str]:
  """(params, where from) for a command: the workdir's newest checkpoint, else the
  config's `pretrained` directory, else fresh parameters from the seed; logs which."""
  params = restore_params(settings, workdir, mesh)
  if params is not None:
    source = f"the newest checkpoint in {workdir}"
  elif settings.pretrained:
    params, source = pretrained_params(settings), f"the pretrained {settings.pretrained}"
  else:
    params = model_lib.init(settings.model, jax.random.key(settings.seed))
    source = "fresh parameters"
    logging.warning("no checkpoint in %s and no `pretrained`: using freshly initialised "
                    "parameters", workdir)
  logging.info("parameters: %s", source)
  return params, source
