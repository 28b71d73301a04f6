"""A config's validation (one-line errors) and the settings it derives.

`validate(config)` checks the whole config (config.py's schema) before anything compiles
and returns the `Settings` it derives (model config, tokenizer, lookaheads, stunting, and
every other section the library reads as a frozen dataclass), computed once: the trainer,
the evaluation and `compare` take them, never re-deriving, and no library function below
the commands reads the raw config (only the commands receive it). It writes
nothing: the commands prepare the dataset and train its tokenizer first
(`prepare_and_validate`, data/prepare.py) and pass the tokenizer in.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax

from lookahead_jax import checkpoint, evals, gpt2, sharding
from lookahead_jax import config as config_lib
from lookahead_jax import heads as heads_lib
from lookahead_jax import lookahead as lookahead_lib
from lookahead_jax import masked as masked_lib
from lookahead_jax import model as model_lib
from lookahead_jax import probes as probes_lib
from lookahead_jax import stunting as stunting_lib
from lookahead_jax.config import ConfigDict, ConfigError
from lookahead_jax.data import builders, curriculum, registry
from lookahead_jax.data import prepare as prepare_lib
from lookahead_jax.data.tokenizers import Tokenizer

# The config's sections that no other setting derives from, as their keys (config.py says
# what each means); `derive` builds each once.


@dataclasses.dataclass(frozen=True)
class Data:
  """The dataset, its splits, curriculum and input pipeline (the tokenizer: Settings')."""

  name: str
  data_dir: str | None
  options: dict[str, Any]
  seq_len: int
  text_key: str
  answer_only: bool
  train_split: str
  val_split: str
  curriculum: tuple[str, ...]
  curriculum_steps: int
  curriculum_accuracy: float
  packing_bins: int
  read_threads: int
  prefetch: int


@dataclasses.dataclass(frozen=True)
class Train:
  """The training loop and optimizer (the heads' loss weights: Settings.heads)."""

  steps: int
  global_batch: int
  grad_accum: int
  learning_rate: float
  warmup_steps: int
  min_lr_ratio: float
  weight_decay: float
  b1: float
  b2: float
  grad_clip: float
  log_every: int
  val_every: int
  val_batches: int
  checkpoint_every: int
  keep_checkpoints: int
  max_nonfinite_in_a_row: int
  profile_steps: tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Eval:
  """The evaluation suite (evaluate.py, evals/)."""

  evaluators: tuple[str, ...]
  at_end: bool
  validation_split: str
  test_split: str
  batch_size: int
  max_batches: int
  kinds: tuple[str, ...]
  widths: tuple[int, ...]
  horizons: tuple[int, ...]
  schemes: tuple[str, ...]
  mixtures: tuple[str, ...]
  bootstrap: int
  task_instances: int
  seed: int


@dataclasses.dataclass(frozen=True)
class Generate:
  """The generation report (evals/generation.py)."""

  samplers: tuple[str, ...]
  prompts: int
  prompt_tokens: int
  new_tokens: int
  beams: int
  temperature: float
  top_p: float
  rep_window: int
  batch_size: int
  seed: int


@dataclasses.dataclass(frozen=True)
class Monitor:
  """The monitor's cadence and batches (its lookaheads: Settings.monitor_lookahead and
  dev_lookahead)."""

  every: int
  batches: int
  fit_batches: int
  patience: int


@dataclasses.dataclass(frozen=True)
class Mesh:
  """The device mesh's axes (sharding.make_mesh)."""

  data: int
  fsdp: int


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a validated config derives, once (`validate` returns it).

  model:         the model's static config.
  tokenizer:     the tokenizer the data is read with.
  lookahead:     the config's lookahead section (paths end at the tokenizer's EOD).
  mixture:       how every lookahead's q and the mixture q~ are formed (tau, scheme,
                 mixture, lam, SMC's beta): the one the stunted step reads too.
  stunting:      the stunted step's settings (v4 resolved to its base with SMC).
  objective:     the training objective, with the tokenizer's [MASK] id.
  monitor_lookahead: the stunting lookahead the monitor reads (lookahead for modes
                 without one).
  dev_lookahead: the monitoring lookahead that stunting never uses.
  data:          keyword arguments of the input pipeline (pipeline.make_iterator).
  probes:        the probes' static settings (None: probes.enabled is False).
  heads:         the value and is-done heads' training (None: the model has neither).
  data, train, eval, generate, monitor, mesh: the config's sections of those names (the
                 keys no other setting derives from).
  seed, pretrained: the config's top-level keys.
  resolved:      the whole config as a plain dict (references resolved): the run's
                 config.json and what compare matches records on.
  """

  model: model_lib.Config
  tokenizer: Tokenizer
  lookahead: lookahead_lib.Lookahead
  mixture: lookahead_lib.Mixture
  stunting: stunting_lib.Stunting
  objective: masked_lib.Objective
  monitor_lookahead: lookahead_lib.Lookahead
  dev_lookahead: lookahead_lib.Lookahead
  data: Data
  train: Train
  eval: Eval
  generate: Generate
  monitor: Monitor
  mesh: Mesh
  seed: int
  pretrained: str
  resolved: dict[str, Any]
  probes: probes_lib.Probes | None
  heads: heads_lib.Heads | None = None

  @property
  def stunting_mode(self) -> str:
    """stunting.mode as configured (v4 too; `stunting.mode` is v4's base): what reports
    name."""
    return self.resolved["stunting"]["mode"]

  @property
  def pipeline(self) -> dict[str, Any]:
    """Keyword arguments of the input pipeline (pipeline.make_iterator): train.global_batch
    rows of data.seq_len tokens."""
    d = self.data
    return dict(seq_len=d.seq_len, global_batch_size=self.train.global_batch,
                tokenizer=self.tokenizer, data_dir=d.data_dir, options=dict(d.options),
                text_key=d.text_key, answer_only=d.answer_only, packing_bins=d.packing_bins,
                read_threads=d.read_threads)


def _section(cls, values: ConfigDict):
  """The section dataclass `cls` of a config section: its fields' values (lists as
  tuples)."""
  found = values.to_dict()
  return cls(**{f.name: tuple(found[f.name]) if isinstance(found[f.name], list)
                else found[f.name] for f in dataclasses.fields(cls)})


def _lookahead(config: ConfigDict, eos_id: int | None) -> lookahead_lib.Lookahead:
  la = config.lookahead
  return lookahead_lib.Lookahead(kind=la.kind, width=la.width, horizon=la.horizon,
                                 length_penalty=la.length_penalty, chunk=la.chunk, eos_id=eos_id,
                                 simulations=la.simulations, policy=la.policy, reward=la.reward,
                                 task=registry.task_return(config.data.name,
                                                           **config.data.options.to_dict())
                                 if la.reward == "task" else None)


def _heads(config: ConfigDict, lookahead: lookahead_lib.Lookahead,
           eod_id: int | None) -> heads_lib.Heads | None:
  """The heads' training: value targets from the config's lookahead as a beam (reward
  "task": of width 1, the model's greedy continuation, scored by the task's return), done
  targets at the tokenizer's EOD."""
  m, t = config.model, config.train
  if not (m.value_head or m.done_head):
    return None
  beam = dataclasses.replace(lookahead, kind="beam", width=1 if lookahead.reward == "task"
                             else lookahead.width)
  return heads_lib.Heads(
      lookahead=beam if m.value_head else None,
      eod_id=eod_id if m.done_head else None, value_weight=t.value_weight,
      done_weight=t.done_weight)


