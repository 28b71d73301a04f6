"""Importing the package has no side effects; a command's start sets what it needs
(sharding.set_cpu_compiler_flags, builders.quiet_tfds_notices)."""

import os
import subprocess
import sys

import pytest

from lookahead_jax import sharding

# The command line's module imported (and with it the library), then what the
# environment, absl's log and matplotlib hold.
_SHOW = """
import logging, os, sys
import lookahead_jax.main
print(os.environ.get("XLA_FLAGS"))
print(len(logging.getLogger("absl").filters), "matplotlib.pyplot" in sys.modules)
"""


def test_importing_the_package_sets_no_flag_no_log_filter_and_no_plot_backend():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, "-c", _SHOW], env=env, capture_output=True, text=True,
                       check=True)
  assert out.stdout.split() == ["None", "0", "False"]


@pytest.mark.parametrize("given, expected", [
    ("", "--xla_cpu_experimental_ynn_fusion_type="),
    ("--xla_force_host_platform_device_count=2",
     "--xla_force_host_platform_device_count=2 --xla_cpu_experimental_ynn_fusion_type="),
    ("--xla_cpu_experimental_ynn_fusion_type=dot", "--xla_cpu_experimental_ynn_fusion_type=dot"),
])
def test_a_command_turns_off_ynnpack_fusions_unless_xla_flags_names_the_option(
    given, expected, monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", given)
  sharding.set_cpu_compiler_flags()
  assert os.environ["XLA_FLAGS"] == expected
