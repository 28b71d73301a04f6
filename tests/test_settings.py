"""Config validation (settings.py): every bad config is a one-line error naming its key;
the settings it derives; the shipped configs validate."""

import os

import pytest

from lookahead_jax import config as config_lib
from lookahead_jax import settings as settings_lib

from conftest import REPO, RHYME_CONFIG, load_config, tiny_path_star

CONFIGS = os.path.join(REPO, "configs")


@pytest.fixture
def config(tiny_run):
  return load_config(RHYME_CONFIG, tiny_run)  # 8 devices, global batch 8, max_len 36


def _error(config):
  with pytest.raises(config_lib.ConfigError) as e:
    settings_lib.validate(config)
  message = str(e.value)
  assert "\n" not in message
  return message


def test_the_tiny_config_is_valid(config):
  settings_lib.validate(config)


@pytest.mark.parametrize("overrides, expected", [
    ({"train.steps": 0}, "train.steps=0: must be >= 1"),
    ({"train.learning_rate": -1.0}, "train.learning_rate=-1.0: must be > 0"),
    ({"train.warmup_steps": 50, "train.steps": 10},
     "train.warmup_steps=50: must be in [0, train.steps=10) (the cosine decay needs a step); "
     "set --config.train.warmup_steps to at most 9"),
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
    ({"data.seq_len": 64, "model.max_len": 36},
     "data.seq_len=64: must be in [1, model.max_len=36]"),
    ({"data.tokenizer": "nonsense"}, "data.tokenizer='nonsense': unknown tokenizer"),
    ({"lookahead.width": 300}, "lookahead.width=300 beams exceed the vocabulary"),
    ({"lookahead.horizon": 40, "model.max_len": 36},
     "lookahead.horizon=40 exceeds the model's max_len=36"),
    ({"lookahead.kind": "dfs"}, "lookahead.kind='dfs' is not one of"),
    ({"lookahead.kind": "mcts", "lookahead.width": 300},
     "lookahead.width=300 children exceed the vocabulary"),
    ({"lookahead.policy": "max"}, "lookahead.policy='max' is not one of ('gumbel', 'visits')"),
    ({"lookahead.simulations": -1}, "lookahead.simulations=-1 must be >= 0 (0: K(H-1))"),
    ({"lookahead.reward": "goal"}, "lookahead.reward='goal' is not one of ('log_prob', 'task')"),
    ({"lookahead.reward": "task"}, "lookahead.reward='task': the task's return rewards MCTS's "
                                   "search: set lookahead.kind='mcts'"),
    ({"lookahead.kind": "mcts", "lookahead.reward": "task"},
     "lookahead.reward='task': rhyme has no task return (testbeds with one: path_star, tsp); use "
     "lookahead.reward='log_prob'"),
    ({"lookahead.scheme": "mean"}, "lookahead.scheme='mean': use one of sum, max"),
    ({"lookahead.lam": 1.0}, "lookahead.lam=1.0: must be in [0, 1) for a linear mixture"),
    ({"lookahead.temperature": 0.0}, "lookahead.temperature=0.0: must be > 0"),
    ({"lookahead.beta": 0.5}, "lookahead.beta=0.5: must be >= 1"),
    ({"stunting.mode": "v9"}, "stunting.mode='v9': use one of none, v1_token, v1_update"),
    ({"stunting.contrast": "p"}, "stunting.contrast='p': use one of control, naive"),
    ({"stunting.distill": -1.0}, "stunting.distill=-1.0: must be >= 0"),
    ({"eval.bootstrap": 0}, "eval.bootstrap=0: must be >= 1"),
    ({"train.profile_steps": (5, 2)}, "train.profile_steps=(5, 2): must be (first, last) steps "
                                      "with 0 <= first <= last; (0, 0) is off"),
    ({"data.answer_only": True}, "data.answer_only=True: needs a testbed with a prompt and an "
                                 "answer (tsp, path_star); set it to False"),
    ({"objective.kind": "bert"}, "objective.kind='bert': use one of next_token, spectrum"),
    ({"objective.rho": 0.8, "objective.suffix": 0.5},
     "objective.suffix=0.5: must be in [0, 1 - objective.rho=0.2]"),
    ({"objective.mask_rate": 0.6, "objective.mean_span": 1.0},
     "objective.mean_span=1.0: spans this short cannot cover objective.mask_rate=0.6; use "
     "mean_span >= 1.5 (or 0)"),
    ({"objective.kind": "spectrum"}, "model.vocab_size=258: the masked objective needs [MASK] "
                                     "(id 258); set model.vocab_size=259"),
    ({"objective.kind": "spectrum", "model.vocab_size": 259, "stunting.mode": "v1_token"},
     "stunting.mode='v1_token': the masked objective (objective.kind='spectrum') trains "
     "without stunting"),
])
def test_bad_value_is_one_line_naming_the_key(config, overrides, expected):
  config.update_from_flattened_dict(overrides)
  assert _error(config).startswith(expected)