def _stunting(config: ConfigDict, lookahead: lookahead_lib.Lookahead) -> stunting_lib.Stunting:
  st = config.stunting
  mode = st.v4_base if st.mode == "v4" else st.mode
  if mode not in stunting_lib.LOOKAHEAD_MODES:
    lookahead = None
  elif st.mode == "v4":
    lookahead = dataclasses.replace(lookahead, kind="smc")
  return stunting_lib.Stunting(
      mode=mode, lookahead=lookahead, contrast=st.contrast, mixture=_mixture(config),
      penalty=st.penalty, distill=st.distill, margin=st.margin, debt_decay=st.debt_decay,
      alignment_every=st.alignment_every)


def _mixture(config: ConfigDict) -> lookahead_lib.Mixture:
  la = config.lookahead
  return lookahead_lib.Mixture(temperature=la.temperature, scheme=la.scheme,
                               mixture=la.mixture, lam=la.lam, beta=la.beta)


def _other_kind(kind: str) -> str:
  """The dev lookahead's kind when monitor.dev_kind is "": SMC beside beam, else beam."""
  return "smc" if kind == "beam" else "beam"


def _dev_lookahead(config: ConfigDict, lookahead: lookahead_lib.Lookahead
                   ) -> lookahead_lib.Lookahead:
  """The monitor's dev lookahead, from the stunting lookahead the monitor reads (v4: SMC;
  `lookahead` for modes without one): monitor.dev_kind ("": the other kind),
  monitor.dev_width, monitor.dev_horizon (0: the stunting lookahead's)."""
  mon = config.monitor
  base = _stunting(config, lookahead).lookahead or lookahead
  kind = mon.dev_kind or _other_kind(base.kind)
  return base.as_kind(kind, width=mon.dev_width, horizon=mon.dev_horizon or base.horizon)


