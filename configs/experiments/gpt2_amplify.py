"""Beam- and SMC-amplified GPT-2 against naive GPT-2 on real text: can explicit lookahead
make GPT-2 assign higher probability to held-out text?

    lookahead-jax eval --config=configs/experiments/gpt2_amplify.py:/path/to/gpt2 \
        --workdir=runs/gpt2_amplify

/path/to/gpt2 is a local Hugging Face GPT-2 directory (config.json, model.safetensors or
pytorch_model.bin, and tokenizer.json; gpt2 to gpt2-xl), e.g. made on a machine with
network by `huggingface-cli download gpt2 --local-dir /path/to/gpt2`. The model's shape
is read from it. The text is tiny Shakespeare through the text_files builder (shipped
with the package, config_lib.TINY_SHAKESPEARE; another file with
--config.data.options.paths=..., or any prepared TFDS text dataset with
--config.data.name=...), tokenized with GPT-2's BPE. The grid: beam and SMC lookahead of
widths 2, 4, 8 and horizons 1, 2, 4, 8, sum and max schemes, linear and loglinear
mixtures; tau and lam are chosen on the validation split and the gains reported on the
test split. Sized for one GPU (gpt2 to gpt2-medium in float32; add
--config.model.dtype=bfloat16 for larger ones); with several devices the batch is
sharded over all of them.
"""

from lookahead_jax import config as config_lib
from lookahead_jax import settings as settings_lib

SHAPE = ("vocab_size", "max_len", "num_layers", "d_model", "num_heads", "mlp_ratio",
         "layer_norm_eps")


def get_config(path: str = ""):
  if not path:
    raise ValueError("give the GPT-2 directory: "
                     "--config=configs/experiments/gpt2_amplify.py:/path/to/gpt2")
  config = config_lib.base_config()
  config.pretrained = path
  shape = settings_lib.pretrained_model(path)
  for key in SHAPE:
    config.model[key] = getattr(shape, key)

  config.data.name = "text_files"
  config.data.options.paths = (config_lib.TINY_SHAKESPEARE,)
  config.data.tokenizer = path
  config.eval.horizons = (1, 2, 4, 8)
  config.data.seq_len = min(256, shape.max_len - max(config.eval.horizons))

  config.eval.kinds = ("beam", "smc")
  config.eval.widths = (2, 4, 8)
  config.eval.batch_size = 16
  config.lookahead.beta = 4.0  # SMC tempering
  return config
