"""Training: the sharded train step and the loop.

Read top to bottom: input; update step; loop. The state, optimizer and shardings are
state.py's.
Everything at a jit boundary is a pure function of pytrees: `train_step(state, batch)
-> (state, metrics)` is ONE jitted function over the mesh, with in/out shardings and the
state donated (docs/design.md sections 4 and 7). The config is validated once
(settings.validate) and its derived `Settings` are passed in; checkpoints are
checkpoint.py's, reports report.py's.

The loss is an explicit per-token computation (`objectives`): one forward pass
gives the logits and the teacher-forced keys/values (what the lookahead reuses), the
per-token cross-entropy [b, T] is reduced with the batch weights and normalised by the
number of weighted tokens of the GLOBAL batch. So gradient accumulation over
micro-batches sums to exactly the full-batch gradient, and a sharded step computes the
same loss as an unsharded one. Stunting (docs/design.md section 3) changes the per-token
terms there and the gradients in `train_step`, through the mode's hooks (stunting.py).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import itertools
import json
import math
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from absl import logging
from etils import epath
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lookahead_jax import aot, checkpoint, evaluate, report, sharding
from lookahead_jax import heads as heads_lib
from lookahead_jax import lookahead as lookahead_lib
from lookahead_jax import masked as masked_lib
from lookahead_jax import metrics as metrics_lib
from lookahead_jax import model as model_lib
from lookahead_jax import monitor as monitor_lib
from lookahead_jax import settings as settings_lib
from lookahead_jax import state as state_lib
from lookahead_jax import stunting as stunting_lib
from lookahead_jax.data import curriculum, pipeline
from lookahead_jax.settings import Settings

Array = jax.Array
ConfigDict = ml_collections.ConfigDict


class NonFiniteError(RuntimeError):
  """Too many non-finite steps in a row; the last good state is checkpointed."""


# ----------------------------------------------------------------------------- input


def make_train_iterator(settings: Settings
                        ) -> pipeline.BatchIterator | curriculum.Curriculum:
  """Shuffled, repeated training batches local to this process (checkpointable): of
  data.train_split, or of the stages of data.curriculum in turn."""
  d = settings.data

  def batches(split: str) -> pipeline.BatchIterator:
    return pipeline.make_iterator(d.name, split, seed=settings.seed, prefetch=d.prefetch,
                                  **settings.pipeline)

  if not d.curriculum:
    return batches(d.train_split)
  return curriculum.Curriculum(d.curriculum, batches, d.curriculum_steps, d.curriculum_accuracy)


def make_val_iterator(settings: Settings, split: str | None = None
                      ) -> Iterator[dict[str, np.ndarray]]:
  """The first `train.val_batches` batches of `split` (default data.val_split; 0: all of
  it), in order."""
  batches = pipeline.make_ordered_iterator(settings.data.name, split or settings.data.val_split,
                                           **settings.pipeline)
  n = settings.train.val_batches
  return batches if n == 0 else itertools.islice(batches, n)


# ----------------------------------------------------------------------------- update step


def objectives(params: model_lib.Params, batch: Mapping[str, Array], rng: Array,
               norm: Array, target: Array, *, model_cfg: model_lib.Config,
               stunt: stunting_lib.Stunting, dropout: bool = True,
               heads: heads_lib.Heads | None = None
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
    heads: the value and is-done heads' training (heads.py), or None.

  Returns:
    ((loss [], A []), aux): A = sum_i sum_w d_i(w) log p_i(w) / norm (stunting.py; 0
    without a lookahead); aux sums over the micro-batch: ce_sum, tokens, correct, and
    with a lookahead toward, marked (weighted tokens the batch's needs_lookahead marks),
    toward_marked, movement, kl, penalty, distill and the mode's token_weights
    statistics (v3_balance: balance_realized, the realized sum w_i m_i, and the others of
    stunting.balance_weights); with heads, their summed terms (heads.py).
  """
  dropout_key, lookahead_key = jax.random.split(rng)
  # One teacher-forced pass: the logits and every layer's keys/values, which the stunting
  # lookahead reuses.
  logits, cache, *extras = model_lib.forward(
      params, batch["inputs"], batch["positions"], config=model_cfg,
      segment_ids=batch["segment_ids"], dropout_rng=dropout_key if dropout else None,
      myopic=stunt.hooks.myopic, bidirectional=batch.get("bidirectional"),
      heads=heads is not None)
  targets, weights = batch["targets"], batch["weights"]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # [b, T]
  aux = {"ce_sum": jnp.sum(ce * weights), "tokens": jnp.sum(weights),
         "correct": jnp.sum((jnp.argmax(logits, -1) == targets) * weights)}

  # The paths of a lookahead, from the current parameters under stop_gradient, at the
  # anchors the loss weighs (the others' paths would only be multiplied by 0).
  sg = jax.lax.stop_gradient
  paths = functools.partial(lookahead_lib.paths_from_pass, sg(params), sg(logits), sg(cache),
                            batch["positions"], batch["segment_ids"], lookahead_key,
                            needed=weights > 0, tokens=batch["inputs"], config=model_cfg)
  found = None if stunt.lookahead is None else paths(stunt.mixture.beta,
                                                     lookahead=stunt.lookahead)
  head_loss = jnp.zeros(())
  if heads is not None:
    if heads.eod_id is not None:
      aux.update(heads_lib.done_terms(extras[0]["done"], targets, weights, heads.eod_id))
    if heads.lookahead is not None:  # the stunting beam's paths serve when they are the same
      value_paths = found if stunt.lookahead == heads.lookahead else paths(
          1.0, lookahead=heads.lookahead)
      aux.update(heads_lib.value_terms(extras[0]["value"], value_paths, weights,
                                       heads.value_scale))
    head_loss = heads_lib.loss(aux, heads, norm)
  if stunt.lookahead is None:
    return (aux["ce_sum"] / norm + head_loss, jnp.zeros(())), aux

  weighted, extra, alignment, terms = stunting_lib.step_terms(
      logits, ce, found, batch, target, lookahead_key, stunt)
  loss = weighted / norm + head_loss
  if extra is not None:
    loss = loss + extra / norm
  aux.update(terms)
  return (loss, alignment / norm), aux