# ----------------------------------------------------------------------------- validation


def check_workdir(workdir: str) -> None:
  """A local workdir must be a directory (or not exist yet); a URL is taken as it is."""
  if not checkpoint.is_url(workdir) and os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir={workdir!r} is an existing file, not a directory; give a "
                      "new or existing directory")


def _require(ok: bool, key: str, value: Any, fix: str) -> None:
  if not ok:
    raise ConfigError(f"{key}={value!r}: {fix}")


def _check_model(config: ConfigDict) -> model_lib.Config:
  m = config.model
  try:
    mc = model_lib.Config(**m.to_dict())
  except (ValueError, TypeError) as e:
    raise ConfigError(str(e)) from None
  for key in ("vocab_size", "max_len", "num_layers", "d_model", "num_heads", "mlp_ratio"):
    _require(m[key] >= 1, f"model.{key}", m[key], "must be >= 1")
  _require(0.0 <= m.dropout < 1.0, "model.dropout", m.dropout, "must be in [0, 1)")
  _require(m.layer_norm_eps > 0, "model.layer_norm_eps", m.layer_norm_eps, "must be > 0")
  return mc


def _check_train(t: ConfigDict) -> None:
  for key in ("steps", "global_batch", "grad_accum", "log_every", "keep_checkpoints",
              "max_nonfinite_in_a_row"):
    _require(t[key] >= 1, f"train.{key}", t[key], "must be >= 1")
  for key in ("val_every", "val_batches", "checkpoint_every", "weight_decay", "grad_clip",
              "value_weight", "done_weight"):
    _require(t[key] >= 0, f"train.{key}", t[key], "must be >= 0")
  _require(t.learning_rate > 0, "train.learning_rate", t.learning_rate, "must be > 0")
  _require(0 <= t.warmup_steps < t.steps, "train.warmup_steps", t.warmup_steps,
           f"must be in [0, train.steps={t.steps}) (the cosine decay needs a step); set "
           f"--config.train.warmup_steps to at most {max(t.steps - 1, 0)}")
  _require(0.0 <= t.min_lr_ratio <= 1.0, "train.min_lr_ratio", t.min_lr_ratio,
           "must be in [0, 1]")
  for key in ("b1", "b2"):
    _require(0.0 <= t[key] < 1.0, f"train.{key}", t[key], "must be in [0, 1)")
  _require(t.global_batch % t.grad_accum == 0, "train.global_batch", t.global_batch,
           f"must be a multiple of train.grad_accum={t.grad_accum}")
  window = tuple(t.profile_steps)
  _require(len(window) == 2 and 0 <= window[0] <= window[1], "train.profile_steps", window,
           "must be (first, last) steps with 0 <= first <= last; (0, 0) is off")


def _check_lookahead(config: ConfigDict, mc: model_lib.Config) -> None:
  la = config.lookahead
  _require(la.reward != "task" or la.kind == "mcts", "lookahead.reward", la.reward,
           "the task's return rewards MCTS's search: set lookahead.kind='mcts' (or reward="
           "'log_prob')")
  try:
    _lookahead(config, None).check(mc)
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