@pytest.mark.parametrize("overrides, expected", [
    ({"data.options.min_goal_depth": 6},
     "data.options: path_star min_goal_depth=6 must be in 1 .. max_arm=5"),
    ({"data.options.num_nodes": 10},
     "data.options: path_star num_nodes=10 is too small: degree=2 arms of up to max_arm=5"),
    ({"data.seq_len": 16}, "data.seq_len=16: the longest path_star example with these options "
                           "has 20 tokens (+1 for its EOD): set data.seq_len >= 21"),
    # first-step accuracy and G per depth come from the same (all) test graphs
    ({"eval.max_batches": 2}, "eval.max_batches=2: path_star's figures (evals/path_star.py) "
                              "use every test graph"),
])
def test_path_star_options_no_graph_meets_are_one_line(tmp_path, overrides, expected):
  config = load_config(os.path.join(CONFIGS, "default.py"), {
      "data.data_dir": str(tmp_path), **{f"data.options.{k}_size": 20 for k in
                                         ("train", "validation", "test")}, **overrides})
  assert _error(config).startswith(expected)


def test_a_config_not_built_on_the_schema_is_one_line():
  import ml_collections

  assert _error(ml_collections.ConfigDict({"seed": 0})).startswith(
      "the config is not built on the schema: start it from "
      "lookahead_jax.config.base_config()")


def test_max_len_follows_seq_len_and_horizon_and_an_int_wins(config):
  assert config.model.max_len == 32 + 4
  config.lookahead.horizon = 8
  config.data.seq_len = 16
  assert config.model.max_len == 16 + 8
  assert settings_lib.validate(config).model.max_len == 24
  config.model.max_len = 64  # a fixed value (a checkpoint's) replaces the reference
  config.lookahead.horizon = 2
  assert config.model.max_len == 64 and settings_lib.validate(config).model.max_len == 64


def test_validate_derives_the_settings_once(config):
  config.stunting.mode = "v4"
  settings = settings_lib.validate(config)
  assert settings.model.max_len == 36 and settings.tokenizer.vocab_size == 258
  assert settings.stunting.mode == "v3_balance" and settings.stunting.lookahead.kind == "smc"
  assert settings.stunting.contrast == "control"
  assert settings.lookahead.eos_id == settings.tokenizer.eod_id
  # the dev lookahead differs in kind from v4's SMC stunting lookahead
  assert settings.dev_lookahead.kind == "beam" and settings.dev_lookahead.width == 8
  assert settings.pipeline["seq_len"] == 32 and settings.pipeline["tokenizer"] is settings.tokenizer


def test_an_existing_file_as_workdir_is_one_line(tmp_path):
  path = tmp_path / "file.txt"
  path.write_text("x")
  with pytest.raises(config_lib.ConfigError, match="is an existing file, not a directory"):
    settings_lib.check_workdir(str(path))
  settings_lib.check_workdir(str(tmp_path))
  settings_lib.check_workdir("gs://bucket/run")


def test_builder_options_are_checked_by_the_builder(config):
  config.data.options.rhymes = 3
  assert _error(config).startswith("data.options: unknown rhyme option(s) ['rhymes']")
  config.data.name = "lm1b"
  assert _error(config).startswith("data.options: options ['rhymes', 'test_size', ")


def test_loglinear_mixture_allows_lam_one(config):
  config.lookahead.mixture = "loglinear"
  config.lookahead.lam = 1.0
  settings_lib.validate(config)


def test_default_rhyme_and_tiny_shakespeare_validate(tmp_path):
  settings_lib.validate(load_config(RHYME_CONFIG, {"data.data_dir": str(tmp_path)}))
  small = {"data.data_dir": str(tmp_path), **{f"data.options.{k}_size": 50 for k in
                                              ("train", "validation", "test")}}
  default = settings_lib.validate(load_config(os.path.join(CONFIGS, "default.py"), small))
  assert default.tokenizer.vocab_size == default.model.vocab_size == 426
  settings_lib.validate(load_config(os.path.join(CONFIGS, "tiny_shakespeare.py"),
                                  {"data.data_dir": str(tmp_path)}))  # the shipped text


