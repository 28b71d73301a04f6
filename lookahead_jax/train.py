"""Training: config schema, sharded train step, orbax checkpoints, metrics, the loop.

Read top to bottom: config (schema and validation); mesh; input; model and optimizer;
update step; checkpoint; loop. Everything at a jit boundary is a pure function of
pytrees: `train_step(state, batch) -> (state, metrics)` is ONE jitted function over the
mesh, with in/out shardings and the state donated (DESIGN.md sections 4 and 7).

The loss is an explicit per-token computation (`objectives`): one forward pass
gives the logits and the teacher-forced keys/values (what the lookahead reuses), the
per-token cross-entropy [b, T] is reduced with the batch weights and normalised by the
number of weighted tokens of the GLOBAL batch. So gradient accumulation over
micro-batches sums to exactly the full-batch gradient, and a sharded step computes the
same loss as an unsharded one. Stunting (DESIGN.md section 3) changes the per-token
terms there and the gradients in `train_step`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import math
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax.struct
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm
from absl import logging
from etils import epath
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lookahead_jax import gpt2
from lookahead_jax import lookahead as lookahead_lib
from lookahead_jax import metrics as metrics_lib
from lookahead_jax import model as model_lib
from lookahead_jax import sharding
from lookahead_jax import stunting as stunting_lib
from lookahead_jax.data import builders, pipeline
from lookahead_jax.data.tokenizers import Tokenizer, get_tokenizer

Array = jax.Array
ConfigDict = ml_collections.ConfigDict

# ----------------------------------------------------------------------------- config

# `stunting.mode`s: the variants of DESIGN.md section 3 (stunting.py).
STUNTING_MODES = stunting_lib.MODES
_FREE_FORM = ("data.options",)  # builder options, checked by the builder itself


class ConfigError(ValueError):
  """A bad configuration: one line naming the key and the fix."""


class NonFiniteError(RuntimeError):
  """Too many non-finite steps in a row; the last good state is checkpointed."""


def base_config() -> ConfigDict:
  """The schema: every key the trainer reads, with its default. configs/*.py start here.

  Sections: seed; model (model.Config's fields); data; train; mesh; lookahead (the
  lookahead that amplifies predictions; evaluation and stunting read it); stunting.
  """
  c = ConfigDict()
  c.seed = 0
  c.model = ConfigDict(dataclasses.asdict(model_lib.Config()))
  # A local Hugging Face GPT-2 directory (gpt2.py): the initial parameters of training, and
  # the parameters evaluation uses when the workdir has no checkpoint. "": none.
  c.pretrained = ""

  c.data = ConfigDict()
  c.data.name = "rhyme"  # rhyme | article | tsp | text_files | any prepared TFDS dataset
  # None: $TFDS_DATA_DIR, else ~/tensorflow_datasets
  c.data.data_dir = ml_collections.config_dict.placeholder(str)
  c.data.options = ConfigDict()  # builder options, e.g. paths=(...) for text_files
  c.data.seq_len = 128  # T: tokens per row
  c.data.tokenizer = ""  # "": the dataset's own; "sentencepiece:N"; "byte"; a .model; an HF dir
  c.data.text_key = "text"
  c.data.train_split = "train"
  c.data.eval_split = "validation"
  c.data.packing_bins = 128
  c.data.read_threads = 0
  c.data.prefetch = 2

  c.train = ConfigDict()
  c.train.steps = 1000
  c.train.global_batch = 32  # rows per optimizer step, over all devices and micro-batches
  c.train.grad_accum = 1  # micro-batches per step (lax.scan inside the step)
  c.train.learning_rate = 3e-4  # peak, after linear warm-up; then cosine decay
  c.train.warmup_steps = 100
  c.train.min_lr_ratio = 0.1  # the cosine ends at learning_rate * min_lr_ratio
  c.train.weight_decay = 0.1  # AdamW, on matrices and embeddings only
  c.train.b1 = 0.9
  c.train.b2 = 0.95
  c.train.grad_clip = 1.0  # global norm; 0: no clipping
  c.train.log_every = 20
  c.train.eval_every = 200  # 0: only at the end
  c.train.eval_batches = 8  # global batches of the eval split; 0: the whole split
  c.train.checkpoint_every = 200  # 0: only at the end (and on SIGTERM)
  c.train.keep_checkpoints = 3
  c.train.max_nonfinite_in_a_row = 5

  c.mesh = ConfigDict()
  c.mesh.data = -1  # -1: all devices not used by the other axis
  c.mesh.fsdp = 1

  c.lookahead = ConfigDict()
  c.lookahead.kind = "beam"  # beam | smc
  c.lookahead.width = 4  # beams B, or SMC particles N
  c.lookahead.horizon = 4  # H tokens, the predicted one included
  c.lookahead.temperature = 1.0  # tau of the amplified distribution
  c.lookahead.scheme = "sum"  # sum | max
  c.lookahead.mixture = "linear"  # linear | loglinear
  c.lookahead.lam = 0.5  # weight of q in the mixture
  c.lookahead.chunk = 0  # anchors per vmapped chunk; 0: all
  c.lookahead.length_penalty = 1.0
  c.lookahead.beta = 4.0  # SMC tempering

  c.stunting = ConfigDict()
  c.stunting.mode = "none"  # one of STUNTING_MODES (stunting.py)
  c.stunting.v4_base = "v3_balance"  # v4: this mode with SMC lookahead
  c.stunting.penalty = 1.0  # v2_penalty coefficient
  c.stunting.debt_decay = 0.9  # v3_balance: per-step decay of unbalanced movement
  c.stunting.alignment_every = 10  # steps between cos(g, g_A) logs (v1_update, v3_project: 1)
  # Monitoring: the lookahead gain on held-out batches with the stunting lookahead and a
  # dev lookahead that stunting never uses; a warning when the dev gain is not positive
  # for monitor_patience evaluations in a row (the model may have learned the lookahead).
  c.stunting.monitor_every = 0  # steps; 0: off
  c.stunting.monitor_batches = 2  # batches of the eval split, fixed for the whole run
  c.stunting.monitor_patience = 3
  c.stunting.dev_kind = ""  # "": the other kind than lookahead.kind
  c.stunting.dev_width = 8
  c.stunting.dev_horizon = 0  # 0: lookahead.horizon

  # The evaluation suite (evaluate.py): every (kind, width, horizon) is a lookahead; every
  # (scheme, temperature, mixture, lam) is read off the same paths. tau and lam are chosen
  # on validation_split, the gain is reported on test_split.
  c.eval = ConfigDict()
  c.eval.at_end = False  # `lookahead-jax train` runs the suite after its last step
  c.eval.validation_split = "validation"
  c.eval.test_split = "test"
  c.eval.batch_size = 16  # rows per global batch
  c.eval.max_batches = 0  # per split; 0: the whole split
  c.eval.kinds = ("beam", "smc")
  c.eval.widths = (1, 2, 4)
  c.eval.horizons = (1, 2, 4)
  c.eval.schemes = ("sum", "max")
  c.eval.mixtures = ("linear", "loglinear")
  c.eval.temperatures = (0.25, 0.5, 1.0, 2.0, 4.0)
  c.eval.lams = (0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
  c.eval.tsp_instances = 300  # tsp only: test instances whose tours the model decodes
  c.eval.seed = 0
  return c


def model_config(config: ConfigDict) -> model_lib.Config:
  return model_lib.Config(**config.model.to_dict())


def lookahead_settings(config: ConfigDict, eos_id: int | None = None) -> lookahead_lib.Lookahead:
  """The `Lookahead` of the config's lookahead section (paths end at `eos_id`)."""
  la = config.lookahead
  return lookahead_lib.Lookahead(kind=la.kind, width=la.width, horizon=la.horizon,
                                 length_penalty=la.length_penalty, chunk=la.chunk, eos_id=eos_id)


def stunting_settings(config: ConfigDict, eos_id: int | None = None) -> stunting_lib.Stunting:
  """The `Stunting` of the config (v4 resolved to its base mode with an SMC lookahead)."""
  st, la = config.stunting, config.lookahead
  mode = st.v4_base if st.mode == "v4" else st.mode
  lookahead = None
  if mode in stunting_lib.LOOKAHEAD_MODES:
    lookahead = lookahead_settings(config, eos_id)
    if st.mode == "v4":
      lookahead = dataclasses.replace(lookahead, kind="smc")
  return stunting_lib.Stunting(
      mode=mode, lookahead=lookahead, temperature=la.temperature, scheme=la.scheme,
      mixture=la.mixture, lam=la.lam, beta=la.beta, penalty=st.penalty,
      debt_decay=st.debt_decay, alignment_every=st.alignment_every)


def dev_lookahead(config: ConfigDict, eos_id: int | None = None) -> lookahead_lib.Lookahead:
  """The monitoring lookahead that stunting never uses (another kind by default)."""
  st, la = config.stunting, config.lookahead
  kind = st.dev_kind or ("smc" if la.kind == "beam" else "beam")
  return dataclasses.replace(lookahead_settings(config, eos_id), kind=kind, width=st.dev_width,
                             horizon=st.dev_horizon or la.horizon)


def _check_keys(config: ConfigDict, schema: ConfigDict, prefix: str = "") -> None:
  for key in config.keys():
    name = prefix + key
    if key not in schema:
      raise ConfigError(f"unknown key {name}: the keys of {prefix[:-1] or 'the config'} are "
                        f"{', '.join(sorted(schema.keys()))}")
    if isinstance(schema[key], ConfigDict) and name not in _FREE_FORM:
      if not isinstance(config[key], ConfigDict):
        raise ConfigError(f"{name} must be a section (ConfigDict) with keys "
                          f"{', '.join(sorted(schema[key].keys()))}")
      _check_keys(config[key], schema[key], name + ".")
  missing = sorted(set(schema.keys()) - set(config.keys()))
  if missing:
    raise ConfigError(f"missing key {prefix}{missing[0]}: start the config from "
                      "train.base_config() or add it")


def _require(ok: bool, key: str, value: Any, fix: str) -> None:
  if not ok:
    raise ConfigError(f"{key}={value!r}: {fix}")


def validate(config: ConfigDict) -> None:
  """Checks the whole config before anything compiles; raises `ConfigError` (one line).

  Unknown or missing keys, impossible values, a global batch that the devices (times
  the micro-batches) do not divide, a mesh that does not tile the devices, lookahead
  settings the model cannot run, a tokenizer larger than the model's vocabulary, a
  dataset that is not prepared and cannot be prepared here.
  """
  _check_keys(config, base_config())
  t, d, m = config.train, config.data, config.model
  try:
    mc = model_config(config)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  for key in ("vocab_size", "max_len", "num_layers", "d_model", "num_heads", "mlp_ratio"):
    _require(m[key] >= 1, f"model.{key}", m[key], "must be >= 1")
  _require(0.0 <= m.dropout < 1.0, "model.dropout", m.dropout, "must be in [0, 1)")
  _require(m.layer_norm_eps > 0, "model.layer_norm_eps", m.layer_norm_eps, "must be > 0")

  for key in ("steps", "global_batch", "grad_accum", "log_every", "keep_checkpoints",
              "max_nonfinite_in_a_row"):
    _require(t[key] >= 1, f"train.{key}", t[key], "must be >= 1")
  for key in ("eval_every", "eval_batches", "checkpoint_every", "weight_decay", "grad_clip"):
    _require(t[key] >= 0, f"train.{key}", t[key], "must be >= 0")
  _require(t.learning_rate > 0, "train.learning_rate", t.learning_rate, "must be > 0")
  _require(0 <= t.warmup_steps < t.steps, "train.warmup_steps", t.warmup_steps,
           f"must be in [0, train.steps={t.steps}) (the cosine decay needs a step)")
  _require(0.0 <= t.min_lr_ratio <= 1.0, "train.min_lr_ratio", t.min_lr_ratio,
           "must be in [0, 1]")
  for key in ("b1", "b2"):
    _require(0.0 <= t[key] < 1.0, f"train.{key}", t[key], "must be in [0, 1)")
  _require(t.global_batch % t.grad_accum == 0, "train.global_batch", t.global_batch,
           f"must be a multiple of train.grad_accum={t.grad_accum}")

  try:
    data, fsdp = sharding.mesh_shape(config.mesh.data, config.mesh.fsdp, jax.device_count())
  except ValueError as e:
    raise ConfigError(str(e)) from None
  devices = data * fsdp
  _require(t.global_batch % (devices * t.grad_accum) == 0, "train.global_batch", t.global_batch,
           f"must be divisible by the {devices} devices x train.grad_accum={t.grad_accum}; "
           f"use a multiple of {devices * t.grad_accum}")

  _require(1 <= d.seq_len <= m.max_len, "data.seq_len", d.seq_len,
           f"must be in [1, model.max_len={m.max_len}]")
  _require(d.packing_bins >= 1, "data.packing_bins", d.packing_bins, "must be >= 1")
  for key in ("read_threads", "prefetch"):
    _require(d[key] >= 0, f"data.{key}", d[key], "must be >= 0")

  la = config.lookahead
  try:
    lookahead_settings(config).check(mc)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  _require(la.scheme in lookahead_lib.SCHEMES, "lookahead.scheme", la.scheme,
           f"use one of {', '.join(lookahead_lib.SCHEMES)}")
  _require(la.mixture in lookahead_lib.MIXTURES, "lookahead.mixture", la.mixture,
           f"use one of {', '.join(lookahead_lib.MIXTURES)}")
  _require(la.temperature > 0, "lookahead.temperature", la.temperature, "must be > 0")
  _require(0.0 <= la.lam < 1.0 or (la.mixture == "loglinear" and la.lam == 1.0),
           "lookahead.lam", la.lam,
           "must be in [0, 1) for a linear mixture, [0, 1] for a loglinear one")
  _require(la.chunk >= 0, "lookahead.chunk", la.chunk, "must be >= 0 (0: all anchors)")
  _require(la.beta >= 1.0, "lookahead.beta", la.beta, "must be >= 1")
  st = config.stunting
  _require(st.mode in STUNTING_MODES, "stunting.mode", st.mode,
           f"use one of {', '.join(STUNTING_MODES)}")
  _require(st.v4_base in stunting_lib.LOOKAHEAD_MODES, "stunting.v4_base", st.v4_base,
           f"use one of {', '.join(stunting_lib.LOOKAHEAD_MODES)}")
  _require(st.penalty >= 0, "stunting.penalty", st.penalty, "must be >= 0")
  _require(0.0 <= st.debt_decay <= 1.0, "stunting.debt_decay", st.debt_decay, "must be in [0, 1]")
  for key in ("alignment_every", "monitor_batches", "monitor_patience", "dev_width"):
    _require(st[key] >= 1, f"stunting.{key}", st[key], "must be >= 1")
  _require(st.monitor_every >= 0, "stunting.monitor_every", st.monitor_every,
           "must be >= 0 (0: no monitoring)")
  _require(st.dev_kind in ("",) + lookahead_lib.KINDS, "stunting.dev_kind", st.dev_kind,
           f"use one of {', '.join(lookahead_lib.KINDS)} (or '' for the other kind)")
  try:
    dev_lookahead(config).check(mc)
    if st.mode == "v4":
      stunting_settings(config).lookahead.check(mc)
  except ValueError as e:
    raise ConfigError(f"stunting: {e}") from None

  ev = config.eval
  for key in ("batch_size", "tsp_instances"):
    _require(ev[key] >= 1, f"eval.{key}", ev[key], "must be >= 1")
  _require(ev.max_batches >= 0, "eval.max_batches", ev.max_batches, "must be >= 0 (0: all)")
  _require(ev.batch_size % devices == 0, "eval.batch_size", ev.batch_size,
           f"must be divisible by the {devices} devices; use a multiple of {devices}")
  for key, allowed in (("kinds", lookahead_lib.KINDS), ("schemes", lookahead_lib.SCHEMES),
                       ("mixtures", lookahead_lib.MIXTURES)):
    bad = [x for x in ev[key] if x not in allowed] or ([] if ev[key] else ["(empty)"])
    _require(not bad, f"eval.{key}", tuple(ev[key]), f"use values from {', '.join(allowed)}")
  for kind in ev.kinds:
    for width in ev.widths:
      for horizon in ev.horizons:
        try:
          lookahead_lib.Lookahead(kind=kind, width=width, horizon=horizon).check(mc)
        except ValueError as e:
          raise ConfigError(f"eval.widths/eval.horizons: {e}") from None
  _require(ev.temperatures and all(x > 0 for x in ev.temperatures), "eval.temperatures",
           tuple(ev.temperatures), "must be a non-empty list of values > 0")
  top = 1.0 if "linear" in ev.mixtures else 1.0 + 1e-9  # lam = 1 only in a loglinear mixture
  _require(bool(ev.lams) and min(ev.lams) >= 0 and max(ev.lams) < top, "eval.lams",
           tuple(ev.lams), "must be a non-empty list in [0, 1) (1 only for a loglinear mixture)")

  if config.pretrained:
    _check_pretrained(config, mc)
  tokenizer = _checked_data(config)
  _require(m.vocab_size >= tokenizer.vocab_size, "model.vocab_size", m.vocab_size,
           f"the {d.name} tokenizer has {tokenizer.vocab_size} tokens; set model.vocab_size="
           f"{tokenizer.vocab_size} (or more)")


@contextlib.contextmanager
def _main_process_first(what: str):
  """Process 0 runs the block first, then the others (one process: just the block).

  For files every process would otherwise create at once in shared storage (a local
  testbed prepared on first use, a SentencePiece model trained on first use): the
  others find them ready. An error in process 0 reaches the others too, who then meet
  the same error themselves.
  """
  several = jax.process_count() > 1
  if several and jax.process_index() != 0:
    multihost_utils.sync_global_devices(what)
  try:
    yield
  finally:
    if several and jax.process_index() == 0:
      multihost_utils.sync_global_devices(what)


def _check_pretrained(config: ConfigDict, mc: model_lib.Config) -> None:
  """The pretrained directory exists and its shape is the model's."""
  path = config.pretrained
  try:
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
      found = gpt2.config_from_hf(json.load(f))
  except (OSError, ValueError) as e:
    raise ConfigError(f"pretrained={path!r}: {str(e).splitlines()[0]}; give a Hugging Face "
                      "GPT-2 directory (config.json plus model.safetensors or "
                      "pytorch_model.bin)") from None
  for key in ("vocab_size", "max_len", "num_layers", "d_model", "num_heads", "mlp_ratio",
              "layer_norm_eps"):
    _require(getattr(found, key) == getattr(mc, key), f"model.{key}", getattr(mc, key),
             f"the checkpoint in {path} has {getattr(found, key)}; set model.{key}="
             f"{getattr(found, key)}")


def pretrained_params(config: ConfigDict) -> model_lib.Params | None:
  """The parameters of config.pretrained (None without one), in the model's dtypes."""
  if not config.pretrained:
    return None
  mc = model_config(config)
  return gpt2.load(config.pretrained, dtype=mc.dtype, param_dtype=mc.param_dtype,
                   dropout=mc.dropout, remat=mc.remat)[1]


def _checked_data(config: ConfigDict) -> Tokenizer:
  """The dataset's tokenizer, after checking that the dataset can be read here.

  A local testbed is prepared here, and a SentencePiece tokenizer trained, by process 0
  first (see `_main_process_first`).
  """
  d = config.data
  options = d.options.to_dict()
  with _main_process_first("prepare the dataset and its tokenizer"):
    try:
      builders.prepare(d.name, d.data_dir, **options)
    except builders.DatasetNotPreparedError as e:
      raise ConfigError(f"data.name={d.name!r}: {e}") from None
    except (ValueError, FileNotFoundError) as e:
      raise ConfigError(f"data.options: {e}") from None
    try:
      return tokenizer_for(config)
    except (ValueError, OSError) as e:
      raise ConfigError(f"data.tokenizer={d.tokenizer!r}: {e}") from None


# ----------------------------------------------------------------------------- mesh


def make_mesh(config: ConfigDict) -> jax.sharding.Mesh:
  return sharding.make_mesh(config.mesh.data, config.mesh.fsdp)


# ----------------------------------------------------------------------------- input


def tokenizer_for(config: ConfigDict) -> Tokenizer:
  """The tokenizer the data is read with, from `data.tokenizer`.

  "" is the dataset's own (bytes for text, tsp's vocabulary for tsp); "sentencepiece:N"
  a SentencePiece model of N pieces trained on the train split (once; it is saved beside
  the dataset); anything else goes to `tokenizers.get_tokenizer` ("byte", a .model file,
  a directory with a Hugging Face tokenizer).
  """
  d = config.data
  options = d.options.to_dict()
  if d.tokenizer.startswith("sentencepiece:"):
    size = int(d.tokenizer.split(":", 1)[1])
    return builders.sentencepiece_for(d.name, size, d.data_dir, d.train_split, d.text_key,
                                      **options)
  if d.tokenizer:
    return get_tokenizer(d.tokenizer)
  return builders.default_tokenizer(d.name.split("/")[0].split(":")[0], **options)


def data_kwargs(config: ConfigDict) -> dict[str, Any]:
  d = config.data
  return dict(seq_len=d.seq_len, global_batch_size=config.train.global_batch,
              tokenizer=tokenizer_for(config), data_dir=d.data_dir, options=d.options.to_dict(),
              text_key=d.text_key, packing_bins=d.packing_bins, read_threads=d.read_threads)


def make_train_iterator(config: ConfigDict) -> pipeline.BatchIterator:
  """Shuffled, repeated training batches local to this process (checkpointable)."""
  return pipeline.make_iterator(config.data.name, config.data.train_split, seed=config.seed,
                                prefetch=config.data.prefetch, **data_kwargs(config))


def make_eval_iterator(config: ConfigDict) -> Iterator[dict[str, np.ndarray]]:
  """The first `train.eval_batches` batches of the eval split (0: all of it), in order."""
  batches = pipeline.make_eval_iterator(config.data.name, config.data.eval_split,
                                        **data_kwargs(config))
  n = config.train.eval_batches
  return batches if n == 0 else itertools.islice(batches, n)


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
  skipped_total:      [] int32 updates skipped by stunting (v1_update) in the whole run.
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


def make_optimizer(train: ConfigDict) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Clip by global norm, then AdamW on a linear warm-up + cosine decay schedule."""
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


def create_state(config: ConfigDict, tx: optax.GradientTransformation,
                 shardings: TrainState) -> TrainState:
  """The initial state (from config.pretrained, if any), created directly in its shardings."""
  init = functools.partial(init_state, model_config(config), tx, config.seed)
  return jax.jit(init, out_shardings=shardings)(params=pretrained_params(config))


# ----------------------------------------------------------------------------- update step


def objectives(params: model_lib.Params, batch: Mapping[str, Array], rng: Array,
               norm: Array, target: Array, *, model_cfg: model_lib.Config,
               stunt: stunting_lib.Stunting, dropout: bool = True
               ) -> tuple[tuple[Array, Array], dict[str, Array]]:
  """The training loss and the alignment A of a (micro-)batch, and its summed statistics.

  Args:
    params: model parameters.
    batch: inputs, targets, positions, segment_ids [b, T] int32; weights [b, T] float32.
    rng: the step's key (dropout, SMC lookahead).
    norm: [] the number of weighted tokens of the whole global batch (all micro-batches),
      so that the micro-batch objectives sum to the mean over the global batch.
    target: [] v3_balance: the weighted movement this micro-batch should have.
    model_cfg: the model.
    stunt: the stunting settings (stunting.py).
    dropout: whether to apply the model's dropout.

  Returns:
    ((loss [], A []), aux): A = sum_i sum_w q_i(w) log p_i(w) / norm (0 without a
    lookahead); aux sums over the micro-batch: ce_sum, tokens, correct, and with a
    lookahead toward, movement, kl, penalty, balanced (the realized sum w_i m_i).
  """
  dropout_key, lookahead_key = jax.random.split(rng)
  # One teacher-forced pass: the logits and every layer's keys/values, which the stunting
  # lookahead reuses.
  logits, cache = model_lib.forward(params, batch["inputs"], batch["positions"], config=model_cfg,
                                    segment_ids=batch["segment_ids"],
                                    dropout_rng=dropout_key if dropout else None,
                                    myopic=stunt.mode == "myopic")
  targets, weights = batch["targets"], batch["weights"]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # [b, T]
  aux = {"ce_sum": jnp.sum(ce * weights), "tokens": jnp.sum(weights),
         "correct": jnp.sum((jnp.argmax(logits, -1) == targets) * weights)}
  if stunt.lookahead is None:
    return (aux["ce_sum"] / norm, jnp.zeros(())), aux

  # The amplified targets, from the current parameters under stop_gradient.
  sg = jax.lax.stop_gradient
  log_p = jax.nn.log_softmax(logits)
  paths = lookahead_lib.paths_from_pass(
      sg(params), sg(logits), sg(cache), batch["positions"], batch["segment_ids"], lookahead_key,
      stunt.beta, config=model_cfg, lookahead=stunt.lookahead)
  amp = lookahead_lib.amplify(paths, stunt.temperature, stunt.scheme)
  terms = stunting_lib.token_terms(sg(log_p), targets, amp, stunt)
  token_weights, balanced = weights, jnp.zeros(())
  if stunt.mode == "v1_token":
    token_weights = weights * ~terms["toward"]
  elif stunt.mode == "v3_balance":
    token_weights, balanced = stunting_lib.balance_weights(terms["m"], weights, target)
  penalty = jnp.sum(stunting_lib.penalty(log_p, amp) * weights)
  loss = jnp.sum(ce * token_weights) / norm
  if stunt.mode == "v2_penalty":
    loss = loss + stunt.penalty * penalty / norm
  alignment = jnp.sum(stunting_lib.alignment(log_p, amp) * weights) / norm
  aux.update(toward=jnp.sum(terms["toward"] * weights), movement=jnp.sum(terms["m"] * weights),
             kl=jnp.sum(terms["kl"] * weights), penalty=sg(penalty), balanced=balanced)
  return (loss, alignment), aux


def _micro_batches(batch: Mapping[str, Array], k: int, micro_sharding) -> dict[str, Array]:
  """[B, ...] -> [k, B/k, ...]; micro-batch i takes rows i, i+k, ... (each device's share)."""
  def split(x):
    x = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
    return jax.lax.with_sharding_constraint(x, micro_sharding)
  return {key: split(x) for key, x in batch.items()}


def train_step(state: TrainState, batch: Mapping[str, Array], *,
               tx: optax.GradientTransformation, schedule: optax.Schedule,
               model_cfg: model_lib.Config, stunt: stunting_lib.Stunting, grad_accum: int,
               micro_sharding: NamedSharding) -> tuple[TrainState, dict[str, Array]]:
  """One optimizer step on a global batch [B, T]; a non-finite step changes only counters.

  One forward pass per micro-batch gives the loss and the alignment A; the gradient of the
  loss (and of A, when stunting uses it or logs cos(g, g_A)) are summed over `grad_accum`
  micro-batches by a lax.scan, exactly the full-batch gradients (see `objectives`).
  Stunting then acts on them: v1_update skips the update when it would raise A,
  v3_project removes the update's component along grad A. If the loss or the global
  gradient norm is not finite, parameters and optimizer state stay as they were and the
  non-finite counters go up.
  """
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  norm = jnp.maximum(jnp.sum(batch["weights"]), 1.0)
  target = -state.balance_debt / grad_accum  # v3_balance: pay back earlier imbalance
  lookahead = stunt.lookahead is not None
  with_alignment = lookahead and (stunt.needs_alignment_grad
                                  or state.step % stunt.alignment_every == 0)

  def micro_step(i, micro):
    objective = functools.partial(objectives, batch=micro, rng=jax.random.fold_in(rng, i),
                                  norm=norm, target=target, model_cfg=model_cfg, stunt=stunt)
    (loss, _), vjp, aux = jax.vjp(objective, state.params, has_aux=True)
    one, zero = jnp.ones(()), jnp.zeros(())
    grads = vjp((one, zero))[0]
    grads_a = ()  # grad A: only with a lookahead, and only when used
    if stunt.needs_alignment_grad:
      grads_a = vjp((zero, one))[0]
    elif lookahead:
      grads_a = jax.lax.cond(with_alignment, lambda: vjp((zero, one))[0],
                             lambda: jax.tree.map(jnp.zeros_like, grads))
    return loss, aux, grads, grads_a

  def accumulate(total, xs):
    return jax.tree.map(jnp.add, total, micro_step(*xs)), None

  if grad_accum == 1:
    loss, aux, grads, grads_a = micro_step(0, batch)
  else:
    micro = _micro_batches(batch, grad_accum, micro_sharding)
    shapes = jax.eval_shape(micro_step, 0, jax.tree.map(lambda x: x[0], micro))
    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
    (loss, aux, grads, grads_a), _ = jax.lax.scan(accumulate, zeros,
                                                  (jnp.arange(grad_accum), micro))

  grad_norm = optax.tree.norm(grads)
  ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  tokens = jnp.maximum(aux["tokens"], 1.0)
  metrics = {"loss": loss, "ce": aux["ce_sum"] / tokens, "accuracy": aux["correct"] / tokens,
             "grad_norm": grad_norm}
  skip = jnp.zeros((), bool)
  debt = state.balance_debt
  if lookahead:
    # The update moves the parameters along g = -grads; <g, g_A> > 0 raises the alignment.
    cos = stunting_lib.cosine(jax.tree.map(jnp.negative, grads), grads_a)
    metrics.update(toward=aux["toward"] / tokens, movement=aux["movement"] / tokens,
                   kl=aux["kl"] / tokens, penalty=aux["penalty"] / tokens,
                   alignment_cos=jnp.where(with_alignment, cos, jnp.nan))
    if stunt.mode == "v1_update":
      skip = cos > 0
    elif stunt.mode == "v3_project":
      grads = stunting_lib.project_out(grads, grads_a)
    elif stunt.mode == "v3_balance":
      debt = stunt.debt_decay * (debt + aux["balanced"])
      metrics.update(balance_debt=debt)
  apply = ok & ~skip
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  keep_if = lambda new, old: jax.tree.map(lambda n, o: jnp.where(apply, n, o), new, old)
  bad = (~ok).astype(jnp.int32)
  skipped = (ok & skip).astype(jnp.int32)
  new_state = state.replace(
      step=state.step + 1,
      params=keep_if(params, state.params),
      opt_state=keep_if(opt_state, state.opt_state),
      nonfinite_in_a_row=(state.nonfinite_in_a_row + 1) * bad,
      nonfinite_total=state.nonfinite_total + bad,
      skipped_total=state.skipped_total + skipped,
      balance_debt=jnp.where(ok, debt, state.balance_debt))
  metrics.update(
      # the schedule position is the number of applied updates
      learning_rate=schedule(state.step - state.nonfinite_total - state.skipped_total),
      nonfinite=bad, nonfinite_in_a_row=new_state.nonfinite_in_a_row, skipped=skipped)
  return new_state, metrics


def eval_step(params: model_lib.Params, batch: Mapping[str, Array], *,
              model_cfg: model_lib.Config) -> dict[str, Array]:
  """Summed next-token statistics of an eval batch (ce_sum, tokens, correct)."""
  return objectives(params, batch, jax.random.key(0), jnp.ones(()), jnp.zeros(()),
                    model_cfg=model_cfg, stunt=stunting_lib.Stunting(), dropout=False)[1]


def jit_train_step(config: ConfigDict, mesh: jax.sharding.Mesh, tx: optax.GradientTransformation,
                   schedule: optax.Schedule, shardings: TrainState) -> Callable:
  """`train_step` jitted over the mesh: state in its shardings (donated), batch split."""
  step = functools.partial(
      train_step, tx=tx, schedule=schedule, model_cfg=model_config(config),
      stunt=stunting_settings(config, tokenizer_for(config).eod_id),
      grad_accum=config.train.grad_accum,
      micro_sharding=NamedSharding(mesh, P(None, sharding.BATCH_AXES)))
  return jax.jit(step, in_shardings=(shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)


def jit_eval_step(config: ConfigDict, mesh: jax.sharding.Mesh, shardings: TrainState) -> Callable:
  step = functools.partial(eval_step, model_cfg=model_config(config))
  return jax.jit(step, in_shardings=(shardings.params, sharding.batch_sharding(mesh)),
                 out_shardings=sharding.replicated(mesh))


# ----------------------------------------------------------------------------- checkpoint

# workdir/checkpoints/<step>/ holds two items: "state" (the TrainState, orbax
# StandardSave: sharded arrays, each process writes its shards) and "data" (the grain
# iterator state of every process, JSON). Orbax writes a step into a temporary
# directory and renames it when complete, so an interrupted save is never a step.


def _absolute(workdir: str | os.PathLike) -> epath.Path:
  """The workdir as an absolute path; a URL (gs://bucket/dir, any scheme://) as it is."""
  workdir = os.fspath(workdir)
  return epath.Path(workdir if "://" in workdir else os.path.abspath(workdir))


def checkpoint_manager(workdir: str, train: ConfigDict | None = None) -> ocp.CheckpointManager:
  """The CheckpointManager of workdir/checkpoints.

  With the train section (training): asynchronous saves, the last `keep_checkpoints`
  kept, temporary directories of interrupted saves removed. Without (reading
  checkpoints): nothing is created, kept or removed.
  """
  options = ocp.CheckpointManagerOptions(
      max_to_keep=train.keep_checkpoints if train else None, create=train is not None,
      enable_async_checkpointing=True, cleanup_tmp_directories=train is not None)
  return ocp.CheckpointManager(_absolute(workdir) / "checkpoints", options=options)


def save_checkpoint(manager: ocp.CheckpointManager, state: TrainState,
                    iterator: pipeline.BatchIterator) -> None:
  """Starts saving state and iterator at state.step; returns once the save is under way."""
  manager.save(int(state.step), args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator)),
               force=True)


def restore_checkpoint(manager: ocp.CheckpointManager, abstract: TrainState,
                       make_iterator: Callable[[], pipeline.BatchIterator] | None = None,
                       ) -> tuple[TrainState, pipeline.BatchIterator | None, list[int]] | None:
  """The newest readable checkpoint: (state, iterator or None, unreadable newer steps).

  A step that fails to restore (truncated or corrupt files) is reported in one line and
  the next older one is tried. Returns None when there is no readable checkpoint.
  """
  bad = []
  for step in sorted(manager.all_steps(), reverse=True):
    items = {"state": ocp.args.StandardRestore(abstract)}
    saved_by = _data_saved_by(manager, step)
    new_layout = make_iterator is not None and saved_by not in (None, jax.process_count())
    if make_iterator is not None and not new_layout:
      items["data"] = grain.checkpoint.CheckpointRestore(make_iterator())
    try:
      restored = manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except  (orbax, tensorstore, json errors)
      first_line = (str(e).strip().splitlines() or [""])[0][:300]
      logging.warning("checkpoint step %d is unreadable, skipping it (%s: %s)", step,
                      type(e).__name__, first_line)
      bad.append(step)
      continue
    if new_layout:
      # Each process saved the position of its own document shard (p::N); with another
      # process count the shards are other documents, so no saved position applies.
      logging.warning("checkpoint step %d was saved by %d processes and this run has %d: "
                      "its parameters and optimizer state are restored, and the input "
                      "pipeline starts over in the new layout (another order of the data)",
                      step, saved_by, jax.process_count())
      return restored["state"], make_iterator(), bad
    return restored["state"], restored.get("data"), bad
  return None


def _data_saved_by(manager: ocp.CheckpointManager, step: int) -> int | None:
  """How many processes saved the step's data-iterator states (None: none found)."""
  names = [p.name for p in (epath.Path(manager.directory) / str(step) / "data").glob(
      "process_*-of-*.json")]
  counts = {int(name.rsplit("-of-", 1)[1].split(".")[0]) for name in names}
  return counts.pop() if len(counts) == 1 else None


def _set_aside(workdir: str, steps: list[int], manager: ocp.CheckpointManager) -> None:
  """Moves unreadable steps to workdir/checkpoints_unreadable/ so new saves can take them."""
  if jax.process_index() == 0:
    target = epath.Path(workdir) / "checkpoints_unreadable"
    target.mkdir(parents=True, exist_ok=True)
    if "://" in os.fspath(workdir):  # cloud storage has no empty directories to move into
      (target / "README.txt").write_text("Checkpoint steps that could not be restored.\n")
    for step in steps:
      dest = target / f"{step}-{int(time.time())}"
      (epath.Path(manager.directory) / str(step)).rename(dest)
      logging.warning("moved unreadable checkpoint step %d to %s", step, dest)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("set aside unreadable checkpoints")
  manager.reload()


def restore_params(config: ConfigDict, workdir: str,
                   mesh: jax.sharding.Mesh | None = None) -> model_lib.Params | None:
  """The parameters of the workdir's newest readable checkpoint (None: no checkpoint).

  They are placed as training places them on `mesh` (default: the config's mesh).
  """
  if not (epath.Path(workdir) / "checkpoints").is_dir():
    return None
  mesh = make_mesh(config) if mesh is None else mesh
  tx, _ = make_optimizer(config.train)
  abstract, _ = state_shardings(model_config(config), tx, mesh)
  with checkpoint_manager(workdir) as manager:
    restored = restore_checkpoint(manager, abstract)
  return None if restored is None else restored[0].params


# ----------------------------------------------------------------------------- loop


@contextlib.contextmanager
def _preemption_notice():
  """Yields `stop(step) -> bool`: whether to save and exit at this step boundary.

  One process: SIGTERM sets a flag. Several processes: jax's preemption sync point,
  which (with jax.distributed) catches SIGTERM on any host and makes every host agree
  on the same step.
  """
  if jax.process_count() > 1:
    yield multihost_utils.reached_preemption_sync_point
    return
  flag = threading.Event()
  previous = signal.signal(signal.SIGTERM, lambda *_: flag.set())
  try:
    yield lambda step: flag.is_set()
  finally:
    signal.signal(signal.SIGTERM, previous)


def evaluate_loss(eval_fn: Callable, params: model_lib.Params, config: ConfigDict,
                  batch_sharding: NamedSharding) -> dict[str, float]:
  """Validation loss and accuracy over the eval batches."""
  sums = None
  for batch in make_eval_iterator(config):
    out = eval_fn(params, pipeline.global_batch(batch, batch_sharding))
    sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
  sums = jax.device_get(sums)
  tokens = max(float(sums["tokens"]), 1.0)
  return {"val_loss": float(sums["ce_sum"]) / tokens,
          "val_accuracy": float(sums["correct"]) / tokens, "val_tokens": float(sums["tokens"])}


class _Log:
  """Per-step metrics on the host, averaged and written every `log_every` steps."""

  def __init__(self, writer: metrics_lib.Writer, tokens_per_step: int, start: float):
    self.writer, self.tokens_per_step = writer, tokens_per_step
    self.rows: list[dict[str, float]] = []
    self.last_time, self.paused = start, 0.0
    self.records: list[dict[str, float]] = []

  def add(self, metrics: dict[str, float]) -> None:
    self.rows.append(metrics)

  def flush(self, step: int) -> dict[str, float]:
    """Writes the mean of the rows since the last flush; returns the record.

    Step statistics are averaged over the finite steps (NaN entries, e.g. alignment_cos on
    steps that do not compute it, are left out); counters are summed.
    """
    now = time.perf_counter()
    seconds = max(now - self.last_time - self.paused, 1e-9)
    finite = [r for r in self.rows if not r["nonfinite"]] or self.rows
    counters = ("nonfinite", "skipped", "nonfinite_in_a_row", "learning_rate")
    record = {}
    for key in (k for k in self.rows[0] if k not in counters):
      values = [r[key] for r in finite if not math.isnan(r[key])]
      record[key] = statistics.fmean(values) if values else math.nan
    record.update(learning_rate=self.rows[-1]["learning_rate"],
                  nonfinite=sum(r["nonfinite"] for r in self.rows),
                  skipped=sum(r["skipped"] for r in self.rows),
                  step_time=seconds / len(self.rows),
                  tokens_per_s=self.tokens_per_step * len(self.rows) / seconds)
    self.writer.write(step, record)
    self.records.append(record)
    self.rows, self.last_time, self.paused = [], now, 0.0
    return record


class _Monitor:
  """The lookahead gain on fixed held-out batches, with the stunting and the dev lookahead.

  Every `stunting.monitor_every` steps; warns once the dev gain has not been positive for
  `stunting.monitor_patience` evaluations in a row (the model may have internalized the
  lookahead that stunting is meant to keep it from learning).
  """

  def __init__(self, config: ConfigDict, mesh: jax.sharding.Mesh):
    st = config.stunting
    self.every, self.patience, self.streak, self.last = st.monitor_every, st.monitor_patience, 0, {}
    if not self.every:
      return
    eod = tokenizer_for(config).eod_id
    stunt = stunting_settings(config, eod)
    lookaheads = {"stunting": stunt.lookahead or lookahead_settings(config, eod),
                  "dev": dev_lookahead(config, eod)}
    batch_sharding = sharding.batch_sharding(mesh)
    self.batches = [pipeline.global_batch(b, batch_sharding) for b in itertools.islice(
        pipeline.make_eval_iterator(config.data.name, config.data.eval_split,
                                    **data_kwargs(config)), st.monitor_batches)]
    self.fn = jax.jit(functools.partial(stunting_lib.monitor_gains, config=model_config(config),
                                        lookaheads=lookaheads, stunting=stunt))
    self.rng = jax.random.key(config.seed + 1)

  def __call__(self, step: int, params) -> dict[str, float]:
    """The gains at this step ({} when not a monitoring step)."""
    if not self.every or step % self.every:
      return {}
    outs = [self.fn(params, b, jax.random.fold_in(self.rng, i)) for i, b in enumerate(self.batches)]
    gains = {f"monitor_{k}": float(np.mean([float(o[k]) for o in outs])) for k in outs[0]}
    self.streak = 0 if gains["monitor_gain_dev"] > 0 else self.streak + 1
    if self.streak == self.patience:
      logging.warning("step %d: the dev lookahead's gain has not been positive for %d evaluations "
                      "in a row (now %+.4f nats/token): the model may have internalized the "
                      "lookahead", step, self.streak, gains["monitor_gain_dev"])
    self.last = dict(gains, step=step)
    return gains


def train_and_evaluate(config: ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config` in `workdir`, resuming from its newest readable checkpoint.

  Saves every `train.checkpoint_every` steps and at the end; on SIGTERM (at any time)
  saves at the next step boundary and returns with summary["preempted"] True; after
  `train.max_nonfinite_in_a_row` non-finite steps in a row saves the last good state and
  raises `NonFiniteError`. Returns the summary that process 0 prints.
  """
  validate(config)
  workdir = os.fspath(_absolute(workdir))
  main_process = jax.process_index() == 0
  t = config.train
  if main_process:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    (epath.Path(workdir) / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")

  with contextlib.ExitStack() as stack:
    preemption = stack.enter_context(_preemption_notice())

    # Mesh, optimizer and the jitted steps.
    mesh = make_mesh(config)
    tx, schedule = make_optimizer(t)
    abstract, shardings = state_shardings(model_config(config), tx, mesh)
    batch_sharding = sharding.batch_sharding(mesh)
    step_fn = jit_train_step(config, mesh, tx, schedule, shardings)
    eval_fn = jit_eval_step(config, mesh, shardings)
    monitor = _Monitor(config, mesh)

    # Resume from the newest readable checkpoint, or start.
    manager = stack.enter_context(checkpoint_manager(workdir, t))
    restored = restore_checkpoint(manager, abstract, lambda: make_train_iterator(config))
    if restored is None:
      if unreadable := list(manager.all_steps()):
        logging.warning("no readable checkpoint (unreadable steps %s): starting from step 0",
                        ", ".join(map(str, unreadable)))
        _set_aside(workdir, unreadable, manager)
      state, resumed_from = create_state(config, tx, shardings), None
      train_iter = make_train_iterator(config)
    else:
      state, train_iter, bad = restored
      resumed_from = int(state.step)
      if bad:
        logging.warning("resuming from step %d instead of the unreadable step(s) %s",
                        resumed_from, ", ".join(map(str, bad)))
        _set_aside(workdir, bad, manager)
      logging.info("resumed from the checkpoint at step %d", resumed_from)
    step = saved_step = int(state.step)

    def checkpoint() -> None:
      nonlocal saved_step
      if saved_step != step:
        save_checkpoint(manager, state, train_iter)
        saved_step = step

    # The loop. A step's metrics are read after the next step is dispatched, so the
    # host never waits for the device with nothing queued.
    writer = metrics_lib.Writer(workdir, enabled=main_process)
    stack.callback(writer.close)
    start = time.perf_counter()
    log = _Log(writer, t.global_batch * config.data.seq_len, start)
    bar = stack.enter_context(tqdm.tqdm(total=t.steps, initial=step, disable=not main_process,
                                        unit="step", desc="train", mininterval=1.0))
    val, pending, preempted = {}, None, False

    def read(pending_step: int, metrics: dict[str, Array]) -> None:
      """Host side of a finished step: log it; stop after too many non-finite steps."""
      host = {k: float(v) for k, v in jax.device_get(metrics).items()}
      log.add(host)
      if pending_step % t.log_every == 0 or pending_step == t.steps:
        record = log.flush(pending_step)
        extra = {"toward": f"{record['toward']:.1%}"} if "toward" in record else {}
        if monitor.last:
          extra["gain_dev"] = f"{monitor.last['monitor_gain_dev']:+.4f}"
        bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:,.0f}",
                        step_ms=f"{1e3 * record['step_time']:.1f}", **extra)
      if host["nonfinite_in_a_row"] >= t.max_nonfinite_in_a_row:
        checkpoint()
        manager.wait_until_finished()
        raise NonFiniteError(
            f"stopped at step {pending_step}: {int(host['nonfinite_in_a_row'])} steps in a row "
            f"had a non-finite loss or gradient norm (train.max_nonfinite_in_a_row="
            f"{t.max_nonfinite_in_a_row}); the last good state is saved at step {step} in "
            f"{manager.directory}. Lower train.learning_rate or check the data")

    while step < t.steps and not preempted:
      batch = pipeline.global_batch(next(train_iter), batch_sharding)
      state, metrics = step_fn(state, batch)
      step += 1
      bar.update()
      if pending is not None:
        read(*pending)
      pending = (step, metrics)
      paused = time.perf_counter()
      if t.eval_every and step % t.eval_every == 0 and step < t.steps:
        val = evaluate_loss(eval_fn, state.params, config, batch_sharding)
        writer.write(step, val)
      gains = monitor(step, state.params)
      if gains:
        writer.write(step, gains)
      preempted = preemption(step)
      if preempted or (t.checkpoint_every and step % t.checkpoint_every == 0):
        checkpoint()
      log.paused += time.perf_counter() - paused
    if pending is not None:
      read(*pending)

    checkpoint()
    if preempted:
      logging.warning("SIGTERM: saved the checkpoint of step %d in %s; run the same command "
                      "to resume", step, manager.directory)
    else:
      val = evaluate_loss(eval_fn, state.params, config, batch_sharding)
      writer.write(step, val)
    manager.wait_until_finished()

  counters = _all_processes(train_iter.counters())
  summary = _summary(config, workdir, state, log.records, val, counters,
                     time.perf_counter() - start, resumed_from, preempted, monitor.last)
  if main_process:
    print(metrics_lib.table(summary["rows"], f"summary: {config.data.name}, {workdir}"),
          flush=True)
  return summary


def _all_processes(counters: dict[str, int]) -> dict[str, int]:
  """Counters summed over the processes (each counts the documents of its own shard)."""
  if jax.process_count() == 1:
    return counters
  values = np.array(list(counters.values()), np.int64)
  # int32 halves: jax arrays are 32-bit unless x64 is on, and token counts pass 2**31
  halves = np.stack([values >> 31, values & (2**31 - 1)], -1).astype(np.int32)
  gathered = np.asarray(multihost_utils.process_allgather(halves)).astype(np.int64)
  totals = (gathered[..., 0] << 31) + gathered[..., 1]
  return dict(zip(counters, map(int, totals.sum(0))))


def _summary(config, workdir, state, records, val, counters, seconds, resumed_from,
             preempted, monitored) -> dict[str, Any]:
  """The figures of a run, and their rows for the printed table."""
  last = records[-1] if records else {}
  # the first logged interval includes compilation
  speeds = [r["tokens_per_s"] for r in records[1:]] or [r["tokens_per_s"] for r in records]
  times = [r["step_time"] for r in records[1:]] or [r["step_time"] for r in records]
  steps_dir = epath.Path(workdir) / "checkpoints"
  kept = sorted(int(p.name) for p in steps_dir.iterdir() if p.name.isdigit()) if (
      steps_dir.is_dir()) else []
  summary = {
      "step": int(state.step),
      "steps": config.train.steps,
      "resumed_from": resumed_from,
      "preempted": preempted,
      "first_train_loss": records[0]["loss"] if records else None,
      "train_loss": last.get("loss"),
      "val_loss": val.get("val_loss"),
      "val_accuracy": val.get("val_accuracy"),
      "tokens_per_s": statistics.median(speeds) if speeds else None,
      "step_time": statistics.median(times) if times else None,
      "seconds": seconds,
      "checkpoints": kept,
      "nonfinite_total": int(state.nonfinite_total),
      "skipped_total": int(state.skipped_total),
      "stunting": config.stunting.mode,
      "toward": statistics.fmean(r["toward"] for r in records if "toward" in r) if any(
          "toward" in r for r in records) else None,
      "monitor": monitored,
      "data": counters,
  }
  fmt = lambda x, spec: "-" if x is None else format(x, spec)
  rows = [
      ("steps", f"{summary['step']} of {summary['steps']}"
       + (f" (resumed from {resumed_from})" if resumed_from is not None else "")
       + (" (preempted)" if preempted else "")),
      ("train loss", f"{fmt(summary['first_train_loss'], '.4f')} (first log) -> "
                     f"{fmt(summary['train_loss'], '.4f')} (last log)"),
      ("val loss", f"{fmt(summary['val_loss'], '.4f')} (accuracy "
                   f"{fmt(summary['val_accuracy'], '.3f')})"),
      ("tokens/s", f"{fmt(summary['tokens_per_s'], ',.0f')} (median over logs, "
                   f"{config.train.global_batch} x {config.data.seq_len} tokens a step)"),
      ("step time", f"{fmt(summary['step_time'] and 1e3 * summary['step_time'], '.1f')} ms"),
      ("wall time", f"{seconds:.1f} s"),
      ("checkpoints", f"{', '.join(map(str, kept)) or '-'} in {steps_dir}"),
      ("non-finite", f"{summary['nonfinite_total']} steps skipped"),
      ("stunting", f"{config.stunting.mode}"
                   + (f", {summary['skipped_total']} updates skipped" if summary["skipped_total"]
                      else "")
                   + (f", toward tokens {summary['toward']:.1%}" if summary["toward"] is not None
                      else "")),
      ("data", ", ".join(f"{k} {v:,}" for k, v in counters.items())),
  ]
  if monitored:
    rows.insert(-1, ("lookahead gain", f"stunting {monitored['monitor_gain_stunting']:+.4f}, dev "
                                       f"{monitored['monitor_gain_dev']:+.4f} nats/token at step "
                                       f"{monitored['step']} (held-out batches)"))
  return dict(summary, rows=rows)
