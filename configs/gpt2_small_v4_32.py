"""GPT-2 small (12 layers, d_model 768, 124M parameters) on LM1B, sized for a TPU v4-32
slice: 4 hosts x 4 chips, 16 JAX devices, one process per host.

    TPU_NAME=lookahead-v4-32 ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 \
      launch/tpu_pod.sh train --config=configs/gpt2_small_v4_32.py \
      --workdir=gs://BUCKET/lookahead/gpt2_small_v4_32

Global batch 512 rows x 1024 tokens (0.5M tokens, 32 rows per chip), bfloat16 compute
with float32 parameters; parameters and optimizer state sharded over the 16 chips
(mesh.fsdp = -1) and every block rematerialised, which leaves room in a v4 chip's 32 GiB
for the lookahead of stunting runs (--config.stunting.mode=v3_balance). 10,000 steps are
5.2B tokens, about 6 passes over LM1B. Checkpoints (every host writes its shards),
metrics and the evaluation report go to the gs:// workdir; run the same command to
resume after a preemption.

Data: every worker reads TFDS_DATA_DIR (default ~/tensorflow_datasets). On one machine,
prepare LM1B as ArrayRecord and train the tokenizer once (it is saved beside the
dataset as sentencepiece_32768.model):

    tfds build lm1b --data_dir=DIR --file_format=array_record
    TFDS_DATA_DIR=DIR python -c 'import runpy; from lookahead_jax import settings; \
      settings.prepare_and_validate(runpy.run_path("configs/gpt2_small_v4_32.py")["get_config"]())'

then copy DIR to every worker (gcloud compute tpus tpu-vm scp --recurse ... --worker=all)
or mount it on every worker, and pass TFDS_DATA_DIR to tpu_pod.sh: every host must read
the same dataset and the same tokenizer file.
"""

from lookahead_jax import config as config_lib


def get_config():
  config = config_lib.base_config()
  config.data.name = "lm1b"
  config.data.tokenizer = "sentencepiece:32768"
  config.data.val_split = "test"  # lm1b has no validation split
  config.data.seq_len = 1024
  config.data.read_threads = 16  # a v4 host has 240 vCPUs
  config.data.prefetch = 4

  config.model.vocab_size = 32768
  config.model.num_layers = 12
  config.model.d_model = 768
  config.model.num_heads = 12
  config.model.dtype = "bfloat16"
  config.model.remat = True

  config.train.steps = 10_000
  config.train.global_batch = 512  # 32 rows per chip
  config.train.learning_rate = 6e-4
  config.train.warmup_steps = 700
  config.train.log_every = 50
  config.train.val_every = 1_000
  config.train.val_batches = 16
  config.train.checkpoint_every = 1_000

  config.mesh.data = 1
  config.mesh.fsdp = -1  # all 16 chips

  config.lookahead.chunk = 128  # anchors per vmapped chunk: bounded lookahead memory

  config.eval.at_end = True
  # lm1b has no validation split: tau and lam are chosen on one half of test, the gain
  # is reported on the other
  config.eval.validation_split = "test[:50%]"
  config.eval.test_split = "test[50%:]"
  config.eval.batch_size = 64  # 4 rows per chip
  config.eval.max_batches = 32
  config.eval.widths = (2, 4)
  config.eval.horizons = (2, 4)
  return config