def _check_stunting(config: ConfigDict, mc: model_lib.Config) -> None:
  st, mon = config.stunting, config.monitor
  _require(st.mode in stunting_lib.MODES, "stunting.mode", st.mode,
           f"use one of {', '.join(stunting_lib.MODES)}")
  _require(st.contrast in stunting_lib.CONTRASTS, "stunting.contrast", st.contrast,
           f"use one of {', '.join(stunting_lib.CONTRASTS)}")
  _require(st.v4_base in stunting_lib.LOOKAHEAD_MODES, "stunting.v4_base", st.v4_base,
           f"use one of {', '.join(stunting_lib.LOOKAHEAD_MODES)}")
  for key in ("penalty", "distill", "margin"):
    _require(st[key] >= 0, f"stunting.{key}", st[key], "must be >= 0")
  _require(0.0 <= st.debt_decay <= 1.0, "stunting.debt_decay", st.debt_decay, "must be in [0, 1]")
  _require(st.alignment_every >= 1, "stunting.alignment_every", st.alignment_every,
           "must be >= 1")
  for key in ("batches", "fit_batches", "patience", "dev_width"):
    _require(mon[key] >= 1, f"monitor.{key}", mon[key], "must be >= 1")
  _require(mon.every >= 0, "monitor.every", mon.every, "must be >= 0 (0: no monitoring)")
  _require(mon.dev_kind in ("",) + lookahead_lib.KINDS, "monitor.dev_kind", mon.dev_kind,
           f"use one of {', '.join(lookahead_lib.KINDS)} (or '' for the other kind)")
  try:
    lookahead = _lookahead(config, None)
    dev = _dev_lookahead(config, lookahead)
    dev.check(mc)
    stunt = _stunting(config, lookahead)
    if stunt.lookahead is not None:
      stunt.lookahead.check(mc)
  except ValueError as e:
    raise ConfigError(f"stunting: {e}") from None
  base = stunt.lookahead or lookahead
  _require(
      (dev.kind, dev.horizon) != (base.kind, base.horizon), "monitor.dev_kind/dev_horizon",
      (mon.dev_kind, mon.dev_horizon),
      f"the dev lookahead ({dev.kind} H={dev.horizon}) has the stunting lookahead's kind and "
      f"horizon ({base.kind} H={base.horizon}), so its G restates the stunting signal; set "
      f"monitor.dev_kind='' (the other kind, "
      f"{_other_kind(base.kind)}) or a monitor.dev_horizon other than "
      f"{base.horizon}")


def _objective(config: ConfigDict, mask_id: int) -> masked_lib.Objective:
  return masked_lib.Objective(**config.objective.to_dict(), mask_id=mask_id)


def _check_objective(config: ConfigDict) -> None:
  try:
    _objective(config, 0).check()
  except ValueError as e:
    raise ConfigError(str(e)) from None
  _require(config.objective.kind == "next_token" or config.stunting.mode == "none",
           "stunting.mode", config.stunting.mode, "the masked objective (objective.kind="
           "'spectrum') trains without stunting; set stunting.mode='none'")


def _check_eval(ev: ConfigDict, mc: model_lib.Config, devices: int) -> None:
  _require(tuple(ev.evaluators[:1]) == ("gain",), "eval.evaluators", tuple(ev.evaluators),
           "the gain grid runs first (the others read its headline row): start with 'gain'")
  for name in ev.evaluators:
    try:
      evals.build([name])
    except (ImportError, AttributeError) as e:
      raise ConfigError(f"eval.evaluators: {name!r} is not an evaluator module ({e}); use "
                        "a module of lookahead_jax/evals/ or a dotted module path with an "
                        "Evaluator class") from None
  for key in ("batch_size", "task_instances", "bootstrap"):
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


def _check_generate(g: ConfigDict, mc: model_lib.Config) -> None:
  bad = [x for x in g.samplers if x not in config_lib.SAMPLERS] or (
      [] if g.samplers else ["(empty)"])
  _require(not bad, "generate.samplers", tuple(g.samplers),
           f"use values from {', '.join(config_lib.SAMPLERS)}")
  for key in ("prompts", "prompt_tokens", "new_tokens", "beams", "rep_window", "batch_size"):
    _require(g[key] >= 1, f"generate.{key}", g[key], "must be >= 1")
  _require(g.prompt_tokens + 1 + g.new_tokens <= mc.max_len, "generate.new_tokens",
           g.new_tokens, f"[EOD] + generate.prompt_tokens={g.prompt_tokens} + new_tokens pass "
           f"model.max_len={mc.max_len}; use new_tokens <= {mc.max_len - 1 - g.prompt_tokens}")
  _require(g.temperature > 0 and 0 < g.top_p <= 1, "generate.temperature/top_p",
           (g.temperature, g.top_p), "need temperature > 0 and top_p in (0, 1]")


