"""setup.py installs every package the code imports at module level (README's first
command installs only install_requires, without the test and bench extras)."""

import ast
import importlib.metadata
import pathlib
import re
import sys

from conftest import REPO

ROOT = pathlib.Path(REPO)


def _normalise(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()


def _install_requires() -> set[str]:
  tree = ast.parse((ROOT / "setup.py").read_text())
  for node in ast.walk(tree):
    if isinstance(node, ast.keyword) and node.arg == "install_requires":
      return {_normalise(re.split(r"[<>=!~\[ ;]", ast.literal_eval(r))[0])
              for r in node.value.elts}
  raise AssertionError("setup.py has no install_requires")


def _module_level_imports(path: pathlib.Path) -> set[str]:
  """Top-level package names imported outside functions (lazy imports are optional)."""
  names = set()
  for node in ast.parse(path.read_text()).body:
    if isinstance(node, ast.Import):
      names |= {alias.name.split(".")[0] for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      names.add(node.module.split(".")[0])
  return names


def test_every_module_level_import_is_an_install_requirement():
  required = _install_requires()
  distributions = importlib.metadata.packages_distributions()
  missing = {}
  for path in sorted((ROOT / "lookahead_jax").rglob("*.py")):
    for name in _module_level_imports(path):
      if name in sys.stdlib_module_names or name in ("__future__", "lookahead_jax"):
        continue
      dists = {_normalise(d) for d in distributions.get(name, [name])}
      if not dists & required:
        missing.setdefault(name, []).append(path.relative_to(ROOT).as_posix())
  assert not missing, f"imported but not in setup.py install_requires: {missing}"


def test_the_shipped_text_is_package_data():
  """A non-editable install carries Tiny Shakespeare: setup.py's package_data matches it."""
  from lookahead_jax import config as config_lib

  tree = ast.parse((ROOT / "setup.py").read_text())
  data = next(ast.literal_eval(node.value) for node in ast.walk(tree)
              if isinstance(node, ast.keyword) and node.arg == "package_data")
  shipped = pathlib.Path(config_lib.TINY_SHAKESPEARE).resolve()
  assert shipped.stat().st_size > 1_000_000
  folder = (ROOT / "lookahead_jax" / "data").resolve()
  assert any(shipped.relative_to(folder).match(glob) for glob in data["lookahead_jax.data"])