def _micro_batches(batch: Mapping[str, Array], k: int, micro_sharding) -> dict[str, Array]:
  """[B, ...] -> [k, B/k, ...]; micro-batch i takes rows i, i+k, ... (each device's share)."""
  def split(x):
    x = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
    return jax.lax.with_sharding_constraint(x, micro_sharding)
  return {key: split(x) for key, x in batch.items()}


def train_step(state: state_lib.TrainState, batch: Mapping[str, Array], *,
               tx: optax.GradientTransformation, schedule: optax.Schedule,
               model_cfg: model_lib.Config, stunt: stunting_lib.Stunting, grad_accum: int,
               micro_sharding: NamedSharding,
               objective: masked_lib.Objective = masked_lib.NEXT_TOKEN,
               heads: heads_lib.Heads | None = None
               ) -> tuple[state_lib.TrainState, dict[str, Array]]:
  """One optimizer step on a global batch [B, T]; a non-finite step changes only counters.

  One forward pass per micro-batch gives the loss and the alignment A; the gradient of the
  loss (and of A, when stunting uses it or logs cos(g, g_A)) are summed over `grad_accum`
  micro-batches by a lax.scan, exactly the full-batch gradients (see `objectives`).
  The optimizer turns the gradient into its update u (and its new state, the moments
  following the gradient in every mode); stunting then acts on u, the update that is
  applied, through the mode's `edit_update` hook (stunting.py): v1_update skips the step
  when <u, grad A> > 0 (parameters and optimizer state stay as they were), v3_project
  removes u's component along grad A (weight decay included). If the loss or the global
  gradient norm is not finite, parameters and optimizer state stay as they were and the
  non-finite counters go up. That skip is written out here
  rather than taken from optax.apply_if_finite, which would add its own entries to the
  optimizer state (changing the checkpoints' structure) and could not share the skip with
  v1_update's.
  """
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  batch = masked_lib.apply(batch, jax.random.fold_in(rng, masked_lib.STREAM), objective)
  norm = jnp.maximum(jnp.sum(batch["weights"]), 1.0)
  target = -state.balance_debt / grad_accum  # v3_balance: pay back earlier imbalance
  lookahead = stunt.lookahead is not None
  with_alignment = lookahead and (stunt.needs_alignment_grad
                                  or state.step % stunt.alignment_every == 0)

  def micro_step(i, micro):
    objective = functools.partial(objectives, batch=micro, rng=jax.random.fold_in(rng, i),
                                  norm=norm, target=target, model_cfg=model_cfg, stunt=stunt,
                                  heads=heads)
    (loss, _), vjp, aux = jax.vjp(objective, state.params, has_aux=True)
    one, zero = jnp.ones(()), jnp.zeros(())
    grads = vjp((one, zero))[0]
    grads_a = ()  # grad A: only with a lookahead, and only when used
    if stunt.needs_alignment_grad:
      grads_a = vjp((zero, one))[0]
    elif lookahead:
      grads_a = jax.lax.cond(with_alignment, lambda: vjp((zero, one))[0],
                             lambda: optax.tree.zeros_like(grads))
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
             "grad_norm": grad_norm, **heads_lib.metrics(aux, tokens)}
  # The optimizer's update u for the raw gradient (clipping, Adam's moments, weight decay),
  # and its new state: the moments follow the gradient in every mode. Stunting edits u,
  # the update that is applied; a skipped step keeps the old parameters and optimizer state.
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  skip = jnp.zeros((), bool)
  debt = state.balance_debt
  if lookahead:
    # A gradient step moves the parameters along g = -grads, the optimizer's along u;
    # <., g_A> > 0 raises the alignment.
    cos = stunting_lib.cosine(jax.tree.map(jnp.negative, grads), grads_a)
    update_cos = stunting_lib.cosine(updates, grads_a)
    marked = aux["marked"]
    metrics.update(toward=aux["toward"] / tokens,
                   # NaN on a step without tokens of that kind (StepLog leaves NaN out)
                   toward_marked=jnp.where(marked > 0, aux["toward_marked"] / marked, jnp.nan),
                   toward_unmarked=jnp.where(
                       aux["tokens"] > marked,
                       (aux["toward"] - aux["toward_marked"]) / (aux["tokens"] - marked),
                       jnp.nan),
                   movement=aux["movement"] / tokens, kl=aux["kl"] / tokens,
                   penalty=aux["penalty"] / tokens, distill=aux["distill"] / tokens,
                   alignment_cos=jnp.where(with_alignment, cos, jnp.nan),
                   update_alignment_cos=jnp.where(with_alignment, update_cos, jnp.nan))
    updates, skip, debt, edit_metrics = stunt.hooks.edit_update(updates, grads_a, update_cos,
                                                                aux, debt, stunt)
    metrics.update(edit_metrics)
  apply = ok & ~skip
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