def _check_probes(config: ConfigDict, mc: model_lib.Config) -> None:
  p, mon = config.probes, config.monitor
  if not p.enabled:
    return
  _require(2 <= p.max_offset < config.data.seq_len, "probes.max_offset", p.max_offset,
           f"must be in [2, data.seq_len={config.data.seq_len})")
  bad = [x for x in p.layers if not 1 <= x <= mc.num_layers]
  _require(not bad, "probes.layers", tuple(p.layers),
           f"layers are 1..model.num_layers={mc.num_layers}; () probes all")
  for key in ("steps", "eval_batches", "induction_rows"):
    _require(p[key] >= 1, f"probes.{key}", p[key], "must be >= 1")
  _require(p.learning_rate > 0, "probes.learning_rate", p.learning_rate, "must be > 0")
  _require(p.l2 >= 0, "probes.l2", p.l2, "must be >= 0")
  _require(p.induction_length >= 0 and 2 * p.induction_length <= mc.max_len,
           "probes.induction_length", p.induction_length,
           f"must be in [0, model.max_len/2={mc.max_len // 2}] (0: half of data.seq_len)")
  _require(not mon.every or mon.batches >= 2, "monitor.batches",
           mon.batches, "the probes fit on half the monitor's batches and score on the "
           "other half: use >= 2 (or probes.enabled=False)")


def _probes(config: ConfigDict) -> probes_lib.Probes | None:
  p = config.probes
  if not p.enabled:
    return None
  every_layer = tuple(range(1, config.model.num_layers + 1))
  return probes_lib.Probes(
      max_offset=p.max_offset, layers=tuple(p.layers) or every_layer,
      steps=p.steps, learning_rate=p.learning_rate, l2=p.l2, induction_rows=p.induction_rows,
      induction_length=p.induction_length or config.data.seq_len // 2,
      marked=getattr(registry.get(config.data.name), "marked_probe", False),
      eval_batches=p.eval_batches)


def validate(config: ConfigDict, tokenizer: Tokenizer | None = None) -> Settings:
  """Checks the whole config before anything compiles; returns its `Settings`.

  Pure: it reads the data dir and writes nothing. `tokenizer`: the one
  `data.prepare.prepare(config.data)` returned (the commands pass it); None loads the one
  the config names, which a SentencePiece model must already be trained for.

  Raises `ConfigError` (one line) for impossible values, a global batch that the devices
  (times the micro-batches) do not divide, a mesh that does not tile the devices,
  lookahead settings the model cannot run, a tokenizer larger than the model's
  vocabulary, a dataset that is not prepared and cannot be prepared here.
  """
  if not isinstance(config, ConfigDict) or not config.is_locked:
    raise ConfigError("the config is not built on the schema: start it from "
                      "lookahead_jax.config.base_config()")
  t, d, m = config.train, config.data, config.model
  mc = _check_model(config)
  _check_train(t)
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
  _require(not d.answer_only or registry.own_vocabulary(d.name), "data.answer_only",
           d.answer_only, "needs a testbed with a prompt and an answer "
           f"({', '.join(registry.own_vocabulary_names())}); "
           "set it to False")
  for key in ("read_threads", "prefetch"):
    _require(d[key] >= 0, f"data.{key}", d[key], "must be >= 0")
  try:
    curriculum.check(tuple(d.curriculum), d.curriculum_steps, d.curriculum_accuracy,
                     d.train_split, t.val_every)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  _check_lookahead(config, mc)
  _check_stunting(config, mc)
  _check_objective(config)
  _check_eval(config.eval, mc, devices)
  _require(d.name != "path_star" or config.eval.max_batches == 0, "eval.max_batches",
           config.eval.max_batches, "path_star's figures (evals/path_star.py) use every test "
           "graph; set eval.max_batches=0 so G per depth comes from the same graphs")
  _check_probes(config, mc)
  _check_generate(config.generate, mc)
  if config.pretrained:
    _check_pretrained(config.pretrained, mc)
  tokenizer = _checked_data(config, tokenizer)
  longest = builders.longest_document(d.name, **d.options.to_dict())
  _require(longest is None or d.seq_len >= longest + 1, "data.seq_len", d.seq_len,
           f"the longest {d.name} example with these options has {longest} tokens (+1 for its "
           f"EOD): set data.seq_len >= {(longest or 0) + 1} so no example is cut")
  _require(m.vocab_size >= tokenizer.vocab_size, "model.vocab_size", m.vocab_size,
           f"the {d.name} tokenizer has {tokenizer.vocab_size} tokens; set model.vocab_size="
           f"{tokenizer.vocab_size} (or more)")
  _require(not m.numeric_features or bool(getattr(tokenizer, "numeric_tokens", tuple)()),
           "model.numeric_features", m.numeric_features,
           f"the {d.name} tokenizer declares no numeric tokens; set it to 0")
  _require(config.objective.kind == "next_token" or m.vocab_size > tokenizer.mask_id,
           "model.vocab_size", m.vocab_size, f"the masked objective needs [MASK] (id "
           f"{tokenizer.mask_id}); set model.vocab_size={tokenizer.mask_id + 1} (or more)")
  return derive(config, tokenizer)


