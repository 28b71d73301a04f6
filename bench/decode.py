"""Decoding and forward speed against PyTorch / Hugging Face on the same weights (issue 2).

    python bench/decode.py [--json results/decode.json]

A randomly initialised `GPT2LMHeadModel` (4 layers, d_model 256, 4 heads, vocab 256 by
default) is copied into our model with `gpt2.params_from_hf_state_dict`, then

  (a) beam search: our jitted `decoding.beam_search` vs `GPT2LMHeadModel.generate(
      num_beams=B, do_sample=False)`, same prompts, no EOS so both run every step. Both
      sides count generated tokens the same way: prompts x new tokens (one returned
      sequence per prompt; the B beams are the method's cost, not its output).
      docs/design.md floor: ratio >= 2.
  (b) forward: our jitted `model.forward` (logits only) vs the PyTorch model under
      `torch.inference_mode()` with `use_cache=False`, tokens/s = batch x T.
      docs/design.md floor: ratio >= 1.

Both sides are warmed up (compilation, first call), then timed in alternation (one call
of each per round, so load changes hit both alike); each figure is the median of
--repeats rounds. torch uses --threads threads (default: every core). Needs the
`bench` extra: pip install torch==2.13.0 (CPU build) first, then pip install -e .[bench].
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from lookahead_jax import decoding
from lookahead_jax import model as model_lib

import common

BEAM_FLOOR, FORWARD_FLOOR = 2.0, 1.0


def parse_args() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--layers", type=int, default=4)
  p.add_argument("--d_model", type=int, default=256)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--vocab", type=int, default=256)
  p.add_argument("--prompts", type=int, default=8, help="beam search: prompts per call")
  p.add_argument("--prompt_len", type=int, default=32)
  p.add_argument("--new_tokens", type=int, default=32)
  p.add_argument("--beams", type=int, default=4)
  p.add_argument("--batch", type=int, default=8, help="forward: sequences per call")
  p.add_argument("--seq_len", type=int, default=128, help="forward: tokens per sequence")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--threads", type=int, default=common.cores(), help="torch threads")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
  return p.parse_args()


def bench_beam_search(args, torch, hf, config, params) -> dict[str, float]:
  """Tokens/s of our beam search and of HF generate(num_beams), same prompts and weights."""
  prompts = np.random.default_rng(args.seed).integers(
      0, args.vocab, (args.prompts, args.prompt_len), dtype=np.int32)
  ours = lambda: decoding.beam_search(params, jnp.asarray(prompts), config=config,
                                      beam_size=args.beams, max_new_tokens=args.new_tokens)
  hf_prompts = torch.from_numpy(prompts).long()
  mask = torch.ones_like(hf_prompts)

  def theirs():
    with torch.inference_mode():
      return hf.generate(hf_prompts, attention_mask=mask, num_beams=args.beams, do_sample=False,
                         max_new_tokens=args.new_tokens, early_stopping=False, pad_token_id=0)

  times = common.compare_times({"ours": ours, "hf": theirs}, args.repeats)
  ours_s, theirs_s = times["ours"], times["hf"]
  same = np.mean(np.all(np.asarray(ours().sequences[:, 0])
                        == theirs()[:, args.prompt_len:].numpy(), axis=-1))
  tokens = args.prompts * args.new_tokens
  return {"beam_tokens": tokens, "beam_ours_s": ours_s, "beam_hf_s": theirs_s,
          "beam_ours_tok_s": tokens / ours_s, "beam_hf_tok_s": tokens / theirs_s,
          "beam_ratio": theirs_s / ours_s, "beam_same_best_sequence": float(same)}


def bench_forward(args, torch, hf, config, params) -> dict[str, float]:
  """Tokens/s of our jitted forward and of the PyTorch forward, batch x seq_len tokens."""
  tokens = np.random.default_rng(args.seed + 1).integers(
      0, args.vocab, (args.batch, args.seq_len), dtype=np.int32)
  positions = jnp.broadcast_to(jnp.arange(args.seq_len, dtype=jnp.int32), tokens.shape)
  forward = jax.jit(lambda p, t, pos: model_lib.forward(p, t, pos, config=config)[0])
  ours_tokens = jnp.asarray(tokens)
  ours = lambda: forward(params, ours_tokens, positions)
  hf_tokens = torch.from_numpy(tokens).long()

  def theirs():
    with torch.inference_mode():
      return hf(hf_tokens, use_cache=False).logits

  times = common.compare_times({"ours": ours, "torch": theirs}, args.repeats)
  ours_s, theirs_s = times["ours"], times["torch"]
  diff = float(np.max(np.abs(np.asarray(ours()) - theirs().numpy())))
  n = args.batch * args.seq_len
  return {"forward_tokens": n, "forward_ours_s": ours_s, "forward_torch_s": theirs_s,
          "forward_ours_tok_s": n / ours_s, "forward_torch_tok_s": n / theirs_s,
          "forward_ratio": theirs_s / ours_s, "forward_max_logit_diff": diff}


def main():
  args = parse_args()
  load = common.warn_if_busy()
  torch, _ = common.import_torch(args.threads)
  hf, config, params = common.hf_gpt2(
      vocab_size=args.vocab, max_len=max(args.prompt_len + args.new_tokens, args.seq_len),
      num_layers=args.layers, d_model=args.d_model, num_heads=args.heads, seed=args.seed)
  figures = {"torch_threads": args.threads, "layers": args.layers, "d_model": args.d_model,
             "heads": args.heads, "vocab": args.vocab, "beams": args.beams,
             "prompts": args.prompts, "prompt_len": args.prompt_len,
             "new_tokens": args.new_tokens, "batch": args.batch, "seq_len": args.seq_len,
             "repeats": args.repeats, "load_avg_before": load}
  figures.update(bench_beam_search(args, torch, hf, config, params))
  figures.update(bench_forward(args, torch, hf, config, params))

  print(f"{common.machine()}; load average before the run {load:.2f}")
  print(f"model: {args.layers} layers, d_model {args.d_model}, {args.heads} heads, vocab "
        f"{args.vocab}; torch threads {args.threads}; median of {args.repeats}\n")
  common.print_table(
      ["benchmark", "ours tok/s", "baseline tok/s", "ratio", "floor", "ok"],
      [[f"beam search B={args.beams} ({args.prompts}x{args.prompt_len}+{args.new_tokens})",
        figures["beam_ours_tok_s"], figures["beam_hf_tok_s"], figures["beam_ratio"], BEAM_FLOOR,
        figures["beam_ratio"] >= BEAM_FLOOR],
       [f"forward ({args.batch}x{args.seq_len})", figures["forward_ours_tok_s"],
        figures["forward_torch_tok_s"], figures["forward_ratio"], FORWARD_FLOOR,
        figures["forward_ratio"] >= FORWARD_FLOOR]])
  print(f"\nbest beam equal to HF's on {figures['beam_same_best_sequence']:.0%} of prompts; "
        f"forward max |logit diff| {figures['forward_max_logit_diff']:.2g}")
  if args.json:
    common.write_json(args.json, figures)


if __name__ == "__main__":
  main()