def test_the_mcts_experiment_validates_with_mcts_stunting_a_beam_dev_lookahead_and_ida_heads(
    tmp_path):
  small = {"data.data_dir": str(tmp_path), **{f"data.options.{k}_size": 50 for k in
                                              ("train", "validation", "test")}}
  path = os.path.join(CONFIGS, "experiments", "path_star_mcts.py")
  for mode in ("none", "distill", "ida"):
    settings = settings_lib.validate(load_config(path, small, mode))
    task = "" if mode == "none" else " task"  # distill and ida: rewarded by the task
    assert settings.monitor_lookahead.describe() == "mcts K=2 H=8 S=14 gumbel" + task
    assert settings.dev_lookahead.describe() == "beam B=2 H=8"  # log-probs, as the baseline's
    assert (settings.heads is None) == (mode != "ida")
    # the tree (H - 1 tokens) holds the longest answer: max_arm edges and END_PATH
    assert settings.lookahead.horizon - 1 >= settings.data.options["max_arm"] + 1
  assert settings.stunting.lookahead.kind == "mcts"  # ida: distill toward q_MCTS
  # ida's value targets: the return of the model's greedy path (a width-1 beam)
  assert settings.heads.lookahead.describe() == "beam B=1 H=8 task"
  assert settings.heads.eod_id == settings.tokenizer.eod_id


def test_the_task_reward_of_path_star_needs_edge_tokens(tmp_path):
  config = tiny_path_star(tmp_path)
  config.data.options.edge_tokens = False
  config.lookahead.kind, config.lookahead.reward = "mcts", "task"
  assert _error(config).startswith("path_star's task return reads edge-token answers; set "
                                   "data.options.edge_tokens=True")


def test_the_path_star_rho_experiment_is_path_stars_baseline_with_the_mask_spectrum(tmp_path):
  small = {"data.data_dir": str(tmp_path), **{f"data.options.{k}_size": 50 for k in
                                              ("train", "validation", "test")}}
  experiments = os.path.join(CONFIGS, "experiments")
  baseline = load_config(os.path.join(experiments, "path_star.py"), small, "none").to_dict()
  for mode, rho in (("rho_1", 1.0), ("rho_0.5", 0.5), ("rho_0.1", 0.1)):
    config = load_config(os.path.join(experiments, "path_star_rho.py"), small, mode)
    settings = settings_lib.validate(config)
    assert settings.tokenizer.mask_id == config.model.vocab_size - 1
    assert config.objective.kind == "spectrum" and config.objective.rho == rho
    differs = config.to_dict()
    del differs["objective"]
    differs["model"]["vocab_size"] -= 1
    assert differs == {k: v for k, v in baseline.items() if k != "objective"}


def test_every_path_star_mode_validates_with_a_dev_lookahead_of_another_kind(tmp_path):
  small = {"data.data_dir": str(tmp_path), **{f"data.options.{k}_size": 50 for k in
                                              ("train", "validation", "test")}}
  path = os.path.join(CONFIGS, "experiments", "path_star.py")
  for mode in config_lib.STUNTING_MODES:
    settings = settings_lib.validate(load_config(path, small, mode))
    assert settings.dev_lookahead.kind != settings.monitor_lookahead.kind, mode


def test_unprepared_tfds_configs_stop_at_the_data(tmp_path):
  """lm1b and TFDS tiny_shakespeare pass every check up to the dataset, which is not here."""
  lm1b = load_config(os.path.join(CONFIGS, "lm1b.py"), {"data.data_dir": str(tmp_path)})
  assert _error(lm1b).startswith("data.name='lm1b': dataset 'lm1b' is not prepared")
  assert lm1b.model.d_model == 768 and lm1b.model.dtype == "bfloat16" and lm1b.mesh.fsdp == -1
  tfds_config = load_config(os.path.join(CONFIGS, "tiny_shakespeare.py"),
                            {"data.data_dir": str(tmp_path)}, argument="tfds")
  assert _error(tfds_config).startswith("data.name='tiny_shakespeare': dataset")



def _files(root):
  return sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files)


def test_validate_writes_no_files_and_the_commands_prepare_first(tmp_path):
  """validate of a config naming an unprepared testbed and an untrained SentencePiece
  model reads and writes nothing; prepare_and_validate (what the commands call) builds
  both, and validate then reads them."""
  testbed = load_config(os.path.join(CONFIGS, "default.py"), {
      "data.data_dir": str(tmp_path), **{f"data.options.{k}_size": 20 for k in
                                         ("train", "validation", "test")}})
  settings = settings_lib.validate(testbed)
  assert settings.tokenizer.vocab_size == settings.model.vocab_size
  text = load_config(RHYME_CONFIG, {"data.data_dir": str(tmp_path),
                                    "data.tokenizer": "sentencepiece:320",
                                    "model.vocab_size": 321})
  text.data.options.update(train_size=200, validation_size=20, test_size=20)
  assert _error(text).startswith("data.tokenizer='sentencepiece:320': no SentencePiece model")
  assert _files(tmp_path) == []
  trained = settings_lib.prepare_and_validate(text)
  assert trained.tokenizer.vocab_size == 320
  assert any(f.endswith("sentencepiece_320.model") for f in _files(tmp_path))
  assert settings_lib.validate(text).tokenizer.vocab_size == 320  # now read, not trained
