"""Input pipeline: preparing the testbeds, and tokens/s of batches from ArrayRecord (issue 3).

    python bench/input_pipeline.py [--json results/input_pipeline.json]

  (a) prepare: the rhyme, article and tsp testbeds at their default sizes, each into a
      fresh data dir, timed. Floor: all three in under 60 s on a 2-core CPU.
  (b) pipeline: batches of the training pipeline (`pipeline.make_iterator`: shuffled,
      packed, byte tokens or tsp's vocabulary, background prefetch) read from the
      prepared ArrayRecord files, for each testbed and for tiny Shakespeare through
      `text_files` (the text shipped with the package). tokens/s counts the
      targets with weight 1 (real tokens, not padding), over --batches batches after
      --warmup; the figure of record is the slowest dataset. Floor: 50,000 tokens/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import tensorflow_datasets as tfds

from lookahead_jax import config as config_lib
from lookahead_jax.data import builders, pipeline

import common

PREPARE_FLOOR_S, TOKENS_FLOOR = 60.0, 50_000.0
TESTBEDS = ("rhyme", "article", "tsp")
SHAKESPEARE = Path(config_lib.TINY_SHAKESPEARE)


def parse_args() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--seq_len", type=int, default=256)
  p.add_argument("--batch", type=int, default=32, help="global batch size (rows)")
  p.add_argument("--batches", type=int, default=300, help="timed batches per dataset")
  p.add_argument("--warmup", type=int, default=10, help="untimed batches first")
  p.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
  return p.parse_args()


def bench_prepare(data_dir: Path) -> dict[str, float]:
  figures = {}
  for name in TESTBEDS:
    start = time.perf_counter()
    builders.prepare(name, data_dir)
    figures[f"prepare_{name}_s"] = time.perf_counter() - start
  figures["prepare_total_s"] = sum(figures.values())
  figures["prepare_ratio_to_floor"] = PREPARE_FLOOR_S / figures["prepare_total_s"]
  return figures


def bench_pipeline(args, name: str, data_dir: Path, options: dict) -> dict[str, float]:
  it = pipeline.make_iterator(name, "train", seq_len=args.seq_len, global_batch_size=args.batch,
                              data_dir=data_dir, options=options, process_index=0,
                              process_count=1)
  for _ in range(args.warmup):
    next(it)
  tokens = 0.0
  start = time.perf_counter()
  for _ in range(args.batches):
    tokens += float(next(it)["weights"].sum())
  seconds = time.perf_counter() - start
  counters = it.counters()
  it.close()
  padding = counters["padding"] / (counters["padding"] + counters["tokens_out"])
  return {f"tokens_per_s_{name}": tokens / seconds, f"padding_fraction_{name}": padding}


def main():
  args = parse_args()
  tfds.display_progress_bar(False)
  figures = {"seq_len": args.seq_len, "batch": args.batch, "batches": args.batches}
  with tempfile.TemporaryDirectory() as tmp:
    data_dir = Path(tmp)
    figures.update(bench_prepare(data_dir))
    datasets = {name: {} for name in TESTBEDS}
    datasets["text_files"] = {"paths": [str(SHAKESPEARE)]}
    builders.prepare("text_files", data_dir, **datasets["text_files"])
    for name, options in datasets.items():
      figures.update(bench_pipeline(args, name, data_dir, options))
  slowest = min(figures[f"tokens_per_s_{name}"] for name in datasets)
  figures["tokens_per_s"] = slowest
  figures["tokens_ratio_to_floor"] = slowest / TOKENS_FLOOR

  print(common.machine())
  print(f"\nprepare at default size (floor: {PREPARE_FLOOR_S:.0f} s for all three)")
  common.print_table(
      ["testbed", "seconds"],
      [[name, figures[f"prepare_{name}_s"]] for name in TESTBEDS]
      + [["total", figures["prepare_total_s"]]])
  print(f"ratio floor / total: {figures['prepare_ratio_to_floor']:.3g} (>= 1 passes)")
  print(f"\npipeline, T={args.seq_len}, global batch {args.batch} "
        f"(floor: {TOKENS_FLOOR:,.0f} tokens/s)")
  common.print_table(
      ["dataset", "tokens/s", "ratio to floor", "padding"],
      [[name, figures[f"tokens_per_s_{name}"], figures[f"tokens_per_s_{name}"] / TOKENS_FLOOR,
        figures[f"padding_fraction_{name}"]] for name in datasets])
  print(f"slowest: {slowest:,.0f} tokens/s, ratio {figures['tokens_ratio_to_floor']:.3g} "
        "(>= 1 passes)")
  if args.json:
    common.write_json(args.json, figures)


if __name__ == "__main__":
  main()
