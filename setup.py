"""lookahead_jax: lookahead-amplified targets and stunting for GPT-style models in JAX."""
import setuptools

setuptools.setup(
    name="lookahead_jax",
    version="0.1.0",
    description=(
        "Train GPT-style transformers in JAX/Flax with a jitted beam/SMC lookahead "
        "inside the sharded training step: measure, stunt and monitor lookahead."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",  # mctx needs 3.11
    packages=setuptools.find_packages(include=["lookahead_jax", "lookahead_jax.*"]),
    package_data={"lookahead_jax.data": ["texts/*.txt"]},  # Tiny Shakespeare, shipped
    install_requires=[
        "jax>=0.8.0",
        "flax>=0.12.0",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11.20",
        "tensorflow-datasets>=4.9.9",
        "array-record>=0.8.1",
        "importlib_resources>=6.0",  # TFDS needs it to prepare local builders without TF
        "ml-collections>=1.0.0",
        "grain>=0.2.12",
        "absl-py>=2.1.0",
        "numpy>=1.26",
        "scipy>=1.11",  # t-intervals over seeds (stats.py)
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "tensorboardX>=2.6.2",
        "sentencepiece>=0.2.0",
        "tokenizers>=0.20",
        "safetensors>=0.4",  # GPT-2 checkpoints (gpt2.py)
        "etils[epath]>=1.5",  # workdir paths, local or gs://
        "mctx==0.0.71",  # MCTS lookahead (mcts.py); the version its tests ran on
    ],
    extras_require={
        "test": ["pytest>=8.0", "pytest-xdist>=3.5", "ruff>=0.6"],
        # Benchmarks and parity tests against Hugging Face. Install the CPU build of
        # torch first (`pip install torch==2.13.0`); a plain `torch` pulls CUDA wheels.
        "bench": ["torch>=2.4", "transformers>=4.45"],
        # Workdirs on Google Cloud Storage (gs://...): checkpoints, metrics, reports.
        "gcs": ["gcsfs>=2024.2", "google-cloud-storage>=2.14"],
    },
    entry_points={"console_scripts": ["lookahead-jax=lookahead_jax.main:run"]},
)
