"""Train-step speed: against PyTorch on the same model, weights, batch and CPU (issue 4),
and the stunted step against the plain one (issue 6).

    python bench/train.py [--json results/train.json]

A randomly initialised `GPT2LMHeadModel` (4 layers, d_model 256, 4 heads, vocab 256 by
default) is copied into our model. Both sides then take AdamW steps (warm-up-free
learning rate, betas 0.9/0.95, weight decay 0.1 on matrices and embeddings only,
gradient clipping at global norm 1, no dropout) on the same random batch:

  ours:  `train.train_step` jitted over a one-device mesh with the state donated, as
         `lookahead-jax train` runs it;
  torch: forward, cross-entropy, backward, clip_grad_norm_, AdamW.step, in eager mode
         (`torch.optim.AdamW`, default foreach implementation).

Tokens/s = batch x seq_len / median step time, all steps timed in alternation after a
warm-up step. docs/design.md floor: ratio (ours / torch) >= 1. The first step's loss of both
sides is printed as a check that they train the same model. torch uses --threads threads
(default: every core). The step's parts are timed in the same rounds: each side's forward
(loss only; torch under no_grad) and forward + backward, so that backward = their
difference and the rest of the step (clipping, optimizer, state update) = step less
forward + backward, each with its ratio.

The stunted steps (--stunting, default v1_token and v3_balance) build the amplified
targets inside the same jitted step with a B-beam, H-token lookahead (--width, --horizon,
--chunk anchors per chunk) reusing the training pass's keys/values. docs/design.md floor:
stunted / plain step time <= 1.5 (3 + B(H-1)) / 3 (a plain step is about three forward
passes; the lookahead adds B(H-1)).

Needs the `bench` extra: pip install torch==2.13.0 (CPU build) first, then
pip install -e .[bench].
"""

from __future__ import annotations

import argparse
import dataclasses
import os

import jax
import numpy as np
import optax

from lookahead_jax import config as config_lib
from lookahead_jax import model as model_lib
from lookahead_jax import settings as settings_lib
from lookahead_jax import sharding, train
from lookahead_jax import state as state_lib
from lookahead_jax.data import pipeline, tokenizers

import common

FLOOR = 1.0
CONTROL_FLOOR = 1.1  # the stunted step with its horizon-1 control / without (issue 12)
LEARNING_RATE, BETAS, WEIGHT_DECAY, CLIP = 1e-4, (0.9, 0.95), 0.1, 1.0


def parse_args() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--layers", type=int, default=4)
  p.add_argument("--d_model", type=int, default=256)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--vocab", type=int, default=256)
  p.add_argument("--batch", type=int, default=8, help="sequences per step")
  p.add_argument("--seq_len", type=int, default=128, help="tokens per sequence")
  p.add_argument("--repeats", type=int, default=10)
  p.add_argument("--threads", type=int, default=common.cores(), help="torch threads")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--stunting", default="v1_token,v3_balance",
                 help="comma-separated stunting modes timed against the plain step ('' none)")
  p.add_argument("--width", type=int, default=4, help="stunting lookahead beams B")
  p.add_argument("--horizon", type=int, default=4, help="stunting lookahead horizon H")
  p.add_argument("--chunk", type=int, default=32, help="anchors per lookahead chunk (0: all)")
  p.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
  return p.parse_args()


def make_batch(args) -> dict[str, np.ndarray]:
  tokens = np.random.default_rng(args.seed).integers(
      0, args.vocab, (args.batch, args.seq_len + 1), dtype=np.int32)
  shape = (args.batch, args.seq_len)
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
          "weights": np.ones(shape, np.float32), "segment_ids": np.ones(shape, np.int32),
          "positions": np.broadcast_to(np.arange(args.seq_len, dtype=np.int32), shape),
          "needs_lookahead": np.zeros(shape, bool)}


