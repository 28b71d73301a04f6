"""Monitoring during training: does explicit lookahead keep helping the model?

Every `monitor.every` steps, on fixed held-out batches of data.val_split, the
lookahead-specific gain G = gain(q_H) - gain(q_1) of the stunting lookahead and of a dev
lookahead that stunting never uses (docs/design.md section 3; settings._dev_lookahead makes
it differ from the stunting one in kind or horizon), and the teacher-forced accuracy on
the marked tokens, split by mark group (path_star: the goal's depth).

G is measured as the evaluation measures it (fit.py, docs/design.md section 2), not at
one fixed tau and lam: the held-out batches are split, for the whole run, into
`monitor.batches` REPORT batches and the next `monitor.fit_batches` FIT
batches of the split. At every monitoring step one pass per batch computes, at the scored
tokens, the paths of each monitoring lookahead (run at those anchors only) and p's top-k,
k up to the largest width among the lookaheads (the control family). On the FIT batches'
tokens each lookahead's tau and lam (`fit.fit_side`) and the control's top-k, tau and lam
(`fit.fit_control`: the best horizon-1 sharpening of the family) are fitted per part:
"all" tokens, and "marked" tokens where the testbed marks some. On the REPORT batches'
tokens G is reported with those settings: G_<name> on all tokens at the "all" fits,
G_<name>_marked and G_<name>_marked_<group> on the marked tokens at the "marked" fits (a
group's tokens are too few to fit on). Both lookaheads share the tokens and the control
(tokens where either lookahead has no room in the context are left out).

Every figure is pooled: the sum over all tokens of all report batches divided by their
count (never a mean of per-batch means), with a 95% interval that resamples whole rows
(stats.row_interval) in <key>_lo, <key>_hi. A figure without tokens (no marked token of
a group; no fit where the fit batches have no token of the part) is left out of the
record, so nothing NaN is logged. The fitted settings of each lookahead and of the control
on the headline part (marked tokens, or all where the testbed marks none) are logged as
<name>_inverse_tau (1/tau; 0 is tau -> inf, uniform over the paths), <name>_lam,
control_width, control_inverse_tau and control_lam.

If the dev lookahead's G on the headline part, after its interval had been above 0, stops
being positive, the model may have learned to do the lookahead itself: a warning says so.
With probes.enabled, the same batches feed the internal-lookahead probes (probes.py):
fit on the fit batches, scored on the report batches.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lookahead_jax import aot, sharding, stats
from lookahead_jax import fit as fit_lib
from lookahead_jax import lookahead as lookahead_lib
from lookahead_jax import model as model_lib
from lookahead_jax import probes as probes_lib
from lookahead_jax.data import pipeline
from lookahead_jax.settings import Settings

Array = jax.Array
NAMES = ("stunting", "dev")  # the monitoring lookaheads
# Figures with a 95% interval (<key>_lo, <key>_hi) in every record that has them.
INTERVAL_KEYS = ("G_stunting", "G_dev", "G_stunting_marked", "G_dev_marked", "accuracy_marked")
# The fitted settings on the headline part.
SETTING_KEYS = ("stunting_inverse_tau", "stunting_lam", "dev_inverse_tau", "dev_lam",
                "control_width", "control_inverse_tau", "control_lam")
TRAJECTORY_KEYS = (INTERVAL_KEYS + tuple(f"{k}_{end}" for k in INTERVAL_KEYS
                                         for end in ("lo", "hi"))
                   + SETTING_KEYS + ("future_gain",))
GROUP_KEYS = ("accuracy_marked_", "G_dev_marked_", "G_stunting_marked_")  # + a mark group
_GROUPED = re.compile(rf"^({'|'.join(GROUP_KEYS)})\d+(_lo|_hi)?$")


# ----------------------------------------------------------------------------- one pass


@functools.partial(jax.jit, static_argnames=("config", "lookaheads", "control_width",
                                             "loglinear"))
def held_out_pass(params, batch, rng, *, config: model_lib.Config,
                  lookaheads: tuple[tuple[str, lookahead_lib.Lookahead, float], ...],
                  control_width: int, loglinear: bool) -> dict[str, Any]:
  """What the monitor's fits and figures need of one held-out batch, per token [b, T].

  batch: the pipeline's arrays [b, T] and mark_group int32 [b, T] (pipeline.mark_groups).
  lookaheads: ((name, Lookahead, beta), ...), each run at the scored anchors only. Returns
  caches {name: fit.TokenCache} of each lookahead's paths (no loglinear normaliser: the
  control's serves all), control (the cache of p's top-`control_width`, scored log p),
  keep (scored tokens where every lookahead has room), right (argmax == target) and
  group (the mark group).
  """
  logits, cache = model_lib.forward(params, batch["inputs"], batch["positions"], config=config,
                                    segment_ids=batch["segment_ids"])
  log_p = jax.nn.log_softmax(logits)
  targets = batch["targets"]
  scored = batch["weights"] > 0
  keep, caches = scored, {}
  for i, (name, la, beta) in enumerate(lookaheads):
    found = lookahead_lib.paths_from_pass(params, logits, cache, batch["positions"],
                                          batch["segment_ids"], jax.random.fold_in(rng, i),
                                          beta, scored, batch["inputs"], config=config,
                                          lookahead=la)
    keep &= found.valid
    caches[name] = fit_lib.pass_cache(log_p, found, targets, loglinear=False)
  score, first = jax.lax.top_k(log_p, control_width)
  control = fit_lib.pass_cache(
      log_p, lookahead_lib.Paths(first=first.astype(jnp.int32), score=score, valid=scored),
      targets, loglinear)
  return dict(caches=caches, control=control, keep=keep, group=batch["mark_group"],
              right=jnp.argmax(logits, -1) == targets)


def host_tokens(outs: list[dict[str, Any]]) -> fit_lib.Split:
  """The kept tokens of the host copies of `held_out_pass`'s outputs, one per batch."""
  return fit_lib.host_split(outs, [np.asarray(o["keep"], bool) for o in outs])


