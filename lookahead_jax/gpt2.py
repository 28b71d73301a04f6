"""Hugging Face GPT-2 checkpoints <-> (`model.Config`, params), and the GPT-2 tokenizer.

    config, params = gpt2.load("path/to/gpt2")        # config.json + model.safetensors
    tokenizer = gpt2.load_tokenizer("path/to/gpt2")   # tokenizer.json (GPT-2 BPE)
    gpt2.save_pretrained("out/", config, params)      # GPT2LMHeadModel.from_pretrained("out/")

Any GPT-2 size (gpt2 .. gpt2-xl) and both checkpoint key styles load: `transformer.h.0...`
(GPT2LMHeadModel) and `h.0...` (GPT2Model, the original hub files). GPT-2's Conv1D stores
its weights [in, out], like our kernels, so every tensor is copied without a transpose; the
output layer is tied to the token embedding. `model.safetensors` is read with
`safetensors.numpy` (no torch); `pytorch_model.bin` needs torch.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import nnx

from lookahead_jax import model as model_lib
from lookahead_jax.data import tokenizers as tokenizers_lib

_ARCHITECTURES = ("GPT2LMHeadModel", "GPT2Model")
_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # tanh-approximated GELU, as in model.py
# Our parameter path component -> the Hugging Face name component.
_HF_NAMES = {"blocks": "h", "embedding": "weight", "scale": "weight", "kernel": "weight",
             "c_attn": "attn.c_attn", "c_proj": "attn.c_proj", "c_fc": "mlp.c_fc",
             "mlp_proj": "mlp.c_proj"}
_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")  # causal-mask buffers, not weights


def config_from_hf(hf: dict, **overrides) -> model_lib.Config:
  """A `model.Config` from the dict of a GPT-2 `config.json`.

  Raises ValueError (one line) for a model this GPT-2 layout cannot run. `overrides` set
  other `Config` fields, e.g. dtype="bfloat16" or dropout=0.1 (default 0: inference).
  """
  model_type, archs = hf.get("model_type"), hf.get("architectures") or []
  checks = [
      (model_type == "gpt2", f"model_type={model_type!r} (expected 'gpt2')"),
      (all(a in _ARCHITECTURES for a in archs),
       f"architectures={archs} (expected one of {list(_ARCHITECTURES)})"),
      (hf.get("activation_function", "gelu_new") in _ACTIVATIONS,
       f"activation_function={hf.get('activation_function')!r} (expected one of "
       f"{list(_ACTIVATIONS)})"),
      (hf.get("scale_attn_weights", True), "scale_attn_weights=false"),
      (not hf.get("scale_attn_by_inverse_layer_idx", False),
       "scale_attn_by_inverse_layer_idx=true"),
      (not hf.get("reorder_and_upcast_attn", False), "reorder_and_upcast_attn=true"),
      (not hf.get("add_cross_attention", False), "add_cross_attention=true"),
      (hf.get("tie_word_embeddings", True), "tie_word_embeddings=false (untied output layer)"),
  ]
  d = hf.get("n_embd", 768)
  inner = hf.get("n_inner") or 4 * d
  checks.append((inner % d == 0, f"n_inner={inner} is not a multiple of n_embd={d}"))
  for ok, what in checks:
    if not ok:
      raise ValueError(f"unsupported GPT-2 checkpoint: {what}; this model is the plain GPT-2 "
                       "layout (model.py)")
  fields = dict(vocab_size=hf.get("vocab_size", 50257), max_len=hf.get("n_positions", 1024),
                num_layers=hf.get("n_layer", 12), d_model=d, num_heads=hf.get("n_head", 12),
                mlp_ratio=inner // d, dropout=0.0,
                layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5))
  return model_lib.Config(**{**fields, **overrides})


def config_to_hf(config: model_lib.Config, eos_id: int | None = None) -> dict:
  """The `config.json` dict of a `GPT2LMHeadModel` with this model's shape."""
  return {
      "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
      "vocab_size": config.vocab_size, "n_positions": config.max_len,
      "n_layer": config.num_layers, "n_embd": config.d_model, "n_head": config.num_heads,
      "n_inner": config.mlp_ratio * config.d_model, "activation_function": "gelu_new",
      "layer_norm_epsilon": config.layer_norm_eps, "resid_pdrop": config.dropout,
      "embd_pdrop": config.dropout, "attn_pdrop": config.dropout, "scale_attn_weights": True,
      "tie_word_embeddings": True, "bos_token_id": eos_id, "eos_token_id": eos_id,
      "dtype": "float32",
  }


def _hf_name(path: tuple) -> str:
  """('blocks', 0, 'c_fc', 'kernel') -> 'h.0.mlp.c_fc.weight'."""
  return ".".join(_HF_NAMES.get(str(p), str(p)) for p in path)


