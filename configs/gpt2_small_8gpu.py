"""GPT-2 small (12 layers, d_model 768, 124M parameters) on LM1B, sized for one node of
8 GPUs (A100 or H100, 40 GiB or more each); the same config runs on several nodes.

    launch/gpu_local.sh train --config=configs/gpt2_small_8gpu.py --workdir=/data/runs/gpt2_small

is one process driving the 8 GPUs of this machine; on a SLURM cluster (one process per
GPU, any number of 8-GPU nodes):

    sbatch --nodes=2 launch/slurm.sbatch train --config=configs/gpt2_small_8gpu.py \
      --workdir=/shared/runs/gpt2_small

Global batch 256 rows x 1024 tokens (262k tokens, 32 rows per GPU on one node, 16 on
two), bfloat16 compute with float32 parameters. Plain data parallelism (mesh.data = -1):
124M parameters and their AdamW moments (2 GiB) fit on every GPU, and one all-reduce
per step is cheaper across nodes than FSDP's per-layer all-gathers; for larger models
set --config.mesh.data=1 --config.mesh.fsdp=-1. Every block is rematerialised so that
40 GiB GPUs have room for the lookahead of stunting runs; on 80 GiB GPUs
--config.model.remat=False is faster. 20,000 steps are 5.2B tokens, about 6 passes over
LM1B. The global batch must stay divisible by the GPU count (256: up to 256 GPUs).

Data: TFDS_DATA_DIR on storage that every node sees. Prepare LM1B as ArrayRecord and
train the tokenizer once, before the first run (it is saved beside the dataset as
sentencepiece_32768.model):

    tfds build lm1b --data_dir=DIR --file_format=array_record
    TFDS_DATA_DIR=DIR python -c 'import runpy; from lookahead_jax import settings; \
      settings.prepare_and_validate(runpy.run_path("configs/gpt2_small_8gpu.py")["get_config"]())'
"""

from lookahead_jax import config as config_lib


def get_config():
  config = config_lib.base_config()
  config.data.name = "lm1b"
  config.data.tokenizer = "sentencepiece:32768"
  config.data.val_split = "test"  # lm1b has no validation split
  config.data.seq_len = 1024
  config.data.read_threads = 4  # per process; slurm.sbatch gives every task 8 CPUs
  config.data.prefetch = 4

  config.model.vocab_size = 32768
  config.model.num_layers = 12
  config.model.d_model = 768
  config.model.num_heads = 12
  config.model.dtype = "bfloat16"
  config.model.remat = True

  config.train.steps = 20_000
  config.train.global_batch = 256
  config.train.learning_rate = 6e-4
  config.train.warmup_steps = 1_000
  config.train.log_every = 50
  config.train.val_every = 1_000
  config.train.val_batches = 16
  config.train.checkpoint_every = 1_000

  config.mesh.data = -1  # every GPU
  config.mesh.fsdp = 1

  config.lookahead.chunk = 128  # anchors per vmapped chunk: bounded lookahead memory

  config.eval.at_end = True
  # lm1b has no validation split: tau and lam are chosen on one half of test, the gain
  # is reported on the other
  config.eval.validation_split = "test[:50%]"
  config.eval.test_split = "test[50%:]"
  config.eval.batch_size = 64
  config.eval.max_batches = 32
  config.eval.widths = (2, 4)
  config.eval.horizons = (2, 4)
  return config