def val_step(params: model_lib.Params, batch: Mapping[str, Array], *,
             model_cfg: model_lib.Config) -> dict[str, Array]:
  """Summed next-token statistics of a validation batch (ce_sum, tokens, correct)."""
  return objectives(params, batch, jax.random.key(0), jnp.ones(()), jnp.zeros(()),
                    model_cfg=model_cfg, stunt=stunting_lib.Stunting(), dropout=False)[1]


def jit_train_step(settings: Settings, mesh: jax.sharding.Mesh,
                   tx: optax.GradientTransformation, schedule: optax.Schedule,
                   shardings: state_lib.TrainState) -> Callable:
  """`train_step` jitted over the mesh: state in its shardings (donated), batch split."""
  step = functools.partial(
      train_step, tx=tx, schedule=schedule, model_cfg=settings.model, stunt=settings.stunting,
      grad_accum=settings.train.grad_accum, objective=settings.objective, heads=settings.heads,
      micro_sharding=NamedSharding(mesh, P(None, sharding.BATCH_AXES)))
  return jax.jit(step, in_shardings=(shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)


def jit_val_step(settings: Settings, mesh: jax.sharding.Mesh,
                 shardings: state_lib.TrainState) -> Callable:
  step = functools.partial(val_step, model_cfg=settings.model)
  return jax.jit(step, in_shardings=(shardings.params, sharding.batch_sharding(mesh)),
                 out_shardings=sharding.replicated(mesh))


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


def validation_loss(val_fn: Callable, params: model_lib.Params, settings: Settings,
                    batch_sharding: NamedSharding, split: str | None = None) -> dict[str, float]:
  """Validation loss and accuracy over the validation batches (of `split`, default
  data.val_split)."""
  sums = None
  for batch in make_val_iterator(settings, split):
    out = val_fn(params, pipeline.global_batch(batch, batch_sharding))
    sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
  sums = jax.device_get(sums)
  tokens = max(float(sums["tokens"]), 1.0)
  return {"val_loss": float(sums["ce_sum"]) / tokens,
          "val_accuracy": float(sums["correct"]) / tokens, "val_tokens": float(sums["tokens"])}


def stage_validation(val_fn: Callable, params: model_lib.Params, settings: Settings,
                     batch_sharding: NamedSharding, stages: curriculum.Curriculum
                     ) -> dict[str, float]:
  """The current curriculum stage's validation accuracy, reported to the curriculum (which
  may move on); returns the stage and that accuracy for the metrics log."""
  d = settings.data
  split = curriculum.validation_split(stages.stages[stages.stage], d.train_split, d.val_split)
  accuracy = validation_loss(val_fn, params, settings, batch_sharding, split)["val_accuracy"]
  stage = stages.stage
  stages.observe(accuracy)
  return {"curriculum_stage": float(stage), "curriculum_val_accuracy": accuracy,
          "curriculum_next_stage": float(stages.stage)}


def run(settings: Settings, workdir: str, ahead: aot.Ahead | None = None,
        compile_later: Callable[[model_lib.Params], None] | None = None) -> dict[str, Any]:
  """Trains `settings` in `workdir`, resuming from its newest readable checkpoint.

  Saves every `train.checkpoint_every` steps and at the end; on SIGTERM (at any time)
  saves at the next step boundary and returns with summary["preempted"] True; after
  `train.max_nonfinite_in_a_row` non-finite steps in a row saves the last good state and
  raises `NonFiniteError`. Returns the summary that process 0 prints. `settings`: what
  settings.validate returned. With `ahead`, the monitor's passes compile on its
  thread while the run starts, then `compile_later(abstract params)` queues what the
  caller runs after training (`command`: the evaluation's compiles).
  """
  workdir = str(checkpoint.absolute(workdir))
  main_process = jax.process_index() == 0
  t = settings.train
  if main_process:
    report.write_text(epath.Path(workdir) / "config.json",
                      json.dumps(settings.resolved, indent=2) + "\n")
    metrics_lib.write_version(workdir)

  with contextlib.ExitStack() as stack:
    preemption = stack.enter_context(_preemption_notice())

    # Mesh, optimizer and the jitted steps.
    mesh = state_lib.make_mesh(settings.mesh)
    tx, schedule = state_lib.make_optimizer(t)
    abstract, shardings = state_lib.state_shardings(settings.model, tx, mesh)
    batch_sharding = sharding.batch_sharding(mesh)
    step_fn = jit_train_step(settings, mesh, tx, schedule, shardings)
    val_fn = jit_val_step(settings, mesh, shardings)
    monitor = monitor_lib.Monitor(settings, mesh)
    if ahead is not None:
      monitor.compile_ahead(ahead, abstract.params)
      if compile_later is not None:
        compile_later(abstract.params)

    # Resume from the newest readable checkpoint, or start.
    manager = stack.enter_context(checkpoint.manager(workdir, t.keep_checkpoints, create=True))
    restored = checkpoint.restore(manager, abstract,
                                  lambda: make_train_iterator(settings))
    if restored is None:
      if unreadable := list(manager.all_steps()):
        logging.warning("no readable checkpoint (unreadable steps %s): starting from step 0",
                        ", ".join(map(str, unreadable)))
        checkpoint.set_aside(workdir, unreadable, manager)
      state, resumed_from = state_lib.create_state(settings, tx, shardings), None
      train_iter = make_train_iterator(settings)
    else:
      state, train_iter, bad = restored
      resumed_from = int(state.step)
      if bad:
        logging.warning("resuming from step %d instead of the unreadable step(s) %s",
                        resumed_from, ", ".join(map(str, bad)))
        checkpoint.set_aside(workdir, bad, manager)
      logging.info("resumed from the checkpoint at step %d", resumed_from)
    step = saved_step = int(state.step)

    def save() -> None:
      nonlocal saved_step
      if saved_step != step:
        checkpoint.save(manager, state, train_iter)
        saved_step = step

    # The loop. A step's metrics are read after the next step is dispatched, so the
    # host never waits for the device with nothing queued.
    writer = metrics_lib.Writer(workdir, enabled=main_process)
    stack.callback(writer.close)
    start = time.perf_counter()
    log = metrics_lib.StepLog(writer, t.global_batch * settings.data.seq_len, start)
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
          extra["G_dev"] = f"{monitor.last.get('monitor_G_dev', math.nan):+.4f}"
        bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:,.0f}",
                        step_ms=f"{1e3 * record['step_time']:.1f}", **extra)
      if host["nonfinite_in_a_row"] >= t.max_nonfinite_in_a_row:
        save()
        manager.wait_until_finished()
        raise NonFiniteError(
            f"stopped at step {pending_step}: {int(host['nonfinite_in_a_row'])} steps in a row "
            f"had a non-finite loss or gradient norm (train.max_nonfinite_in_a_row="
            f"{t.max_nonfinite_in_a_row}); the last good state is saved at step {step} in "
            f"{manager.directory}. Lower train.learning_rate or check the data")

    # With `ahead` and one process, the monitor's checks run on a thread beside the loop
    # (after its compiles), and their figures are logged, at their steps, once done.
    checks, pending_checks = None, []
    if ahead is not None and jax.process_count() == 1 and monitor.every:
      checks = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="monitor")
      stack.callback(checks.shutdown, wait=True, cancel_futures=True)

    def write_checks(wait: bool) -> None:
      while pending_checks and (wait or pending_checks[0][1].done()):
        check_step, done = pending_checks.pop(0)
        writer.write(check_step, done.result())

    profile = metrics_lib.Profile(workdir, *t.profile_steps)
    stack.callback(lambda: profile.stop(state))
    while step < t.steps and not preempted:
      profile.step(step, state)
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        batch = pipeline.global_batch(next(train_iter), batch_sharding)
        state, metrics = step_fn(state, batch)
      step += 1
      bar.update()
      if pending is not None:
        read(*pending)
      pending = (step, metrics)
      paused = time.perf_counter()
      if t.val_every and step % t.val_every == 0 and step < t.steps:
        val = validation_loss(val_fn, state.params, settings, batch_sharding)
        writer.write(step, val)
        if settings.data.curriculum_accuracy and settings.data.curriculum:
          writer.write(step, stage_validation(val_fn, state.params, settings, batch_sharding,
                                              train_iter))
      if monitor.due(step):
        if checks is None:
          writer.write(step, monitor(step, state.params))
        else:  # on a copy: the next step donates these parameters
          pending_checks.append((step, checks.submit(monitor, step,
                                                     jax.tree.map(jnp.copy, state.params))))
      write_checks(wait=False)
      preempted = preemption(step)
      if preempted or (t.checkpoint_every and step % t.checkpoint_every == 0):
        save()
      log.paused += time.perf_counter() - paused
    if pending is not None:
      read(*pending)
    write_checks(wait=True)

    save()
    if preempted:
      logging.warning("SIGTERM: saved the checkpoint of step %d in %s; run the same command "
                      "to resume", step, manager.directory)
    else:
      val = validation_loss(val_fn, state.params, settings, batch_sharding)
      writer.write(step, val)
    manager.wait_until_finished()

  counters = metrics_lib.sum_over_processes(train_iter.counters())
  summary = _summary(settings, workdir, state, log.records, val, counters,
                     time.perf_counter() - start, resumed_from, preempted, monitor.last,
                     settings.dev_lookahead.describe(settings.mixture.beta))
  if main_process:
    print(report.summary_table(summary["rows"], f"summary: {settings.data.name}, {workdir}"),
          flush=True)
  return summary


