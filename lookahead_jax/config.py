"""The config schema, its validation (one-line errors) and the settings it derives.

Every config file starts from `base_config()`, a locked ConfigDict: assigning a key the
schema does not have fails at once, in the config file or on the command line. Values
that follow from others are `FieldReference`s (`model.max_len = data.seq_len +
lookahead.horizon`), so an override of one (`--config.lookahead.horizon=8`) moves the
other; assigning a plain value (a GPT-2 checkpoint's 1024) replaces the reference.

`validate(config)` checks the whole config before anything compiles and returns the
`Settings` it derives (model config, tokenizer, lookaheads, stunting, data arguments),
computed once: the trainer, the evaluation and `compare` take them, never re-deriving.
It writes nothing: the commands prepare the dataset and train its tokenizer first
(data/prepare.py) and pass the tokenizer in.
Configs import this module only (not the trainer, not the comparison).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import re
import types
from typing import Any

import jax
import ml_collections

from lookahead_jax import checkpoint, gpt2, sharding
from lookahead_jax import heads as heads_lib
from lookahead_jax import lookahead as lookahead_lib
from lookahead_jax import masked as masked_lib
from lookahead_jax import model as model_lib
from lookahead_jax import probes as probes_lib
from lookahead_jax import stunting as stunting_lib
from lookahead_jax.data import builders, curriculum, registry
from lookahead_jax.data import prepare as prepare_lib
from lookahead_jax.data.tokenizers import Tokenizer

ConfigDict = ml_collections.ConfigDict


STUNTING_MODES = stunting_lib.MODES  # the experiment configs' EXPERIMENTS


# Tiny Shakespeare (Karpathy's char-rnn selection of Shakespeare's plays, public domain),
# shipped with the package so that its configs and tests run in a fresh clone.
TINY_SHAKESPEARE = os.path.join(os.path.dirname(__file__), "data", "texts", "tinyshakespeare.txt")


class ConfigError(ValueError):
  """A bad configuration: one line naming the key and the fix."""


# Keys renamed since run records were made: old dotted key -> new one. An old key in a
# config file or an override stops with a one-line error naming the new one
# (renamed_key_error); a record made with old keys is read under the new ones
# (compare.read_record), and the record itself is left as it is.
RENAMED = {
    "eval.tsp_instances": "eval.task_instances",
    **{f"stunting.monitor_{key}": f"monitor.{key}"
       for key in ("every", "batches", "fit_batches", "patience")},
    **{f"stunting.dev_{key}": f"monitor.dev_{key}" for key in ("kind", "width", "horizon")},
}


def renamed_key_error(error: Exception) -> ConfigError | None:
  """The one-line error naming the new key when `error`, the locked schema's error on a key
  it does not have (AttributeError or KeyError), names a renamed key; else None."""
  text = str(error)  # 'Key "name" does not exist ...' on assignment, "'name'" on reading
  unknown = re.findall(r'Key "(\w+)"', text)[:1] or re.findall(r"\w+", text)[:1]
  for old, new in RENAMED.items():
    if unknown and old.rsplit(".", 1)[-1] == unknown[0]:
      return ConfigError(f"{old} is now {new}: rename it in the config file or override")
  return None


# ----------------------------------------------------------------------------- schema


def _default(settings_class: type, field: str) -> Any:
  """The default of a field of the settings dataclass a section configures: declared once,
  there, and read here."""
  return next(f.default for f in dataclasses.fields(settings_class) if f.name == field)


def base_config() -> ConfigDict:
  """The schema: every key a command reads, with its default. configs/*.py start here.

  Sections: seed; data; lookahead (the lookahead that amplifies predictions; evaluation
  and stunting read it); model (model.Config's fields); pretrained; train; objective
  (next-token or the mask spectrum, masked.py); mesh; stunting; monitor (G during training,
  monitor.py); eval (the lookahead evaluation suite); probes (internal-lookahead probes).
  The result is locked: new keys cannot be added, except inside data.options (the
  builder's own options). A key that was renamed is a one-line error naming its new name
  (RENAMED, renamed_key_error).
  """
  # Defaults of the keys that configure a settings dataclass are read from it.
  la, mx, st, ob, pr = (functools.partial(_default, cls) for cls in (
      lookahead_lib.Lookahead, lookahead_lib.Mixture, stunting_lib.Stunting,
      masked_lib.Objective, probes_lib.Probes))
  c = ConfigDict()
  c.seed = 0  # parameters, dropout, data order and SMC draws all follow from it

  c.data = ConfigDict()
  c.data.name = registry.DEFAULT  # a testbed of data/registry.py | text_files | a prepared TFDS set
  # None: $TFDS_DATA_DIR, else ~/tensorflow_datasets
  c.data.data_dir = ml_collections.config_dict.placeholder(str)
  c.data.options = ConfigDict()  # builder options, e.g. paths=(...) for text_files
  c.data.seq_len = 128  # T: tokens per row
  c.data.tokenizer = ""  # "": the dataset's own; "sentencepiece:N"; "byte"; a .model; an HF dir
  c.data.text_key = "text"  # the text feature of a TFDS text dataset
  c.data.answer_only = False  # tsp, path_star: no loss (or score) on the prompt's tokens
  c.data.train_split = "train"
  c.data.val_split = "validation"  # the validation loss during training (train.val_every)
  # Stages trained in turn instead of train_split (data/curriculum.py): split expressions
  # of train_split's splits, e.g. ("train_n5", "train_n5+train_n6"); (): no curriculum
  c.data.curriculum = ()
  c.data.curriculum_steps = 0  # a stage moves on after this many steps; 0: not by steps
  # ... or once its validation accuracy (each train.val_every) reaches this; 0: not so
  c.data.curriculum_accuracy = 0.0
  c.data.packing_bins = 128  # rows packed together at once (first-fit over this many)
  c.data.read_threads = 0  # grain read threads; 0: grain's default
  c.data.prefetch = 2  # batches prepared ahead of the step (a background thread)

  c.lookahead = ConfigDict()
  c.lookahead.kind = la("kind")  # beam | smc | mcts
  c.lookahead.width = la("width")  # beams B, SMC particles N, or MCTS children K of a node
  c.lookahead.horizon = la("horizon")  # H tokens, the predicted one included
  c.lookahead.temperature = mx("temperature")  # tau of the amplified distribution
  c.lookahead.scheme = mx("scheme")  # sum | max
  c.lookahead.mixture = mx("mixture")  # linear | loglinear
  c.lookahead.lam = mx("lam")  # weight of q in the mixture
  c.lookahead.chunk = la("chunk")  # anchors per vmapped chunk; 0: all
  # beam paths that end early at EOS score S * (H / L)**alpha
  c.lookahead.length_penalty = la("length_penalty")
  c.lookahead.beta = mx("beta")  # SMC tempering
  # MCTS (mcts.py): model calls per anchor; 0: K(H-1), as many as a width-K beam's
  c.lookahead.simulations = la("simulations")
  # MCTS: q is "gumbel" (Gumbel MuZero's improved policy at the root) or "visits" (PUCT's
  # visit distribution); docs/design.md says why gumbel is the default
  c.lookahead.policy = la("policy")

  c.model = ConfigDict(dataclasses.asdict(model_lib.Config()))  # model.Config's fields
  # Every anchor of a row can look H tokens ahead; assign an int to fix it (GPT-2: 1024).
  c.model.max_len = c.data.get_ref("seq_len") + c.lookahead.get_ref("horizon")
  # A local Hugging Face GPT-2 directory (gpt2.py): the initial parameters of training, and
  # the parameters other commands use when the workdir has no checkpoint. "": none.
  c.pretrained = ""

  c.train = ConfigDict()
  c.train.steps = 1000
  c.train.global_batch = 32  # rows per optimizer step, over all devices and micro-batches
  c.train.grad_accum = 1  # micro-batches per step (lax.scan inside the step)
  c.train.learning_rate = 3e-4  # peak, after linear warm-up; then cosine decay
  c.train.warmup_steps = 100  # linear warm-up steps, < train.steps
  c.train.min_lr_ratio = 0.1  # the cosine ends at learning_rate * min_lr_ratio
  c.train.weight_decay = 0.1  # AdamW, on matrices and embeddings only
  c.train.b1 = 0.9  # AdamW first-moment decay
  c.train.b2 = 0.95  # AdamW second-moment decay
  c.train.grad_clip = 1.0  # global norm; 0: no clipping
  c.train.log_every = 20  # steps between metrics records (means over the steps)
  c.train.val_every = 200  # steps between validation losses on data.val_split; 0: at the end
  c.train.val_batches = 8  # global batches of data.val_split; 0: the whole split
  c.train.checkpoint_every = 200  # 0: only at the end (and on SIGTERM)
  c.train.keep_checkpoints = 3  # the newest ones kept
  c.train.max_nonfinite_in_a_row = 5  # non-finite steps in a row before the run stops
  c.train.profile_steps = (0, 0)  # steps [first, last) traced into workdir/profile; (0, 0): off
  c.train.value_weight = 1.0  # the value head's loss weight (model.value_head; heads.py)
  c.train.done_weight = 1.0  # the is-done head's loss weight (model.done_head; heads.py)

  # The training objective (masked.py, docs/design.md section 8).
  c.objective = ConfigDict()
  c.objective.kind = ob("kind")  # next_token | spectrum (next-token and masked examples)
  c.objective.rho = ob("rho")  # spectrum: share of next-token examples (1: GPT, 0: BERT-like)
  c.objective.suffix = ob("suffix")  # spectrum: share of examples whose suffix from a cut is masked
  c.objective.mask_rate = ob("mask_rate")  # spectrum: share r of each span example's tokens masked
  c.objective.mean_span = ob("mean_span")  # spectrum: mean span s (>= 1); 0: tokens independent

  c.mesh = ConfigDict()
  c.mesh.data = -1  # -1: all devices not used by the other axis
  c.mesh.fsdp = 1  # parameters and optimizer state sharded over this many devices

  c.stunting = ConfigDict()
  c.stunting.mode = st("mode")  # one of stunting.MODES
  # What toward, m, A and g_A compare: "control" the lookahead with its horizon-1 control
  # (q_H - q_1, lookahead beyond sharpening); "naive" the lookahead with p alone.
  c.stunting.contrast = st("contrast")
  c.stunting.v4_base = "v3_balance"  # v4: this mode with SMC lookahead
  c.stunting.penalty = st("penalty")  # v2_penalty coefficient
  c.stunting.distill = st("distill")  # distill: coefficient c of KL(q~_H || p) beside the loss
  # A token is toward when log q~_H(y) - log q~_1(y) (naive: - log p(y)) exceeds this, in
  # nats. 0.01: ~50x the ~2e-4 nats by which a confident correct token (p(y) = 0.999) is
  # "better" looked ahead, and 10-70x below the log(1 + lam) ~ 0.1-0.7 nats a lookahead
  # that tells two equally likely arms apart gives; without it v1_token drops every
  # confidently predicted token (90-97% of path_star's answer tokens).
  c.stunting.margin = st("margin")
  c.stunting.debt_decay = st("debt_decay")  # v3_balance: per-step decay of unbalanced movement
  # steps between cos(g, g_A) logs (v1_update, v3_project: every step)
  c.stunting.alignment_every = st("alignment_every")
  # Monitoring (monitor.py), in every stunting mode: the lookahead-specific gain G on
  # held-out batches with the stunting lookahead and a dev lookahead that stunting never
  # uses, each side's tau and lam (and the control's top-k) fitted on other held-out batches
  # than those G is reported on; a warning when the dev G is not positive for
  # monitor.patience evaluations in a row after it had been clearly positive (the model may
  # have learned the lookahead).
  c.monitor = ConfigDict()
  c.monitor.every = 0  # steps; 0: off
  # batches of data.val_split G is reported on (pooled, with row-bootstrap intervals),
  # fixed for the whole run
  c.monitor.batches = 2
  # the next batches of data.val_split, where tau, lam and the control's width are fitted.
  # As many as the report batches by default (an override of monitor.batches moves it):
  # the control's fit sits near its bounds (tau -> inf, lam -> 1), where the NLL is flat
  # and a fit on few marked tokens is noisy, so the fit gets as many tokens as G does, at
  # twice the monitor's cost of lookahead passes.
  c.monitor.fit_batches = c.monitor.get_ref("batches")
  c.monitor.patience = 3  # evaluations in a row before the warning
  # The dev lookahead differs from the stunting lookahead (v4: SMC) in kind or in horizon
  # (validate checks it): a wider beam of the same kind and horizon restates the stunting
  # signal (on a 2-arm graph its q nearly coincides).
  c.monitor.dev_kind = ""  # "": smc beside a beam stunting lookahead, else beam
  c.monitor.dev_width = 8  # beams or particles of the dev lookahead (SMC: lookahead.beta)
  c.monitor.dev_horizon = 0  # 0: the stunting lookahead's horizon (lookahead.horizon)

  # The evaluation suite (evaluate.py): every (kind, width, horizon) is a lookahead; every
  # (scheme, mixture) is read off the same paths, each side's tau and lam fitted on
  # validation_split (fit.py), the gain reported on test_split.
  c.eval = ConfigDict()
  c.eval.at_end = False  # `lookahead-jax train` runs the suite after its last step
  c.eval.validation_split = "validation"  # where tau and lam are fitted
  c.eval.test_split = "test"  # where the gains are reported
  c.eval.batch_size = 16  # rows per global batch
  c.eval.max_batches = 0  # per split; 0: the whole split
  c.eval.kinds = ("beam", "smc")  # any of beam, smc, mcts
  c.eval.widths = (1, 2, 4)
  c.eval.horizons = (1, 2, 4)
  c.eval.schemes = ("sum", "max")
  c.eval.mixtures = ("linear", "loglinear")
  c.eval.bootstrap = 1000  # bootstrap resamples of the test rows for the 95% intervals
  c.eval.task_instances = 300  # a testbed's task evaluation (tsp): test instances decoded
  c.eval.seed = 0  # SMC draws and bootstrap resamples of the evaluation

  # The generation report (`lookahead-jax generate-report`, evals/generation.py): each
  # sampler continues the same held-out prompts of eval.test_split.
  c.generate = ConfigDict()
  c.generate.samplers = lookahead_lib.SAMPLERS  # any of greedy, beam, sample, amplified
  c.generate.prompts = 64  # held-out documents (testbeds: their tasks) used as prompts
  c.generate.prompt_tokens = c.data.get_ref("seq_len") // 4  # text: P, each document's start
  c.generate.new_tokens = c.data.get_ref("seq_len") // 2  # L, tokens per continuation (at most)
  c.generate.beams = 4  # beam width of the beam sampler
  c.generate.temperature = 1.0  # plain sampling (amplified samples use lookahead.*)
  c.generate.top_p = 1.0  # plain sampling's nucleus mass (1: all)
  c.generate.rep_window = 16  # l of rep-l: tokens looked back for a repeat
  c.generate.batch_size = 32  # prompts per sampler call
  c.generate.seed = 0  # keys of the sampled continuations

  # Internal-lookahead probes (probes.py): with the monitor (every monitor.every
  # steps: fit on its fit batches, scored on its report batches) and in the
  # evaluation report (fit on eval.validation_split, scored on eval.test_split).
  c.probes = ConfigDict()
  c.probes.enabled = True  # False: neither the monitor nor the evaluation runs them
  c.probes.max_offset = pr("max_offset")  # K: future-token probes of x_{t+k}, k = 2..K
  c.probes.layers = ()  # layers (1..model.num_layers) whose residual stream is probed; (): all
  c.probes.steps = pr("steps")  # full-batch Adam steps of every linear probe
  c.probes.learning_rate = pr("learning_rate")  # Adam, on standardised features
  c.probes.l2 = pr("l2")  # L2 penalty on the probe's weights (the fit sets are small)
  c.probes.eval_batches = 2  # evaluation: eval.batch_size batches of each split
  c.probes.induction_rows = pr("induction_rows")  # random sequences of the induction score
  c.probes.induction_length = 0  # tokens before the repeat; 0: half of data.seq_len
  c.lock()
  c.data.options.unlock()
  return c


def experiment(config: ConfigDict, mode: str) -> ConfigDict:
  """`config` as one run of a stunting comparison: its mode, monitoring and evaluation.

  Monitoring runs ten times a run: the interval follows train.steps, also when it is
  overridden later (on the command line, also in `compare`).
  """
  config.stunting.mode = mode
  config.monitor.every = (config.train.get_ref("steps") + 9) // 10
  config.eval.max_batches = 8
  return config


# ----------------------------------------------------------------------------- settings


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
  """

  model: model_lib.Config
  tokenizer: Tokenizer
  lookahead: lookahead_lib.Lookahead
  mixture: lookahead_lib.Mixture
  stunting: stunting_lib.Stunting
  objective: masked_lib.Objective
  monitor_lookahead: lookahead_lib.Lookahead
  dev_lookahead: lookahead_lib.Lookahead
  data: dict[str, Any]
  probes: probes_lib.Probes | None
  heads: heads_lib.Heads | None = None


def _lookahead(config: ConfigDict, eos_id: int | None) -> lookahead_lib.Lookahead:
  la = config.lookahead
  return lookahead_lib.Lookahead(kind=la.kind, width=la.width, horizon=la.horizon,
                                 length_penalty=la.length_penalty, chunk=la.chunk, eos_id=eos_id,
                                 simulations=la.simulations, policy=la.policy)


def _heads(config: ConfigDict, lookahead: lookahead_lib.Lookahead,
           eod_id: int | None) -> heads_lib.Heads | None:
  """The heads' training: value targets from the config's lookahead as a beam, done
  targets at the tokenizer's EOD."""
  m, t = config.model, config.train
  if not (m.value_head or m.done_head):
    return None
  return heads_lib.Heads(
      lookahead=dataclasses.replace(lookahead, kind="beam") if m.value_head else None,
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
  return dataclasses.replace(base, kind=kind, width=mon.dev_width,
                             horizon=mon.dev_horizon or base.horizon)


# ----------------------------------------------------------------------------- validation


def load_file(path: str) -> types.ModuleType:
  """A config file as a module: its get_config([argument]) and, for an experiment, its
  EXPERIMENTS. The loader of `compare` (several configs at once) and of the tests; the
  other commands read their one --config through ml_collections' config_flags."""
  if not os.path.isfile(path):
    raise ConfigError(f"no config file {path!r}")
  spec = importlib.util.spec_from_file_location(
      "config_" + os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def beside(config_file: str, name: str) -> types.ModuleType:
  """The config file `name`, a path relative to the folder of `config_file` (a config's
  __file__), as a module: an experiment config starts from its testbed's base this way."""
  return load_file(os.path.join(os.path.dirname(config_file), name))


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
  bad = [x for x in g.samplers if x not in lookahead_lib.SAMPLERS] or (
      [] if g.samplers else ["(empty)"])
  _require(not bad, "generate.samplers", tuple(g.samplers),
           f"use values from {', '.join(lookahead_lib.SAMPLERS)}")
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
      marked=getattr(registry.get(config.data.name), "marked_probe", False))


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


def derive(config: ConfigDict, tokenizer: Tokenizer) -> Settings:
  """The `Settings` of a config whose values are checked (`validate` calls it), for a
  tokenizer; benchmarks call it directly, without a dataset."""
  d = config.data
  lookahead = _lookahead(config, tokenizer.eod_id)
  stunt = _stunting(config, lookahead)
  return Settings(
      model=model_lib.Config(**config.model.to_dict()), tokenizer=tokenizer,
      lookahead=lookahead, mixture=stunt.mixture, stunting=stunt,
      objective=_objective(config, tokenizer.mask_id),
      monitor_lookahead=stunt.lookahead or lookahead,
      dev_lookahead=_dev_lookahead(config, lookahead),
      data=dict(seq_len=d.seq_len, global_batch_size=config.train.global_batch,
                tokenizer=tokenizer, data_dir=d.data_dir, options=d.options.to_dict(),
                text_key=d.text_key, answer_only=d.answer_only, packing_bins=d.packing_bins,
                read_threads=d.read_threads),
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