def ours_step(args, model_cfg, params, batch, stunting="none", contrast="control"):
  """A function taking one of our train steps (state carried between calls) -> loss."""
  config = config_lib.base_config()
  config.model.update({k: v for k, v in dataclasses.asdict(model_cfg).items()
                       if k in config.model})  # numeric_tokens is derived, not a key
  config.data.seq_len = args.seq_len
  config.stunting.mode = stunting
  config.stunting.contrast = contrast
  config.lookahead.update(width=args.width, horizon=args.horizon, chunk=args.chunk)
  config.train.update(global_batch=args.batch, learning_rate=LEARNING_RATE, warmup_steps=0,
                      min_lr_ratio=1.0, b1=BETAS[0], b2=BETAS[1], weight_decay=WEIGHT_DECAY,
                      grad_clip=CLIP)
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  settings = settings_lib.derive(config, tokenizers.ByteTokenizer())
  tx, schedule = state_lib.make_optimizer(settings.train)
  _, shardings = state_lib.state_shardings(model_cfg, tx, mesh)
  state = jax.jit(state_lib.init_state, static_argnums=(0, 1, 2), out_shardings=shardings)(
      model_cfg, tx, args.seed, params)
  step = train.jit_train_step(settings, mesh, tx, schedule, shardings)
  device_batch = pipeline.global_batch(batch, sharding.batch_sharding(mesh))

  def run():
    nonlocal state
    state, metrics = step(state, device_batch)
    return metrics["loss"]

  return run


def torch_step(torch, hf, batch):
  """A function taking one PyTorch AdamW step on the HF model -> loss."""
  hf.train()
  for module in hf.modules():
    if isinstance(module, torch.nn.Dropout):
      module.p = 0.0
  params = [p for p in hf.parameters() if p.requires_grad]
  groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
  optimizer = torch.optim.AdamW(groups, lr=LEARNING_RATE, betas=BETAS)
  inputs = torch.from_numpy(batch["inputs"]).long()
  targets = torch.from_numpy(batch["targets"]).long()

  def run():
    logits = hf(inputs, use_cache=False).logits
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, CLIP)
    optimizer.step()
    return loss.detach()

  return run


def ours_parts(model_cfg, params, batch):
  """Our forward (loss) and forward + backward (loss and gradients), each a function -> loss."""
  inputs, targets, positions, segments = (jax.numpy.asarray(batch[k]) for k in (
      "inputs", "targets", "positions", "segment_ids"))

  def loss(p):
    logits, _ = model_lib.forward(p, inputs, positions, config=model_cfg, segment_ids=segments)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

  forward, grad = jax.jit(loss), jax.jit(jax.value_and_grad(loss))
  return (lambda: forward(params)), (lambda: grad(params)[0])


def torch_parts(torch, hf, batch):
  """PyTorch's forward (under no_grad) and forward + backward, each a function -> loss."""
  inputs = torch.from_numpy(batch["inputs"]).long()
  targets = torch.from_numpy(batch["targets"]).long().flatten()
  loss = lambda: torch.nn.functional.cross_entropy(
      hf(inputs, use_cache=False).logits.flatten(0, 1), targets)

  def forward():
    with torch.no_grad():
      return loss()

  def grad():
    hf.zero_grad(set_to_none=True)
    value = loss()
    value.backward()
    return value.detach()

  return forward, grad


