"""The config schema (config.py): locked, renamed keys, the one place of every default,
and a module a config file loads without the frameworks."""

import dataclasses
import os
import subprocess
import sys

import pytest

from lookahead_jax import config as config_lib
from lookahead_jax import lookahead, masked, model, stunting

from conftest import REPO, RHYME_CONFIG, load_config

CONFIGS = os.path.join(REPO, "configs")


@pytest.fixture
def config(tiny_run):
  return load_config(RHYME_CONFIG, tiny_run)


def test_the_schema_is_locked_against_unknown_keys(config):
  with pytest.raises(AttributeError, match='Key "stepz" does not exist'):
    config.train.stepz = 5
  with pytest.raises(AttributeError, match='Key "optimizer" does not exist'):
    config.optimizer = {}
  config.data.options.anything = 1  # the builder's options are its own (checked by it)


@pytest.mark.parametrize("old", sorted(config_lib.RENAMED))
def test_a_renamed_key_is_one_line_naming_its_new_name(config, old):
  new = config_lib.RENAMED[old]
  expected = f"{old} is now {new}: rename it in the config file or override"
  section, key = old.split(".")
  with pytest.raises(AttributeError) as assigned:  # as a config file sets it
    setattr(config[section], key, 1)
  with pytest.raises(KeyError) as overridden:  # as an override sets it
    config.update_from_flattened_dict({old: 1})
  with pytest.raises(AttributeError) as read:  # as a config file reads it
    getattr(config[section], key)
  for error in (assigned.value, overridden.value, read.value):
    assert str(config_lib.renamed_key_error(error)) == expected
  new_section, new_key = new.split(".")
  assert new_key in config[new_section]


def test_an_unknown_key_that_was_never_renamed_gets_no_new_name(config):
  with pytest.raises(AttributeError) as e:
    config.train.stepz = 5
  assert config_lib.renamed_key_error(e.value) is None


def test_experiment_monitoring_interval_follows_the_steps_set_later():
  config = config_lib.experiment(config_lib.base_config(), "v1_token")
  config.train.steps = 300
  assert config.monitor.every == 30
  config.train.steps = 25
  assert config.monitor.every == 3  # a tenth, rounded up: never 0 (off)


def _docstring(name):
  with open(os.path.join(CONFIGS, name), encoding="utf-8") as f:
    return f.read().split('"""')[1]


@pytest.mark.parametrize("name", ["default.py", "tiny_shakespeare.py", "lm1b.py"])
def test_each_config_docstring_gives_its_command(name):
  assert f"lookahead-jax train --config=configs/{name}" in _docstring(name)


def test_loading_the_schema_imports_no_framework():
  """A config file imports the schema only: no flax, orbax, grain, TFDS (nor jax)."""
  code = ("import sys, lookahead_jax.config; print(sorted(m for m in ('flax', 'orbax', "
          "'grain', 'tensorflow_datasets', 'jax', 'optax') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, cwd=REPO)
  assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("section, cls", [
    ("lookahead", lookahead.Lookahead), ("lookahead", lookahead.Mixture),
    ("stunting", stunting.Stunting), ("objective", masked.Objective),
    ("model", model.Config)])
def test_every_settings_default_is_the_schemas(section, cls):
  """A field a config key sets has the schema's default: declared once, in the schema."""
  schema = config_lib.base_config()[section]
  fields = [f for f in dataclasses.fields(cls) if f.name in schema]
  assert fields
  for f in fields:
    assert f.default == schema[f.name], f.name
