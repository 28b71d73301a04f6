"""The config schema: every key a command reads, its default and what it means.

Every config file starts from `base_config()`, a locked ConfigDict: assigning a key the
schema does not have fails at once, in the config file or on the command line. Values
that follow from others are `FieldReference`s (`model.max_len = data.seq_len +
lookahead.horizon`), so an override of one (`--config.lookahead.horizon=8`) moves the
other; assigning a plain value (a GPT-2 checkpoint's 1024) replaces the reference.

The schema is where a default is declared, once: the settings dataclasses a section
configures (model.Config, lookahead.Lookahead, ...) read theirs through `defaults`.
This module imports nothing of the library and no framework (ml_collections only), so a
config file loads at once; `settings.validate(config)` checks a config and derives the
`Settings` the commands run on.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import types

import ml_collections

ConfigDict = ml_collections.ConfigDict


# The stunting modes (stunting.MODES implements each), with the one line that describes a
# mode wherever modes are listed (--help, README, compare's tables); the experiment
# configs' EXPERIMENTS.
STUNTING_MODES = {
    "none": "plain next-token loss (the baseline)",
    "v1_token": "drops the loss of toward tokens (lookahead beats sharpening by > margin)",
    "v1_update": "skips an update that raises the alignment A with the lookahead (<u, g_A> > 0)",
    "v2_penalty": "adds a bounded penalty on the probability where the lookahead points",
    "v3_balance": "weights tokens so that toward and away movements cancel (a debt carries "
                  "the rest)",
    "v3_project": "removes the component along g_A of the update the optimizer applies",
    "v4": "stunting.v4_base (v3_balance by default) with an SMC lookahead instead of beam",
    "distill": "positive control: adds KL(lookahead mixture || p), training toward lookahead",
    "myopic": "attention reads stop-gradient keys and values: no position trained for later "
              "ones"
}
SAMPLERS = ("greedy", "beam", "sample", "amplified")  # evals/generation.py: continue_prompts

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


def unknown_key_error(error: Exception, argv: list[str]) -> ConfigError:
  """The one-line error for `error`, the locked schema's error on a key it does not have, met
  while parsing the command line `argv`: the new name of a renamed key, else the unknown
  key, named as an override of `argv` gave it where one did."""
  renamed = renamed_key_error(error)
  if renamed is not None:
    return renamed
  overrides = [arg[len("--config."):].split("=")[0] for arg in argv
               if arg.startswith("--config.")]
  # config_flags names the missing key first; the locked schema says 'Key "name" ...'
  unknown = re.findall(r'Key "(\w+)"', str(error))[:1] or re.findall(r"\w+", str(error))[:1]
  named = [key for key in overrides if set(unknown) & set(key.split("."))]
  where = " or ".join(named) if named else f"{unknown[0] if unknown else '?'} (in the config file)"
  return ConfigError(f"unknown config key {where}: the keys and their defaults are in "
                     "lookahead_jax/config.py (base_config) and the config file")


# ----------------------------------------------------------------------------- schema


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
  c = ConfigDict()
  c.seed = 0  # parameters, dropout, data order and SMC draws all follow from it

  c.data = ConfigDict()
  c.data.name = "rhyme"  # a testbed of data/registry.py | text_files | a prepared TFDS set
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
  c.lookahead.kind = "beam"  # beam | smc | mcts
  c.lookahead.width = 4  # beams B, SMC particles N, or MCTS children K of a node
  c.lookahead.horizon = 4  # H tokens, the predicted one included
  c.lookahead.temperature = 1.0  # tau of the amplified distribution
  c.lookahead.scheme = "sum"  # sum | max
  c.lookahead.mixture = "linear"  # linear | loglinear
  c.lookahead.lam = 0.5  # weight of q in the mixture
  c.lookahead.chunk = 0  # anchors per vmapped chunk; 0: all
  # beam and MCTS paths that end early at EOS score S * (H / L)**alpha
  c.lookahead.length_penalty = 1.0
  c.lookahead.beta = 4.0  # SMC tempering
  # MCTS (mcts.py): model calls per anchor; 0: K(H-1), as many as a width-K beam's
  c.lookahead.simulations = 0
  # MCTS: q is "gumbel" (Gumbel MuZero's improved policy at the root) or "visits" (PUCT's
  # visit distribution); docs/design.md says why gumbel is the default
  c.lookahead.policy = "gumbel"
  # MCTS: what a path earns, "log_prob" (its tokens' log-probabilities) or "task" (the
  # testbed's return of the answer it completes: path_star, 1 when it reaches the goal; the
  # value head's targets follow, heads.py); docs/design.md section 10
  c.lookahead.reward = "log_prob"

  c.model = ConfigDict()  # model.Config's fields
  c.model.vocab_size = 258  # V, at least the tokenizer's (validate names the size it needs)
  # Every anchor of a row can look H tokens ahead; assign an int to fix it (GPT-2: 1024).
  c.model.max_len = c.data.get_ref("seq_len") + c.lookahead.get_ref("horizon")
  c.model.num_layers = 4  # transformer blocks
  c.model.d_model = 256  # residual stream width
  c.model.num_heads = 4  # attention heads; they divide d_model
  c.model.mlp_ratio = 4  # MLP hidden width over d_model
  c.model.dropout = 0.0  # on the attention weights, in training only
  c.model.param_dtype = "float32"  # parameters (and the optimizer state)
  c.model.dtype = "float32"  # compute dtype; "bfloat16" on accelerators
  c.model.remat = False  # rematerialise each block in the backward pass
  c.model.layer_norm_eps = 1e-5
  # Heads on the final hidden state for tree search (heads.py, mcts.py): a value head (a
  # scalar estimate of a path's return) and an is-done head (the logit of the answer
  # having ended). Their parameters live beside the others, in the checkpoint.
  c.model.value_head = False
  c.model.done_head = False
  # Numeric tokens read as numbers: K > 0 adds to the embedding of each token the testbed
  # declares numeric (its tokenizer's `numeric_tokens()`: token id, channel, value in
  # [0, 1); tsp: the x and y coordinates, value / grid) a learned linear projection, one per
  # channel, of the value's Fourier features [v, sin(2 pi k v), cos(2 pi k v), k = 1..K].
  # 0: off (no parameters added). The projections are parameters, in the checkpoint.
  c.model.numeric_features = 0
  # With numeric_features: False drops the numeric tokens' own (per-value) input
  # embeddings, so such a token enters as its channel's projection alone.
  c.model.numeric_embeddings = True
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
  c.objective.kind = "next_token"  # next_token | spectrum (next-token and masked examples)
  c.objective.rho = 1.0  # spectrum: share of next-token examples (1: GPT, 0: BERT-like)
  c.objective.suffix = 0.0  # spectrum: share of examples whose suffix from a cut is masked
  c.objective.mask_rate = 0.15  # spectrum: share r of each span example's tokens masked
  c.objective.mean_span = 0.0  # spectrum: mean span s (>= 1); 0: tokens independent

  c.mesh = ConfigDict()
  c.mesh.data = -1  # -1: all devices not used by the other axis
  c.mesh.fsdp = 1  # parameters and optimizer state sharded over this many devices

  c.stunting = ConfigDict()
  c.stunting.mode = "none"  # one of STUNTING_MODES
  # What toward, m, A and g_A compare: "control" the lookahead with its horizon-1 control
  # (q_H - q_1, lookahead beyond sharpening); "naive" the lookahead with p alone.
  c.stunting.contrast = "control"
  c.stunting.v4_base = "v3_balance"  # v4: this mode with SMC lookahead
  c.stunting.penalty = 1.0  # v2_penalty coefficient
  c.stunting.distill = 1.0  # distill: coefficient c of KL(q~_H || p) beside the loss
  # A token is toward when log q~_H(y) - log q~_1(y) (naive: - log p(y)) exceeds this, in
  # nats. 0.01: ~50x the ~2e-4 nats by which a confident correct token (p(y) = 0.999) is
  # "better" looked ahead, and 10-70x below the log(1 + lam) ~ 0.1-0.7 nats a lookahead
  # that tells two equally likely arms apart gives; without it v1_token drops every
  # confidently predicted token (90-97% of path_star's answer tokens).
  c.stunting.margin = 0.01
  c.stunting.debt_decay = 0.9  # v3_balance: per-step decay of unbalanced movement
  # steps between cos(g, g_A) logs (v1_update, v3_project: every step)
  c.stunting.alignment_every = 10
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
  # The evaluators (evals/), run in this order, each where it applies: "gain" (the grid,
  # first), "masked", "path_star", "tsp", "probes"; a dotted name is a module of your own
  c.eval.evaluators = ("gain", "masked", "path_star", "tsp", "probes")
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
  c.generate.samplers = SAMPLERS  # any of greedy, beam, sample, amplified
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
  c.probes.max_offset = 3  # K: future-token probes of x_{t+k}, k = 2..K
  c.probes.layers = ()  # layers (1..model.num_layers) whose residual stream is probed; (): all
  c.probes.steps = 50  # full-batch Adam steps of every linear probe
  c.probes.learning_rate = 0.1  # Adam, on standardised features
  c.probes.l2 = 0.03  # L2 penalty on the probe's weights (the fit sets are small)
  c.probes.eval_batches = 2  # evaluation: eval.batch_size batches of each split
  c.probes.induction_rows = 8  # random sequences of the induction score
  c.probes.induction_length = 0  # tokens before the repeat; 0: half of data.seq_len
  c.lock()
  c.data.options.unlock()
  return c


@functools.cache
def _schema() -> ConfigDict:
  return base_config()


def defaults(section: str) -> ConfigDict:
  """The schema's defaults of one section (read-only): a settings dataclass that a section
  configures takes its field defaults from here (`width: int = _DEFAULT.width`), so a
  default is declared once, in `base_config`."""
  return _schema()[section]


def experiment(config: ConfigDict, mode: str) -> ConfigDict:
  """`config` as one run of a stunting comparison: its mode, monitoring and evaluation.

  Monitoring runs ten times a run: the interval follows train.steps, also when it is
  overridden later (on the command line, also in `compare`).
  """
  config.stunting.mode = mode
  config.monitor.every = (config.train.get_ref("steps") + 9) // 10
  config.eval.max_batches = 8
  return config


def resolved(config: ConfigDict) -> dict:
  """The config as a plain dict, its references resolved: a run's config.json, and what
  compare matches a run's record on."""
  return json.loads(config.to_json_best_effort())


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
