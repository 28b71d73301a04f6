"""Config validation: every bad config is a one-line error naming its key; the shipped configs."""

import os

import pytest

from conftest import DEFAULT_CONFIG, REPO, SHARED_DATA, load_config
from lookahead_jax import train

CONFIGS = os.path.join(REPO, "configs")


@pytest.fixture
def config(tiny_run):
  return load_config(DEFAULT_CONFIG, tiny_run)  # 8 devices, global batch 8, max_len 36


def _error(config):
  with pytest.raises(train.ConfigError) as e:
    train.validate(config)
  message = str(e.value)
  assert "\n" not in message
  return message


def test_the_tiny_config_is_valid(config):
  train.validate(config)


@pytest.mark.parametrize("overrides, expected", [
    ({"train.steps": 0}, "train.steps=0: must be >= 1"),
    ({"train.learning_rate": -1.0}, "train.learning_rate=-1.0: must be > 0"),
    ({"train.warmup_steps": 50, "train.steps": 10}, "train.warmup_steps=50: must be in [0, "),
    ({"train.global_batch": 12}, "train.global_batch=12: must be divisible by the 8 devices"),
    ({"train.grad_accum": 3}, "train.global_batch=8: must be a multiple of train.grad_accum=3"),
    ({"train.global_batch": 8, "train.grad_accum": 2},
     "train.global_batch=8: must be divisible by the 8 devices x train.grad_accum=2; use a "
     "multiple of 16"),
    ({"train.b2": 1.0}, "train.b2=1.0: must be in [0, 1)"),
    ({"eval.batch_size": 12}, "eval.batch_size=12: must be divisible by the 8 devices"),
    ({"pretrained": "/no/such/gpt2"}, "pretrained='/no/such/gpt2': "),
    ({"mesh.data": 3, "mesh.fsdp": -1}, "mesh.data=3 does not divide the 8 devices"),
    ({"mesh.data": 3}, "mesh.data=3 x mesh.fsdp=1 is not the 8 devices"),
    ({"mesh.data": 2, "mesh.fsdp": 2}, "mesh.data=2 x mesh.fsdp=2 is not the 8 devices"),
    ({"model.d_model": 30}, "model.d_model=30 is not divisible by model.num_heads=4"),
    ({"model.dtype": "float64"}, "model.dtype='float64' is not one of"),
    ({"model.dropout": 1.0}, "model.dropout=1.0: must be in [0, 1)"),
    ({"model.vocab_size": 100}, "model.vocab_size=100: the rhyme tokenizer has 258 tokens; set "
                                "model.vocab_size=258"),
    ({"data.seq_len": 64}, "data.seq_len=64: must be in [1, model.max_len=36]"),
    ({"data.tokenizer": "nonsense"}, "data.tokenizer='nonsense': unknown tokenizer"),
    ({"lookahead.width": 300}, "lookahead.width=300 beams exceed the vocabulary"),
    ({"lookahead.horizon": 40}, "lookahead.horizon=40 exceeds the model's max_len=36"),
    ({"lookahead.kind": "dfs"}, "lookahead.kind='dfs' is not one of"),
    ({"lookahead.scheme": "mean"}, "lookahead.scheme='mean': use one of sum, max"),
    ({"lookahead.lam": 1.0}, "lookahead.lam=1.0: must be in [0, 1) for a linear mixture"),
    ({"lookahead.temperature": 0.0}, "lookahead.temperature=0.0: must be > 0"),
    ({"lookahead.beta": 0.5}, "lookahead.beta=0.5: must be >= 1"),
    ({"stunting.mode": "v9"}, "stunting.mode='v9': use one of none, v1_token, v1_update"),
])
def test_bad_value_is_one_line_naming_the_key(config, overrides, expected):
  config.update_from_flattened_dict(overrides)
  assert _error(config).startswith(expected)


def test_unknown_and_missing_keys(config):
  config.train.stepz = 5
  assert _error(config).startswith("unknown key train.stepz: the keys of train are")
  del config.train["stepz"]
  config.optimizer = {}
  assert _error(config).startswith("unknown key optimizer: the keys of the config are")
  del config["optimizer"]
  del config.train["eval_every"]
  assert _error(config).startswith("missing key train.eval_every")


def test_builder_options_are_checked_by_the_builder(config):
  config.data.options.rhymes = 3
  assert _error(config).startswith("data.options: unknown rhyme option(s) ['rhymes']")
  config.data.name = "lm1b"
  assert _error(config).startswith("data.options: options ['rhymes', 'test_size', ")


def test_loglinear_mixture_allows_lam_one(config):
  config.lookahead.mixture = "loglinear"
  config.lookahead.lam = 1.0
  train.validate(config)


def _docstring(name):
  with open(os.path.join(CONFIGS, name), encoding="utf-8") as f:
    return f.read().split('"""')[1]


@pytest.mark.parametrize("name", ["default.py", "tiny_shakespeare.py", "lm1b.py"])
def test_each_config_docstring_gives_its_command(name):
  assert f"lookahead-jax train --config=configs/{name}" in _docstring(name)


def test_default_and_tiny_shakespeare_validate(tmp_path):
  train.validate(load_config(DEFAULT_CONFIG, {"data.data_dir": str(tmp_path)}))
  shakespeare = os.path.abspath(os.path.join(SHARED_DATA, "tinyshakespeare.txt"))
  if not os.path.isfile(shakespeare):
    pytest.skip(f"{shakespeare} is not here")
  train.validate(load_config(os.path.join(CONFIGS, "tiny_shakespeare.py"),
                             {"data.data_dir": str(tmp_path),
                              "data.options.paths": (shakespeare,)}))


def test_unprepared_tfds_configs_stop_at_the_data(tmp_path):
  """lm1b and TFDS tiny_shakespeare pass every check up to the dataset, which is not here."""
  lm1b = load_config(os.path.join(CONFIGS, "lm1b.py"), {"data.data_dir": str(tmp_path)})
  assert _error(lm1b).startswith("data.name='lm1b': dataset 'lm1b' is not prepared")
  assert lm1b.model.d_model == 768 and lm1b.model.dtype == "bfloat16" and lm1b.mesh.fsdp == -1
  tfds_config = load_config(os.path.join(CONFIGS, "tiny_shakespeare.py"),
                            {"data.data_dir": str(tmp_path)}, argument="tfds")
  assert _error(tfds_config).startswith("data.name='tiny_shakespeare': dataset")

