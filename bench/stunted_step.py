"""The stunted train step on a testbed's own shapes and batches, against its plain step
(issue 33).

    python bench/stunted_step.py [--config configs/experiments/path_star.py] \
        [--modes v1_token,v3_balance,distill] [--json results/stunted_step.json]

Each mode's step is built from the experiment config exactly as `lookahead-jax train`
builds it (`config.get_config(mode)`, `train.jit_train_step`, the state donated) and runs
on the same real training batches of the testbed, taken from its input pipeline. On
path_star the loss weighs the answer tokens only, so the lookahead runs at those anchors
(`lookahead.paths_from_pass(needed=...)`, in chunks of `lookahead.chunk`). All steps are
timed in alternation after a warm-up step, on the same batches in the same order; figures
are medians. docs/design.md floor (issue 33): stunted step / plain step (mode `none`)
<= 1.5.

It also prints the lookahead's share in forward-token units, counted on the same batches:
a plain step is about three forward passes of its b x T tokens; the lookahead adds
B(H-1) one-token forwards per anchor it runs. "needed" counts the anchors the loss weighs,
"run" those `paths_from_pass` computes (each row's needed anchors in chunks of
`lookahead.chunk`, as many rounds as the row with the most needs). The ideal ratio
1 + anchors x B(H-1) / (3 b T) is what the step would take if the lookahead's one-token
forwards cost what the training pass's tokens do.
"""

from __future__ import annotations

import argparse
import itertools
import os

import numpy as np

from lookahead_jax import config as config_lib
from lookahead_jax import settings as settings_lib
from lookahead_jax import sharding, train
from lookahead_jax import state as state_lib
from lookahead_jax.data import pipeline

import common

FLOOR = 1.5


def parse_args() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", default="configs/experiments/path_star.py",
                 help="an experiment config file whose get_config(mode) takes a stunting mode")
  p.add_argument("--modes", default="v1_token,v3_balance,distill",
                 help="comma-separated stunting modes timed against mode 'none'")
  p.add_argument("--batches", type=int, default=8, help="distinct training batches, cycled")
  p.add_argument("--repeats", type=int, default=24)
  p.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
  return p.parse_args()


def make_step(path: str, mode: str, batches: int):
  """A function taking one train step of `mode` (state carried) -> loss, and the config."""
  config = config_lib.load_file(path).get_config(mode)
  settings = settings_lib.prepare_and_validate(config)
  mesh = state_lib.make_mesh(settings.mesh)
  tx, schedule = state_lib.make_optimizer(settings.train)
  _, shardings = state_lib.state_shardings(settings.model, tx, mesh)
  state = state_lib.create_state(settings, tx, shardings)
  step = train.jit_train_step(settings, mesh, tx, schedule, shardings)
  host = list(itertools.islice(train.make_train_iterator(settings), batches))
  feed = itertools.cycle([pipeline.global_batch(b, sharding.batch_sharding(mesh)) for b in host])

  def run():
    nonlocal state
    state, metrics = step(state, next(feed))
    return metrics["loss"]

  return run, config, host


def anchors(config, host) -> tuple[float, float]:
  """(needed, run): the mean anchors a batch's lookahead needs and computes."""
  needed = np.stack([b["weights"] > 0 for b in host])  # [n, b, T]
  chunk = min(config.lookahead.chunk or config.data.seq_len, config.data.seq_len)
  rounds = -(-needed.sum(-1).max(-1) // chunk)  # per batch
  return float(needed.sum((1, 2)).mean()), float((rounds * chunk * needed.shape[1]).mean())


def main():
  args = parse_args()
  modes = [m for m in args.modes.split(",") if m]
  steps = {}
  for mode in ["none", *modes]:
    steps[mode], config, host = make_step(args.config, mode, args.batches)
  common.warn_if_busy()
  times = common.compare_times(steps, args.repeats)
  la = config.lookahead
  needed, computed = anchors(config, host)
  plain = 3 * config.train.global_batch * config.data.seq_len  # forward-token units
  per_anchor = la.width * (la.horizon - 1)
  figures = {"config": args.config, "repeats": args.repeats, "batches": args.batches,
             "global_batch": config.train.global_batch, "seq_len": config.data.seq_len,
             "layers": config.model.num_layers, "d_model": config.model.d_model,
             "lookahead_kind": la.kind, "lookahead_width": la.width,
             "lookahead_horizon": la.horizon, "lookahead_chunk": la.chunk,
             "plain_s": times["none"], "floor": FLOOR, "anchors_needed": needed,
             "anchors_run": computed, "ideal_needed": 1 + needed * per_anchor / plain,
             "ideal_run": 1 + computed * per_anchor / plain}
  for mode in modes:
    figures[f"{mode}_s"] = times[mode]
    figures[f"{mode}_over_plain"] = times[mode] / times["none"]

  print(f"{common.machine()}; load average {os.getloadavg()[0]:.2f}")
  print(f"{args.config}: {config.model.num_layers} layers, d_model {config.model.d_model}, "
        f"batch {config.train.global_batch} x {config.data.seq_len}; lookahead {la.kind} "
        f"B={la.width} H={la.horizon} chunk={la.chunk}; median of {args.repeats} steps\n")
  common.print_table(
      ["mode", "step ms", "plain ms", "ratio", "floor", "ok"],
      [[m, 1e3 * times[m], 1e3 * times["none"], figures[f"{m}_over_plain"], FLOOR,
        figures[f"{m}_over_plain"] <= FLOOR] for m in modes])
  print(f"\nlookahead anchors a batch: {needed:.1f} needed, {computed:.1f} run; each "
        f"B(H-1) = {per_anchor} one-token forwards against the plain step's 3 x "
        f"{plain // 3} tokens: ideal ratio {figures['ideal_run']:.2f} as run, "
        f"{figures['ideal_needed']:.2f} with no padded anchor")
  if args.json:
    common.write_json(args.json, figures)


if __name__ == "__main__":
  main()
