"""Benchmark: the all-position beam lookahead against the forward pass and against
Hugging Face beam search run once per prefix (docs/design.md section 6).

  pip install torch==2.13.0 && pip install -e .[bench]
  python bench/lookahead.py [--json bench/results/lookahead.json]

Measured in one run, on the same random weights:
- forward tokens/s of the teacher-forced pass over [batch, T] tokens;
- amplified positions/s: that pass plus a B-beam, H-token lookahead from every anchor
  and the sparse amplified distribution q of every position;
- their ratio, against the ideal 1 + B(H-1) forward passes per position (the floor is
  1.5x the ideal);
- the same for MCTS lookahead (mcts.py: K = B children a node, K(H-1) simulations, the
  model calls of the beam), over its ideal and over the beam's time at equal calls;
- Hugging Face `generate(num_beams=B, max_new_tokens=H)` called once per prefix (the
  naive way to get the same beams): positions/s, and our speed-up over it (floor 20x);
- peak temporary memory of the compiled lookahead for several anchor chunk sizes (it
  grows linearly with the chunk, not with T*B*H*T at once).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lookahead_jax import lookahead as lookahead_lib  # noqa: E402
from lookahead_jax import model as model_lib  # noqa: E402

import common  # noqa: E402  (the benchmarks' shared helpers, beside this file)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq_len", type=int, default=128, help="T")
  p.add_argument("--width", type=int, default=4, help="beams B")
  p.add_argument("--horizon", type=int, default=4, help="H")
  p.add_argument("--layers", type=int, default=4)
  p.add_argument("--d_model", type=int, default=256)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--vocab", type=int, default=256)
  p.add_argument("--chunk", type=int, default=32, help="anchors per vmapped chunk (0: all)")
  p.add_argument("--memory_chunks", default="8,16,32,64,128",
                 help="chunk sizes whose compiled peak memory is reported")
  p.add_argument("--hf_prefixes", type=int, default=24,
                 help="prefixes timed with Hugging Face generate (spread over the sequence)")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--threads", type=int, default=common.cores(), help="torch threads")
  p.add_argument("--json", help="write the figures to this file as one flat JSON object")
  return p.parse_args(argv)


def lookahead_fn(config, lookahead):
  """Jitted (params, tokens, positions) -> sparse log q [b, T, B] of every position."""

  def amplify(params, tokens, positions):
    _, found, _ = lookahead_lib.teacher_forced_paths(params, tokens, positions, config=config,
                                                     lookahead=lookahead)
    return lookahead_lib.amplify(found).log_q

  return jax.jit(amplify)


def peak_memory_mb(config, params, tokens, positions, width, horizon, chunk) -> float:
  """Temporary memory of the compiled lookahead with `chunk` anchors per chunk, in MB."""
  fn = lookahead_fn(config, lookahead_lib.Lookahead(width=width, horizon=horizon, chunk=chunk))
  stats = fn.lower(params, tokens, positions).compile().memory_analysis()
  return stats.temp_size_in_bytes / 2**20


def hf_positions_per_s(hf, tokens, width, horizon, prefixes, torch) -> float:
  """Positions/s of one `generate(num_beams=B, max_new_tokens=H)` call per prefix."""
  seq = torch.as_tensor(np.asarray(tokens[0]), dtype=torch.long)
  ends = np.linspace(1, len(seq), prefixes).astype(int)  # prefix lengths across the row
  generate = functools.partial(hf.generate, num_beams=width, max_new_tokens=horizon,
                               do_sample=False, early_stopping=False)
  with torch.inference_mode():
    generate(seq[None, :ends[-1]], attention_mask=torch.ones(1, ends[-1], dtype=torch.long))
    start = time.perf_counter()
    for n in ends:
      generate(seq[None, :n], attention_mask=torch.ones(1, n, dtype=torch.long))
    return len(ends) / (time.perf_counter() - start)


def main(argv=None) -> dict:
  args = parse_args(argv)
  torch, _ = common.import_torch(args.threads)
  load = common.warn_if_busy()
  hf, config, params = common.hf_gpt2(vocab_size=args.vocab, max_len=args.seq_len + args.horizon,
                                      num_layers=args.layers, d_model=args.d_model,
                                      num_heads=args.heads)
  b, t, width, horizon = args.batch, args.seq_len, args.width, args.horizon
  tokens = jax.random.randint(jax.random.key(0), (b, t), 0, args.vocab)
  positions = jnp.broadcast_to(jnp.arange(t), (b, t))
  forward = jax.jit(lambda p, x, pos: model_lib.forward(p, x, pos, config=config)[0])
  amplify = lookahead_fn(config, lookahead_lib.Lookahead(width=width, horizon=horizon,
                                                         chunk=args.chunk))
  search = lookahead_fn(config, lookahead_lib.Lookahead(kind="mcts", width=width,
                                                        horizon=horizon, chunk=args.chunk))
  times = common.compare_times({
      "forward": lambda: forward(params, tokens, positions),
      "lookahead": lambda: amplify(params, tokens, positions),
      "mcts": lambda: search(params, tokens, positions),
  }, repeats=args.repeats)
  forward_rate, lookahead_rate = b * t / times["forward"], b * t / times["lookahead"]
  ratio = forward_rate / lookahead_rate
  mcts_ratio = times["mcts"] / times["forward"]
  ideal = 1 + width * (horizon - 1)
  hf_rate = hf_positions_per_s(hf, tokens, width, horizon, args.hf_prefixes, torch)
  memory = {c: peak_memory_mb(config, params, tokens, positions, width, horizon, c)
            for c in (int(x) for x in args.memory_chunks.split(","))}

  print(f"All-position beam lookahead, B={width} H={horizon} T={t} batch={b}, "
        f"{args.layers} layers d={args.d_model} vocab {args.vocab}; {common.machine()}")
  common.print_table(
      ["figure", "value", "baseline", "ratio", "floor"],
      [["forward tokens/s", forward_rate, "", "", ""],
       ["lookahead positions/s", lookahead_rate, "", "", ""],
       ["forward / lookahead (x)", ratio, f"ideal {ideal}", ratio / ideal, f"<= {1.5 * ideal:g}"],
       ["MCTS lookahead time / forward (x)", mcts_ratio, f"ideal {ideal}", mcts_ratio / ideal,
        ""],
       ["MCTS / beam lookahead time, equal calls (x)", times["mcts"] / times["lookahead"], "",
        "", ""],
       ["HF generate per prefix, positions/s", hf_rate, "", "", ""],
       ["lookahead / HF per prefix (x)", lookahead_rate / hf_rate, "", "", ">= 20"]])
  print("\nPeak temporary memory of the compiled lookahead by anchor chunk size:")
  common.print_table(["chunk (anchors)", "MB", "MB per anchor"],
                     [[c, m, m / c] for c, m in memory.items()])
  figures = dict(
      batch=b, seq_len=t, width=width, horizon=horizon, layers=args.layers,
      d_model=args.d_model, vocab=args.vocab, chunk=args.chunk, load_before=round(load, 2),
      forward_tokens_per_s=forward_rate, lookahead_positions_per_s=lookahead_rate,
      forward_over_lookahead=ratio, ideal_forward_passes=ideal, over_ideal=ratio / ideal,
      floor_forward_over_lookahead=1.5 * ideal, mcts_over_forward=mcts_ratio,
      mcts_over_ideal=mcts_ratio / ideal, mcts_over_beam=times["mcts"] / times["lookahead"],
      hf_per_prefix_positions_per_s=hf_rate,
      speedup_over_hf_per_prefix=lookahead_rate / hf_rate,
      **{f"peak_mb_chunk_{c}": m for c, m in memory.items()})
  if args.json:
    common.write_json(args.json, figures)
  return figures


if __name__ == "__main__":
  main()
