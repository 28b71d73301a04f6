"""The code version a run records (metrics.code_version, write_version)."""

import json
import os
import subprocess

from lookahead_jax import metrics as metrics_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(metrics_lib.__file__)))


def test_code_version_is_the_checkouts_commit_and_unknown_outside_git(tmp_path):
  version = metrics_lib.code_version()
  assert set(version) == {"commit", "dirty", "diff", "short"}
  try:
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                          check=True, text=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):  # an installed package
    head = metrics_lib.UNKNOWN
  assert version["commit"] == head
  if head != metrics_lib.UNKNOWN:
    assert version["short"].startswith(head[:7])
    assert ("+" in version["short"]) == version["dirty"] == (version["diff"] is not None)
  assert metrics_lib.code_version() == version  # once per process
  # Outside a git checkout (and in a checkout that is not the package's own): unknown.
  assert metrics_lib._git_version(str(tmp_path)) == {
      "commit": "unknown", "dirty": None, "diff": None, "short": "unknown"}


def test_a_git_checkout_is_dirty_with_a_change_and_the_hash_tells_changes_apart(tmp_path):
  def git(*args):
    subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

  git("init", "-q")
  (tmp_path / "a.py").write_text("x = 1\n")
  git("add", "a.py")
  git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a")
  clean = metrics_lib._git_version(str(tmp_path))
  assert clean["dirty"] is False and clean["diff"] is None and len(clean["short"]) == 7
  (tmp_path / "a.py").write_text("x = 2\n")
  one = metrics_lib._git_version(str(tmp_path))
  (tmp_path / "a.py").write_text("x = 3\n")
  two = metrics_lib._git_version(str(tmp_path))
  assert one["dirty"] and two["dirty"] and one["commit"] == two["commit"] == clean["commit"]
  assert one["diff"] != two["diff"] and one["short"].startswith(clean["short"] + "+")
  (tmp_path / "a.py").write_text("x = 1\n")
  (tmp_path / "new.py").write_text("y = 1\n")  # a file git does not ignore counts
  assert metrics_lib._git_version(str(tmp_path))["dirty"]


def test_write_version_records_the_code_once_and_keeps_earlier_versions(tmp_path, monkeypatch):
  workdir = str(tmp_path / "run")
  assert metrics_lib.read_version(workdir) is None
  first = metrics_lib.write_version(workdir)
  assert first == metrics_lib.code_version() == metrics_lib.read_version(workdir)
  assert json.loads((tmp_path / "run" / metrics_lib.VERSION).read_text()) == first
  assert metrics_lib.write_version(workdir) == first  # a resume under the same code
  other = {"commit": "b" * 40, "dirty": False, "diff": None, "short": "b" * 7}
  monkeypatch.setattr(metrics_lib, "code_version", lambda: dict(other))
  resumed = metrics_lib.write_version(workdir)  # resumed under other code: both kept
  assert resumed == dict(other, earlier=[first]) == metrics_lib.read_version(workdir)
  assert metrics_lib.version_label(resumed) == f"{first['short']}/bbbbbbb"
  assert metrics_lib.version_label(None) == "?"
  assert metrics_lib.write_version(workdir) == resumed  # and once only
  metrics_lib.write_version(str(tmp_path / "other"), enabled=False)  # a process that does
  assert not (tmp_path / "other").exists()                            # not write