def main():
  args = parse_args()
  torch, _ = common.import_torch(args.threads)
  hf, model_cfg, params = common.hf_gpt2(
      vocab_size=args.vocab, max_len=args.seq_len, num_layers=args.layers,
      d_model=args.d_model, num_heads=args.heads, seed=args.seed)
  batch = make_batch(args)
  ours, theirs = ours_step(args, model_cfg, params, batch), torch_step(torch, hf, batch)
  first_ours, first_torch = float(ours()), float(theirs())  # same weights: same loss
  modes = [m for m in args.stunting.split(",") if m]
  stunted = {m: ours_step(args, model_cfg, params, batch, m) for m in modes}  # with the control
  stunted.update({f"{m}_naive": ours_step(args, model_cfg, params, batch, m, "naive")
                  for m in modes})
  parts = dict(zip(("ours_forward", "ours_grad"), ours_parts(model_cfg, params, batch)))
  parts.update(zip(("torch_forward", "torch_grad"), torch_parts(torch, hf, batch)))
  times = common.compare_times({"ours": ours, "torch": theirs, **parts, **stunted},
                               args.repeats)
  stunt_floor = 1.5 * (3 + args.width * (args.horizon - 1)) / 3
  tokens = args.batch * args.seq_len
  figures = {"torch_threads": args.threads, "layers": args.layers, "d_model": args.d_model,
             "heads": args.heads, "vocab": args.vocab, "batch": args.batch,
             "seq_len": args.seq_len, "repeats": args.repeats, "train_tokens": tokens,
             "train_ours_s": times["ours"], "train_torch_s": times["torch"],
             "train_ours_tok_s": tokens / times["ours"],
             "train_torch_tok_s": tokens / times["torch"],
             "train_ratio": times["torch"] / times["ours"],
             "first_loss_ours": first_ours, "first_loss_torch": first_torch,
             "stunting_width": args.width, "stunting_horizon": args.horizon,
             "stunting_chunk": args.chunk, "stunted_over_plain_floor": stunt_floor}
  # Where the step's time goes: forward, backward (forward + backward less the forward),
  # and the rest (clipping, the optimizer, the state update: step less forward + backward).
  for side in ("ours", "torch"):
    part = {"forward": times[f"{side}_forward"],
            "backward": times[f"{side}_grad"] - times[f"{side}_forward"],
            "optimizer": times[side] - times[f"{side}_grad"]}
    figures.update({f"{name}_{side}_s": t for name, t in part.items()})
  for name in ("forward", "backward", "optimizer"):
    figures[f"{name}_ratio"] = figures[f"{name}_torch_s"] / figures[f"{name}_ours_s"]
  for mode in modes:
    figures[f"train_{mode}_s"] = times[mode]
    figures[f"{mode}_over_plain"] = times[mode] / times["ours"]
    figures[f"train_{mode}_naive_s"] = times[f"{mode}_naive"]
    figures[f"{mode}_control_over_naive"] = times[mode] / times[f"{mode}_naive"]

  print(f"{common.machine()}; load average {os.getloadavg()[0]:.2f}")
  print(f"model: {args.layers} layers, d_model {args.d_model}, {args.heads} heads, vocab "
        f"{args.vocab}; AdamW + clipping; torch threads {args.threads}; median of "
        f"{args.repeats}\n")
  common.print_table(
      ["benchmark", "ours tok/s", "torch tok/s", "ratio", "floor", "ok"],
      [[f"train step ({args.batch}x{args.seq_len})", figures["train_ours_tok_s"],
        figures["train_torch_tok_s"], figures["train_ratio"], FLOOR,
        figures["train_ratio"] >= FLOOR]])
  print("\nthe step's parts (backward: forward + backward less the forward; optimizer: the "
        "step less forward + backward):")
  common.print_table(
      ["part", "ours ms", "torch ms", "torch / ours"],
      [[name, 1e3 * figures[f"{name}_ours_s"], 1e3 * figures[f"{name}_torch_s"],
        figures[f"{name}_ratio"]] for name in ("forward", "backward", "optimizer")])
  if modes:
    print(f"\nstunted step / plain step, B={args.width} H={args.horizon} chunk={args.chunk} "
          f"(ideal (3 + B(H-1)) / 3 = {stunt_floor / 1.5:.2f}):")
    common.print_table(
        ["mode (contrast=control)", "step ms", "plain ms", "ratio", "floor", "ok"],
        [[m, 1e3 * times[m], 1e3 * times["ours"], figures[f"{m}_over_plain"], stunt_floor,
          figures[f"{m}_over_plain"] <= stunt_floor] for m in modes])
    print("\nthe horizon-1 control's cost: stunted step with it / without it (contrast=naive):")
    common.print_table(
        ["mode", "control ms", "naive ms", "ratio", "floor", "ok"],
        [[m, 1e3 * times[m], 1e3 * times[f"{m}_naive"], figures[f"{m}_control_over_naive"],
          CONTROL_FLOOR, figures[f"{m}_control_over_naive"] <= CONTROL_FLOOR] for m in modes])
  print(f"\nfirst-step loss: ours {first_ours:.6f}, torch {first_torch:.6f}")
  if args.json:
    common.write_json(args.json, figures)


if __name__ == "__main__":
  main()