def _mean_of(records: list[dict[str, Any]], key: str) -> float | None:
  """Mean of a logged figure over the records that have a finite one (None: none has)."""
  values = [r[key] for r in records if r.get(key) is not None and math.isfinite(r[key])]
  return statistics.fmean(values) if values else None


def _summary(settings: Settings, workdir, state, records, val, counters, seconds, resumed_from,
             preempted, monitored, dev_lookahead: str) -> dict[str, Any]:
  """The figures of a run, and their rows for the printed table.

  Read from the whole run's metrics log where this process has it (a resumed run, even
  one that had nothing left to train, reports its training), else from this session's
  records; the monitor's figures are its last logged ones, of `dev_lookahead` (its name).
  """
  run_log = metrics_lib.read(workdir)
  records = [r for r in run_log if "tokens_per_s" in r] or records
  monitored = monitored or next((r for r in reversed(run_log) if "monitor_G_dev" in r), {})
  last = records[-1] if records else {}
  # the first logged interval includes compilation
  speeds = [r["tokens_per_s"] for r in records[1:]] or [r["tokens_per_s"] for r in records]
  times = [r["step_time"] for r in records[1:]] or [r["step_time"] for r in records]
  kept = checkpoint.kept_steps(workdir)
  summary = {
      "step": int(state.step),
      "steps": settings.train.steps,
      "resumed_from": resumed_from,
      "parameters": model_lib.num_params(state.params),
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
      "stunting": settings.stunting_mode,
      **{key: _mean_of(records, key) for key in ("toward", "toward_marked", "toward_unmarked",
                                                  "balanced_step")},
      "monitor": monitored,
      "dev_lookahead": dev_lookahead,
      "data": counters,
  }
  return dict(summary, rows=report.summary_rows(summary, settings, workdir))


def command(workdir: str, config: ConfigDict) -> None:
  """`lookahead-jax train`: trains (resuming), then with eval.at_end runs the evaluation
  suite; the monitor's and the evaluation's compiles run beside the training loop."""
  settings = settings_lib.prepare_and_validate(config)
  with aot.Ahead() as ahead:
    later = (functools.partial(evaluate.compile_ahead, ahead, settings)
             if settings.eval.at_end else None)
    summary = run(settings, workdir, ahead, later)
    ahead.close(cancel=summary["preempted"])
  if settings.eval.at_end and not summary["preempted"]:
    evaluate.run(settings, workdir)