# ----------------------------------------------------------------------------- fits, figures


def fit_settings(tokens: fit_lib.Split, parts: tuple[str, ...], *, scheme: str, mixture: str,
                 control_widths: range) -> dict[str, dict[str, fit_lib.Fit]]:
  """{part: {"control": Fit, name: Fit per lookahead}} fitted on `tokens` (the FIT
  batches'): each lookahead's tau and lam, and the best of p's top-k for k in
  `control_widths` with its tau and lam (NaN NLL where the part has no token)."""
  out = {}
  for part in parts:
    w = fit_lib.weights_of(tokens.part(part), tokens.control.size)
    fits = {"control": fit_lib.fit_control(tokens.control, w, mixture=mixture,
                                           widths=control_widths)}
    for name, cache in tokens.lookaheads.items():
      fits[name] = fit_lib.fit_side(cache, w, scheme=scheme, mixture=mixture)
    out[part] = fits
  return out


def pooled(values: np.ndarray, rows: np.ndarray, resamples: int, seed: int = 0
           ) -> tuple[float, float, float]:
  """(mean, lo, hi): the pooled mean of per-token values (sum over every token / their
  count) and its 95% interval resampling the rows the tokens sit in (stats.row_interval;
  the rows drawn are those with a token). NaN without a token."""
  if not len(values):
    return math.nan, math.nan, math.nan
  ids, index = np.unique(rows, return_inverse=True)
  mean, lo, hi = stats.row_interval(np.asarray(values, np.float64), index.ravel(),
                                    stats.resample_counts(len(ids), resamples, seed))
  return float(mean), float(lo), float(hi)