def params_from_hf_state_dict(state_dict: dict[str, np.ndarray],
                              config: model_lib.Config) -> model_lib.Params:
  """Our params from a GPT-2 state dict of numpy arrays (either key style).

  Shapes: wte.weight [V, d], wpe.weight [max_len, d], h.{i}.attn.c_attn.weight [d, 3d],
  h.{i}.attn.c_proj.weight [d, d], h.{i}.mlp.c_fc.weight [d, r*d], h.{i}.mlp.c_proj.weight
  [r*d, d], biases and LayerNorm weight/bias [out]. The attention-mask buffers are ignored;
  an `lm_head.weight` must equal wte.weight (tied). Values are cast to config.param_dtype.
  Raises ValueError (one line) naming a missing, unexpected or misshapen tensor.
  """
  tensors = {name.removeprefix("transformer."): value for name, value in state_dict.items()
             if not _BUFFER.fullmatch(name.removeprefix("transformer."))}
  head, wte = tensors.pop("lm_head.weight", None), tensors.get("wte.weight")
  if head is not None and wte is not None and not np.array_equal(head, wte):
    raise ValueError("unsupported GPT-2 checkpoint: lm_head.weight differs from wte.weight "
                     "(an untied output layer)")
  leaves = []
  for path, var in nnx.to_flat_state(model_lib.abstract_params(config)):
    name = _hf_name(path)
    if name not in tensors:
      raise ValueError(f"the checkpoint has no tensor {name} (config: {config.num_layers} "
                       f"layers, d_model {config.d_model})")
    value = tensors.pop(name)
    if tuple(value.shape) != tuple(var.shape):
      raise ValueError(f"tensor {name} has shape {tuple(value.shape)} in the checkpoint but "
                       f"{tuple(var.shape)} in the model of the config")
    leaves.append((path, var.replace(value=jnp.asarray(value, var.dtype))))
  if tensors:
    raise ValueError(f"the checkpoint has {len(tensors)} tensors this GPT-2 layout does not "
                     f"use, e.g. {sorted(tensors)[:3]}")
  return nnx.from_flat_state(leaves)


def hf_state_dict(params: model_lib.Params) -> dict[str, np.ndarray]:
  """Our params as a float32 `GPT2LMHeadModel` state dict (`transformer.*`, lm_head tied)."""
  return {"transformer." + _hf_name(path): np.asarray(var.get_value(), np.float32)
          for path, var in nnx.to_flat_state(params)}


def _weight_files(path: Path) -> list[Path]:
  """model.safetensors or pytorch_model.bin, or the shards their *.index.json names."""
  for name in ("model.safetensors", "pytorch_model.bin"):
    if (path / name).is_file():
      return [path / name]
    index = path / f"{name}.index.json"
    if index.is_file():
      return [path / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
  raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin (nor a sharded "
                          "*.index.json); expected a Hugging Face GPT-2 directory")


def _read_torch(file: Path) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(f"{file} is a PyTorch file and reading it needs torch: pip install "
                      "torch==2.13.0 (CPU build), or convert it to model.safetensors") from None
  state = torch.load(file, map_location="cpu", weights_only=True)
  return {k: v.float().numpy() for k, v in state.items()
          if not _BUFFER.fullmatch(k.removeprefix("transformer."))}


def load(path: str | os.PathLike, **overrides) -> tuple[model_lib.Config, model_lib.Params]:
  """(config, params) of the Hugging Face GPT-2 directory `path`.

  path: config.json plus model.safetensors or pytorch_model.bin (or their sharded index).
  overrides: `Config` fields besides the checkpoint's shape, e.g. dtype="bfloat16" or
             dropout=0.1 (the default is 0: inference).
  Raises FileNotFoundError, ValueError or ImportError with a one-line message.
  """
  path = Path(path)
  if not (path / "config.json").is_file():
    raise FileNotFoundError(f"{path}: no config.json; expected a Hugging Face GPT-2 directory "
                            "(config.json plus model.safetensors or pytorch_model.bin)")
  try:
    config = config_from_hf(json.loads((path / "config.json").read_text()), **overrides)
    state = {}
    for file in _weight_files(path):
      if not file.is_file():
        raise FileNotFoundError(f"{file}: a shard named in the checkpoint index is missing")
      state.update(safetensors.numpy.load_file(str(file)) if file.suffix == ".safetensors"
                   else _read_torch(file))
    return config, params_from_hf_state_dict(state, config)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from None


def load_tokenizer(path: str | os.PathLike) -> tokenizers_lib.HFTokenizer:
  """The GPT-2 BPE tokenizer of a Hugging Face directory (tokenizer.json or vocab + merges)."""
  return tokenizers_lib.HFTokenizer.from_dir(path)


def save_pretrained(path: str | os.PathLike, config: model_lib.Config, params: model_lib.Params,
                    eos_id: int | None = None) -> None:
  """Writes config.json and model.safetensors that `GPT2LMHeadModel.from_pretrained` loads.

  eos_id: the end-of-sequence (and bos) token id recorded in config.json, or None.
  """
  path = Path(path)
  path.mkdir(parents=True, exist_ok=True)
  (path / "config.json").write_text(json.dumps(config_to_hf(config, eos_id), indent=2) + "\n")
  safetensors.numpy.save_file(hf_state_dict(params), str(path / "model.safetensors"),
                              metadata={"format": "pt"})
