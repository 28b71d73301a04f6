"""What importing the package does to the environment (lookahead_jax/__init__.py)."""

import os
import subprocess
import sys

import pytest

_SHOW = "import lookahead_jax, os; print(os.environ['XLA_FLAGS'])"


@pytest.mark.parametrize("given, expected", [
    ("", "--xla_cpu_experimental_ynn_fusion_type="),
    ("--xla_force_host_platform_device_count=2",
     "--xla_force_host_platform_device_count=2 --xla_cpu_experimental_ynn_fusion_type="),
    ("--xla_cpu_experimental_ynn_fusion_type=dot", "--xla_cpu_experimental_ynn_fusion_type=dot"),
])
def test_importing_turns_off_ynnpack_fusions_unless_xla_flags_names_the_option(given, expected):
  env = {**os.environ, "XLA_FLAGS": given}
  out = subprocess.run([sys.executable, "-c", _SHOW], env=env, capture_output=True, text=True,
                       check=True)
  assert out.stdout.strip() == expected