def report_figures(tokens: fit_lib.Split, fits: dict[str, dict[str, fit_lib.Fit]],
                   groups: tuple[int, ...], *, scheme: str, mixture: str, resamples: int,
                   seed: int = 0) -> dict[str, float]:
  """The figures of `tokens` (the REPORT batches') at the fitted settings `fits`.

  Per lookahead name: G_<name> (all tokens, at the "all" fits), gain_<name> (its mixture
  over p) and helps_<name> (share of tokens with g > 0); G_<name>_marked and
  G_<name>_marked_<g> per group (at the "marked" fits); accuracy_marked(_<g>). Each with
  <key>_lo, <key>_hi (95%, rows resampled) except gain and helps. Pooled over every token;
  a figure without tokens, or whose part has no fit, is left out (no NaN).
  """
  out: dict[str, float] = {}
  marked = tokens.group > 0

  def put(key: str, values: np.ndarray, mask: np.ndarray) -> None:
    if mask.any():
      out[key], out[key + "_lo"], out[key + "_hi"] = pooled(values[mask], tokens.row[mask],
                                                            resamples, seed)

  right = tokens.right.astype(np.float64)
  put("accuracy_marked", right, marked)
  for g in groups:
    put(f"accuracy_marked_{g}", right, tokens.group == g)
  n = tokens.n
  log_p_y = np.asarray(tokens.control.log_p_y[:n], np.float64)
  for part, fitted in fits.items():
    control = fitted["control"]
    if math.isnan(control.nll) or not n:
      continue
    mixed_1 = fit_lib.log_mixture_at(tokens.control, control, scheme="sum",
                                     mixture=mixture)[:n]
    for name, cache in tokens.lookaheads.items():
      if math.isnan(fitted[name].nll):
        continue
      mixed_h = fit_lib.log_mixture_at(cache, fitted[name], scheme=scheme, mixture=mixture)[:n]
      g = mixed_h - mixed_1
      if part == "all":
        put(f"G_{name}", g, np.ones(n, bool))
        out[f"gain_{name}"] = float(np.mean(mixed_h - log_p_y))
        out[f"helps_{name}"] = float(np.mean(g > 0))
      else:
        put(f"G_{name}_marked", g, marked)
        for k in groups:
          put(f"G_{name}_marked_{k}", g, tokens.group == k)
  return out


def setting_figures(fits: dict[str, fit_lib.Fit]) -> dict[str, float]:
  """<name>_inverse_tau, <name>_lam per lookahead, control_width, control_inverse_tau and
  control_lam of one part's fits (none of a fit without tokens)."""
  out: dict[str, float] = {}
  for name, f in fits.items():
    if math.isnan(f.nll):
      continue
    out[f"{name}_inverse_tau"], out[f"{name}_lam"] = f.inverse_temperature, f.lam
    if name == "control":
      out["control_width"] = float(f.width)
  return out


# ----------------------------------------------------------------------------- the monitor