def prepare_and_validate(config: ConfigDict) -> Settings:
  """What every command calls: the dataset prepared and its tokenizer trained (process 0
  first, data/prepare.py), then `validate` with that tokenizer."""
  d = config.data
  _check_dataset(d)
  try:
    tokenizer = prepare_lib.prepare(d)
  except (ValueError, OSError) as e:
    raise ConfigError(f"data.tokenizer={d.tokenizer!r}: {e}") from None
  return validate(config, tokenizer)


def model_config(config: ConfigDict, tokenizer: Tokenizer) -> model_lib.Config:
  """model.Config of the config's model section, with the tokenizer's numeric tokens when
  model.numeric_features reads them (the testbed declares them: `numeric_tokens()`)."""
  m = config.model
  numeric = ()
  if m.numeric_features:
    numeric = tuple(getattr(tokenizer, "numeric_tokens", tuple)())
  return model_lib.Config(**m.to_dict(), numeric_tokens=numeric)


def derive(config: ConfigDict, tokenizer: Tokenizer) -> Settings:
  """The `Settings` of a config whose values are checked (`validate` calls it), for a
  tokenizer; benchmarks call it directly, without a dataset."""
  lookahead = _lookahead(config, tokenizer.eod_id)
  stunt = _stunting(config, lookahead)
  return Settings(
      model=model_config(config, tokenizer), tokenizer=tokenizer,
      lookahead=lookahead, mixture=stunt.mixture, stunting=stunt,
      objective=_objective(config, tokenizer.mask_id),
      monitor_lookahead=stunt.lookahead or lookahead,
      dev_lookahead=_dev_lookahead(config, lookahead),
      data=_section(Data, config.data), train=_section(Train, config.train),
      eval=_section(Eval, config.eval), generate=_section(Generate, config.generate),
      monitor=_section(Monitor, config.monitor), mesh=_section(Mesh, config.mesh),
      seed=config.seed, pretrained=config.pretrained, resolved=config_lib.resolved(config),
      probes=_probes(config), heads=_heads(config, lookahead, tokenizer.eod_id))


def pretrained_model(path: str) -> model_lib.Config:
  """The model config of a Hugging Face GPT-2 directory (its config.json)."""
  with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
    return gpt2.config_from_hf(json.load(f))


def _check_pretrained(path: str, mc: model_lib.Config) -> None:
  """The pretrained directory exists and its shape is the model's."""
  try:
    found = pretrained_model(path)
  except (OSError, ValueError) as e:
    raise ConfigError(f"pretrained={path!r}: {str(e).splitlines()[0]}; give a Hugging Face "
                      "GPT-2 directory (config.json plus model.safetensors or "
                      "pytorch_model.bin)") from None
  for key in ("vocab_size", "max_len", "num_layers", "d_model", "num_heads", "mlp_ratio",
              "layer_norm_eps"):
    _require(getattr(found, key) == getattr(mc, key), f"model.{key}", getattr(mc, key),
             f"the checkpoint in {path} has {getattr(found, key)}; set model.{key}="
             f"{getattr(found, key)}")


def _check_dataset(d: ConfigDict) -> None:
  """The dataset of the data section `d` can be read (or built) here; writes nothing."""
  try:
    builders.builder(d.name, d.data_dir, **d.options.to_dict())
  except builders.DatasetNotPreparedError as e:
    raise ConfigError(f"data.name={d.name!r}: {e}") from None
  except (ValueError, FileNotFoundError) as e:
    raise ConfigError(f"data.options: {e}") from None


def _checked_data(config: ConfigDict, tokenizer: Tokenizer | None) -> Tokenizer:
  """The dataset's tokenizer (`tokenizer`, else the one the config names, loaded), after
  checking that the dataset can be read here; reads, writes nothing."""
  _check_dataset(config.data)
  if tokenizer is not None:
    return tokenizer
  try:
    return prepare_lib.tokenizer(config.data)
  except (ValueError, OSError) as e:
    raise ConfigError(f"data.tokenizer={config.data.tokenizer!r}: {e}") from None
