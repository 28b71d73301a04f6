"""LM1B with a GPT-2-small-sized model (12 layers, d_model 768), for accelerators.

    lookahead-jax train --config=configs/lm1b.py --workdir=/path/to/runs/lm1b

bfloat16 compute with float32 parameters, parameters and optimizer state sharded over
all devices (mesh.fsdp = -1). Nothing is downloaded here: prepare lm1b as ArrayRecord on
a machine with network (`tfds build lm1b --data_dir=DIR --file_format=array_record`)
and point --config.data.data_dir (or $TFDS_DATA_DIR) at DIR. The tokenizer is a
SentencePiece model of 32768 pieces, trained on the train split on first use and saved
beside the dataset; --config.data.tokenizer=/path/to/gpt2 reads GPT-2's BPE instead
(then set --config.model.vocab_size=50304).
"""

from lookahead_jax import config as config_lib


def get_config():
  config = config_lib.base_config()
  config.data.name = "lm1b"
  config.data.tokenizer = "sentencepiece:32768"
  config.data.val_split = "test"  # lm1b has no validation split
  config.data.seq_len = 256
  config.data.read_threads = 4

  config.model.vocab_size = 32768
  config.model.num_layers = 12
  config.model.d_model = 768
  config.model.num_heads = 12
  config.model.dtype = "bfloat16"

  config.train.steps = 100_000
  config.train.global_batch = 256
  config.train.learning_rate = 6e-4
  config.train.warmup_steps = 2_000
  config.train.log_every = 100
  config.train.val_every = 2_000
  config.train.val_batches = 32
  config.train.checkpoint_every = 2_000

  config.mesh.data = 1
  config.mesh.fsdp = -1
  return config