class Monitor:
  """G of the stunting and the dev lookahead on fixed held-out batches (module docstring).

  Every `monitor.every` steps: each side fitted on the FIT batches, the figures
  pooled over the REPORT batches with row-bootstrap intervals (it says which batches and
  lookaheads when it starts). G of the dev lookahead is read on the marked tokens (all
  tokens where the testbed marks none). Once its interval has been above 0, a warning
  follows when G has not been positive for `monitor.patience` evaluations in a
  row (the model may have internalized the lookahead that stunting is meant to keep it
  from learning); before, it says once that lookahead has not helped yet. With probes,
  also the probes' figures (probes.named) as monitor_<name>.

  batches: (report, fit) lists of host batches, for tests; None reads data.val_split:
  the first monitor.batches batches report, the next monitor.fit_batches fit.
  """

  def __init__(self, settings: Settings, mesh: jax.sharding.Mesh,
               batches: tuple[list, list] | None = None):
    mon = settings.monitor
    self.every, self.patience, self.streak, self.last = mon.every, mon.patience, 0, {}
    self.helped, self.said_not_yet = False, False
    if not self.every:
      return
    if batches is None:
      report, fitting = self._read(settings)
    else:
      report, fitting = batches
    for b in report + fitting:
      if "mark_group" not in b:
        b["mark_group"] = pipeline.mark_groups(settings.data.name, settings.tokenizer,
                                               b["targets"], b["needs_lookahead"])
    scored = lambda b: b["weights"] > 0
    self.groups = tuple(sorted({int(g) for b in report for g in np.unique(
        b["mark_group"][scored(b)]) if g > 0}))
    self.part = "marked" if self.groups else "all"
    self.parts = ("all", "marked") if self.groups else ("all",)
    self.n_report = len(report)
    batch_sharding = sharding.batch_sharding(mesh)
    self.batches = [pipeline.global_batch(b, batch_sharding) for b in report + fitting]
    mix = settings.mixture
    self.lookaheads = (("stunting", settings.monitor_lookahead, mix.beta),
                       ("dev", settings.dev_lookahead, mix.beta))
    width = min(max(la.width for _, la, _ in self.lookaheads), settings.model.vocab_size)
    self.control_widths = range(1, width + 1)
    self.scheme, self.mixture = mix.scheme, mix.mixture
    self.fn = functools.partial(held_out_pass, config=settings.model,
                                lookaheads=self.lookaheads, control_width=width,
                                loglinear=mix.mixture == "loglinear")
    self.resamples, self.seed = settings.eval.bootstrap, settings.eval.seed
    self.rng = jax.random.key(settings.seed + 1)
    self.compiled = self.probes_compiled = None  # Futures of the compiles, `compile_ahead`
    count = lambda bs, marks: sum(int((scored(b) & ((b["mark_group"] > 0) | ~marks)).sum())
                                  for b in bs)
    logging.info(
        "monitor: G every %d steps on %d held-out batches (%d scored tokens, %d marked), "
        "each side's tau and lam and the control (the best of p's top-k, k <= %d) fitted on "
        "%d other batches (%d tokens, %d marked), per part (%s), for the stunting lookahead "
        "%s and the dev lookahead %s (%s, %s mixture)", self.every, len(report),
        count(report, False), count(report, True), width, len(fitting), count(fitting, False),
        count(fitting, True), ", ".join(self.parts),
        *(la.describe(beta) for _, la, beta in self.lookaheads), mix.scheme, mix.mixture)
    if self.groups and not count(fitting, True):
      logging.warning("monitor: the %d fit batches hold no marked token: G on marked tokens "
                      "cannot be fitted and is left out; raise monitor.fit_batches",
                      len(fitting))
    self.probes = settings.probes
    if self.probes is not None:
      join = lambda part: {k: np.concatenate([b[k] for b in part]) for k in part[0]
                           if k != "mark_group"}
      # fit on the fit batches, scored on the report batches
      self.probe_batches = [pipeline.global_batch(join(part), batch_sharding)
                            for part in (fitting, report)]
      self.probe_fn = jax.jit(functools.partial(probes_lib.probe_metrics, config=settings.model,
                                                probes=self.probes))

  def compile_ahead(self, ahead: aot.Ahead, params) -> None:
    """Starts compiling the held-out pass and the probes on `ahead`, for parameters shaped
    and sharded like `params`; the checks then call the compiled passes."""
    if not self.every:
      return
    shapes = aot.abstract(params)
    self.compiled = ahead.submit(held_out_pass, shapes, self.batches[0],
                                 jax.random.fold_in(self.rng, 0), **self.fn.keywords)
    if self.probes is not None:
      self.probes_compiled = ahead.submit(self.probe_fn, shapes, *self.probe_batches, self.rng)

  @staticmethod
  def _read(settings: Settings) -> tuple[list, list]:
    """The report and fit batches of data.val_split (different batches, fixed for the
    run); where the split has fewer than both ask, what it has, split in their ratio."""
    want_report, want_fit = settings.monitor.batches, settings.monitor.fit_batches
    val_split = settings.data.val_split
    host = list(itertools.islice(pipeline.make_ordered_iterator(
        settings.data.name, val_split, **settings.pipeline), want_report + want_fit))
    if len(host) < 2:
      raise ValueError(f"data.val_split={val_split!r} has {len(host)} batch(es) "
                       "of train.global_batch rows: the monitor reports on some and fits on "
                       "others, so it needs at least 2; use a larger split or a smaller batch")
    n_report = want_report
    if len(host) < want_report + want_fit:
      n_report = min(max(1, round(len(host) * want_report / (want_report + want_fit))),
                     len(host) - 1)
      logging.warning("monitor: data.val_split=%r has %d batches, fewer than "
                      "monitor.batches=%d + monitor.fit_batches=%d: reporting on %d, "
                      "fitting on %d", val_split, len(host), want_report, want_fit,
                      n_report, len(host) - n_report)
    return host[:n_report], host[n_report:]

  def due(self, step: int) -> bool:
    """Whether `step` is a monitoring step."""
    return bool(self.every) and step % self.every == 0

  def __call__(self, step: int, params) -> dict[str, float]:
    """The figures at this step ({} when not a monitoring step): G of both lookaheads,
    accuracy, fitted settings, probes, as monitor_<key>. Checks run one at a time, in
    step order (the warning's streak counts them in that order)."""
    if not self.due(step):
      return {}
    fn = self.fn if self.compiled is None else self.compiled.result()
    outs = [jax.tree.map(sharding.gather, fn(params, b, jax.random.fold_in(self.rng, i)))
            for i, b in enumerate(self.batches)]
    report, fitting = host_tokens(outs[:self.n_report]), host_tokens(outs[self.n_report:])
    fits = fit_settings(fitting, self.parts, scheme=self.scheme, mixture=self.mixture,
                        control_widths=self.control_widths)
    figures = report_figures(report, fits, self.groups, scheme=self.scheme,
                             mixture=self.mixture, resamples=self.resamples, seed=self.seed)
    figures.update(setting_figures(fits[self.part]))
    fitted = fits[self.part]
    if not math.isnan(fitted["control"].nll):
      logging.info("step %d: the monitor's fits on %s tokens: dev q_H %s; stunting q_H %s; "
                   "control q_1 %s", step, self.part, fitted["dev"].describe(),
                   fitted["stunting"].describe(), fitted["control"].describe())
    gains = {f"monitor_{k}": v for k, v in figures.items()}
    if self.probes is not None:
      probe_fn = self.probe_fn if self.probes_compiled is None else self.probes_compiled.result()
      out = probe_fn(params, *self.probe_batches, self.rng)
      gains.update({f"monitor_{k}": v for k, v in probes_lib.named(jax.device_get(out),
                                                                    self.probes).items()})
    self._warn(step, gains)
    self.last = dict(gains, step=step)
    return gains

  def _warn(self, step: int, gains: dict[str, float]) -> None:
    key = "monitor_G_dev_marked" if self.part == "marked" else "monitor_G_dev"
    if key not in gains:  # no token, or no fit, of the part
      return
    now, lo, hi = gains[key], gains[key + "_lo"], gains[key + "_hi"]
    if lo > 0:
      self.helped = True
    if not self.helped:
      if not self.said_not_yet:
        logging.info("step %d: the dev lookahead has not helped yet (G %+.4f nats/token on %s "
                     "tokens, 95%% interval [%+.4f, %+.4f])", step, now, self.part, lo, hi)
        self.said_not_yet = True
      return
    self.streak = 0 if now > 0 else self.streak + 1
    if self.streak == self.patience:
      logging.warning("step %d: the dev lookahead's lookahead-specific gain G on %s tokens was "
                      "clearly positive earlier and has not been positive for %d evaluations "
                      "in a row (now %+.4f nats/token, 95%% interval [%+.4f, %+.4f]): the "
                      "model may have internalized the lookahead", step, self.part,
                      self.streak, now, lo, hi)


def trajectory(log: list[dict[str, float]]) -> dict[str, list[float | None]]:
  """The monitor's figures over a run's training, from its metrics log (metrics.read).

  {"step": [...]} and one list per TRAJECTORY_KEYS entry and per logged GROUP_KEYS entry
  with its _lo and _hi (None where a record has no such figure: no marked token of a
  group, the probe's future_gain when the probes were off); empty lists when the run was
  not monitored (or not trained here).
  """
  records = [r for r in log if "monitor_G_dev" in r]
  out: dict[str, list] = {"step": [r["step"] for r in records]}
  grouped = sorted({k[len("monitor_"):] for r in records for k in r
                    if k.startswith("monitor_") and _GROUPED.match(k[len("monitor_"):])})
  for key in TRAJECTORY_KEYS + tuple(grouped):
    out[key] = [r.get(f"monitor_{key}") for r in records]
  return out
