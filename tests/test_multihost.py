"""Several processes: 2 local processes x 2 CPU devices under jax.distributed (gloo) train,
checkpoint and evaluate exactly like 1 process x 4 devices.

Every run here is a subprocess with its own XLA_FLAGS (the pytest process has already
started jax with 8 devices). The 2-process runs are the real command line,
`python -m lookahead_jax.main train|eval`, started the way launch/gpu_local.sh starts
processes: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID on a free
localhost port.

The 2-process run of the plain mode starts from an unprepared data dir, as a first run on
a cluster does: the processes must not build the same dataset files at once.

What is compared with what:
  - training: the 2-process run against tests/multihost_worker.py, which is train.
    train.run in one process fed the same global batches. The pipeline gives
    each process its own documents (p::N) and shuffling, so a plain 1-process run sees
    other batches by design; the worker concatenates the batches of the 2 shards, which
    is what the 2-process run's global batch is. Same seed, same config: the logged
    losses of every step and the final parameters must agree to float32 round-off.
  - checkpoints: every process writes its own array shards and its own data-iterator
    state; a 1-process run resumes from the 2-process checkpoint and goes on training.
  - evaluation: every process packs the whole eval split and takes its rows of each
    global batch, so the evaluation suite (beam and SMC lookahead) on the 2-process
    checkpoint must give the same report in 1 process as in 2.
A failing or hanging process fails the test with the logs of every process, and every
process still running is killed (its whole process group).
"""

import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import jax
import numpy as np
import pytest

from lookahead_jax import metrics, sharding
from lookahead_jax import settings as settings_lib
from lookahead_jax import state as state_lib

from conftest import REPO, RHYME_CONFIG, command, load_config

PROCESSES, LOCAL_DEVICES = 2, 2
TIMEOUT = 240  # seconds for one launch (all its processes)
WORKER = os.path.join(os.path.dirname(__file__), "multihost_worker.py")
# stunting modes trained in 2 processes against 1 ("v3_balance": the lookahead runs
# inside the sharded train step)
MODES = ("none", "v3_balance")
STEPS, RESUMED_STEPS = 6, 8

# A small evaluation grid that still has both lookahead kinds (SMC samples inside the
# sharded step), both schemes, and the loglinear mixture, whose normaliser is gathered
# across processes (each side's tau and lam fitted on validation).
EVAL = {
    "eval.kinds": ("beam", "smc"), "eval.widths": (2,), "eval.horizons": (2,),
    "eval.schemes": ("sum", "max"), "eval.mixtures": ("loglinear",),
    "eval.batch_size": 8, "eval.max_batches": 2,
}
# The environment variables that start jax.distributed (sharding.maybe_initialize_distributed)
_DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                    "LOOKAHEAD_JAX_DISTRIBUTED", "SLURM_JOB_ID", "SLURM_NTASKS",
                    "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


# ----------------------------------------------------------------------------- processes


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices: int, process_id: int | None = None, port: int | None = None,
         processes: int = PROCESSES) -> dict[str, str]:
  """The environment of one process: its CPU devices and, with a port, its coordinator."""
  env = {k: v for k, v in os.environ.items() if k not in _DISTRIBUTED_ENV}
  # LLVM at -O0 compiles the CPU programs about twice as fast; every run here uses it,
  # so the comparisons are between the same programs.
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
                       "--xla_backend_optimization_level=0",
             JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  if port is not None:
    env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES=str(processes),
               JAX_PROCESS_ID=str(process_id))
  return env


class Processes:
  """Subprocesses started together, each in its own process group, logs in files.

  On leaving the `with` block every process still running is killed; `wait` fails the
  test as soon as one process fails (the others would wait at a collective forever),
  or at the deadline, with the tail of every log.
  """

  def __init__(self, log_dir):
    self.log_dir = log_dir
    self.procs: dict[str, subprocess.Popen] = {}

  def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
    with open(self.log_path(name), "w") as log:
      self.procs[name] = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)

  def start_distributed(self, name: str, argv: list[str], processes: int = PROCESSES,
                        devices: int = LOCAL_DEVICES) -> list[str]:
    """`processes` copies of argv on one coordinator; returns their names."""
    port = _free_port()
    names = [f"{name}.p{i}" for i in range(processes)]
    for i, process_name in enumerate(names):
      self.start(process_name, argv, _env(devices, i, port, processes))
    return names

  def log_path(self, name: str) -> str:
    return os.path.join(self.log_dir, f"{name}.log")

  def log(self, name: str) -> str:
    with open(self.log_path(name), errors="replace") as f:
      return f.read()

  def check_running(self) -> None:
    """Fails the test if a process has failed."""
    failed = {name: p.returncode for name, p in self.procs.items() if p.poll() not in (None, 0)}
    if failed:
      self._fail(f"exit codes {failed}")

  def wait(self, timeout: float = TIMEOUT, independent: bool = False) -> dict[str, int]:
    """Waits for every process; returns the exit codes.

    Fails the test when a process fails (at once: the others may wait for it at a
    collective), unless the processes are `independent`; always at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
      codes = {name: p.poll() for name, p in self.procs.items()}
      failed = {name: code for name, code in codes.items() if code not in (None, 0)}
      if failed and not independent:
        self._fail(f"exit codes {failed}")
      if all(code is not None for code in codes.values()):
        return codes
      if time.monotonic() > deadline:
        self._fail(f"still running after {timeout:.0f} s")
      time.sleep(0.2)

  def check(self, name: str) -> str:
    """The log of a process that exited; fails the test with its tail if it failed."""
    log = self.log(name)
    if self.procs[name].returncode != 0:
      pytest.fail(f"{name} exited with {self.procs[name].returncode}:\n{log[-4000:]}",
                  pytrace=False)
    return log

  def _fail(self, why: str) -> None:
    self.kill()
    tails = "\n".join(f"===== {name} (exit {p.returncode})\n{self.log(name)[-3000:]}"
                      for name, p in self.procs.items())
    pytest.fail(f"{why}\n{tails}", pytrace=False)

  def kill(self) -> None:
    for p in self.procs.values():
      if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
          os.killpg(p.pid, signal.SIGKILL)
        p.wait()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.kill()


# ----------------------------------------------------------------------------- runs


def _overrides(tiny_run, mode="none", **more):
  return {**tiny_run, **EVAL, "train.steps": STEPS, "train.log_every": 1,
          "train.checkpoint_every": 3, "stunting.mode": mode, "eval.at_end": mode == "none",
          **more}


def _loss_lines(workdir):
  """(step, loss) of every training record in metrics.jsonl, in file order (no dedup)."""
  with open(os.path.join(workdir, metrics.JSONL)) as f:
    records = [json.loads(line) for line in f]
  return [(r["step"], r["loss"]) for r in records if "loss" in r]


def _params(config, workdir):
  """The newest checkpoint's parameters on one device of this (pytest) process."""
  params = state_lib.restore_params(settings_lib.validate(config), str(workdir),
                                mesh=sharding.make_mesh(devices=jax.devices()[:1]))
  assert params is not None, f"no checkpoint in {workdir}"
  return jax.tree.map(np.asarray, jax.device_get(params))


@pytest.fixture(scope="module")
def trained(tiny_run, tmp_path_factory):
  """mode -> (run): the 2-process run and its 1-process reference, started together."""
  runs = {}

  def get(mode):
    if isinstance(runs.get(mode), str):  # the launch failed: fail again, without relaunching
      pytest.fail(runs[mode], pytrace=False)
    if mode not in runs:
      root = tmp_path_factory.mktemp(f"multihost_{mode}")
      two, one = root / "two_processes", root / "one_process"
      overrides = _overrides(tiny_run, mode)
      # the same rhyme data, generated by the 2 processes into a new data dir (plain mode)
      two_overrides = dict(overrides)
      if mode == "none":
        two_overrides["data.data_dir"] = str(root / "tfds")
      procs = Processes(str(root))
      with procs:
        names = procs.start_distributed("train", command("train", two, two_overrides))
        argv = command("train", one, overrides)
        argv[1:4] = [WORKER, "train", f"--data_shards={PROCESSES}"]  # not -m lookahead_jax.main
        procs.start("reference", argv, _env(PROCESSES * LOCAL_DEVICES))
        try:
          procs.wait()
        except pytest.fail.Exception as e:
          runs[mode] = f"(the {mode} runs failed earlier) {e}"
          raise
      runs[mode] = dict(two=two, one=one, overrides=overrides,
                        logs={name: procs.log(name) for name in names})
    return runs[mode]

  return get


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("mode", MODES)
def test_two_processes_train_like_one(trained, mode):
  run = trained(mode)
  two, one = run["two"], run["one"]
  config = load_config(RHYME_CONFIG, run["overrides"])

  # Only process 0 writes metrics: one record per step, not one per process.
  losses_two, losses_one = _loss_lines(two), _loss_lines(one)
  assert [s for s, _ in losses_two] == list(range(1, STEPS + 1))
  assert [s for s, _ in losses_one] == list(range(1, STEPS + 1))
  np.testing.assert_allclose([l for _, l in losses_two], [l for _, l in losses_one], rtol=2e-6,
                             err_msg="per-step training loss: 2 processes vs 1")
  # ... and only process 0 prints the progress bar and the summary.
  log0, log1 = run["logs"]["train.p0"], run["logs"]["train.p1"]
  assert re.search(r"train: +100%", log0) and "summary: rhyme" in log0
  assert not re.search(r"train: +\d+%", log1) and "summary:" not in log1

  params_two, params_one = _params(config, two), _params(config, one)
  diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))),
                                       params_two, params_one))
  assert max(diffs) < 1e-5, f"max |param difference| {max(diffs):.3g}"
  # not vacuous: training moved the parameters far more than that
  settings = settings_lib.validate(config)
  init = state_lib.init_state(settings.model, state_lib.make_optimizer(settings.train)[0],
                              settings.seed).params
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - np.asarray(b)))),
                                       params_two, init))
  assert max(moved) > 1e-3

  # Every process wrote its own array shards and its own data-iterator state.
  for step in (3, STEPS):
    ckpt = two / "checkpoints" / str(step)
    shards = sorted(p.name for p in (ckpt / "state").iterdir() if p.name.startswith("ocdbt."))
    assert shards == [f"ocdbt.process_{i}" for i in range(PROCESSES)]
    states = [json.loads((ckpt / "data" / f"process_{i}-of-{PROCESSES}.json").read_text())
              for i in range(PROCESSES)]
    assert states[0] != states[1]  # each process iterates over its own documents


# ------------------------------------------------------------------------- checkpoint, evaluation


@pytest.fixture(scope="module")
def followups(trained, tmp_path_factory):
  """From the 2-process run ("none"): a 1-process resume and a 1-process evaluation,
  each in a copy of its workdir, started together."""
  run = trained("none")
  root = tmp_path_factory.mktemp("multihost_followups")
  resumed, evaluated = root / "resumed", root / "evaluated"
  shutil.copytree(run["two"], resumed)
  os.makedirs(evaluated)
  shutil.copytree(run["two"] / "checkpoints", evaluated / "checkpoints")
  overrides = dict(run["overrides"], **{"eval.at_end": False})
  procs = Processes(str(root))
  with procs:
    procs.start("resume", command("train", resumed, {**overrides,
                                                     "train.steps": RESUMED_STEPS}),
                _env(PROCESSES * LOCAL_DEVICES))
    procs.start("eval", command("eval", evaluated, overrides), _env(PROCESSES * LOCAL_DEVICES))
    procs.wait(independent=True)
  return dict(run, resumed=resumed, evaluated=evaluated, procs=procs)


def test_checkpoint_of_two_processes_resumes_in_one(followups):
  """The 2-process checkpoint restores in 1 process (other data-iterator layout) and
  training goes on from its step, not from scratch."""
  log, resumed = followups["procs"].check("resume"), followups["resumed"]
  assert f"{RESUMED_STEPS} of {RESUMED_STEPS} (resumed from {STEPS})" in log, log[-3000:]
  assert "unreadable" not in log
  assert not (resumed / "checkpoints_unreadable").exists()
  steps = sorted(int(p.name) for p in (resumed / "checkpoints").iterdir() if p.name.isdigit())
  assert steps[-1] == RESUMED_STEPS and STEPS in steps
  # the new steps continue the trained model: their loss is that of step 6, not of a
  # fresh initialisation (step 1)
  losses = dict(_loss_lines(resumed))
  assert sorted(losses) == list(range(1, RESUMED_STEPS + 1))
  assert all(math.isfinite(losses[s]) for s in losses)
  assert losses[STEPS + 1] < losses[1] - 0.25 and abs(losses[STEPS + 1] - losses[STEPS]) < 0.25


def _numbers(report):
  """The report without what legitimately differs (wall time, the checkpoint's path)."""
  return {k: v for k, v in report.items() if k not in ("seconds", "params")}


def _assert_close(a, b, path="report", abs_tol=1e-6):
  if isinstance(a, dict):
    assert sorted(a) == sorted(b), path
    for key in a:
      _assert_close(a[key], b[key], f"{path}.{key}", abs_tol)
  elif isinstance(a, list):
    assert len(a) == len(b), path
    for i, (x, y) in enumerate(zip(a, b)):
      _assert_close(x, y, f"{path}[{i}]", abs_tol)
  elif isinstance(a, float):
    assert math.isclose(a, b, rel_tol=1e-5, abs_tol=abs_tol), f"{path}: {a} != {b}"
  else:
    assert a == b, f"{path}: {a!r} != {b!r}"


def test_evaluation_in_two_processes_equals_one(followups):
  """The suite on the same checkpoint: 2 processes (train's eval.at_end) vs 1 process."""
  followups["procs"].check("eval")
  two = json.loads((followups["two"] / "eval" / "report.json").read_text())
  one = json.loads((followups["evaluated"] / "eval" / "report.json").read_text())
  assert two["params"].startswith("the newest checkpoint")
  assert {r["kind"] for r in two["rows"]} == {"beam", "smc"} and two["tokens"]["test"] > 0
  probes_two, probes_one = two.pop("probes"), one.pop("probes")
  _assert_close(_numbers(two), _numbers(one))
  # The probes are fits (Adam over the gathered rows) and accuracies over a few hundred
  # tokens: the same up to the order of float sums, so a near tie may flip a token or two.
  _assert_close(probes_two, probes_one, "report.probes", abs_tol=0.02)
  # only process 0 writes the report and prints the table
  assert "Report and plots" in followups["logs"]["train.p0"]
  assert "Report and plots" not in followups["logs"]["train.p1"]


# ----------------------------------------------------------------------------- preemption


def test_sigterm_to_one_process_stops_every_process_at_the_same_step(tiny_run, tmp_path):
  """A preemption notice to one host: jax's preemption sync point makes both processes
  save the same step and exit cleanly."""
  workdir, steps = tmp_path / "run", 100_000
  overrides = _overrides(tiny_run, **{"train.steps": steps, "train.checkpoint_every": 0,
                                      "eval.at_end": False})
  jsonl = workdir / metrics.JSONL
  with Processes(str(tmp_path)) as procs:
    names = procs.start_distributed("train", command("train", workdir, overrides))
    deadline = time.monotonic() + TIMEOUT
    while not (jsonl.exists() and len(jsonl.read_text().splitlines()) >= 3):  # training
      procs.check_running()
      assert time.monotonic() < deadline, "no training step logged"
      time.sleep(0.2)
    os.kill(procs.procs[names[1]].pid, signal.SIGTERM)
    procs.wait()
  saved = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
  assert len(saved) == 1 and 3 <= saved[0] < steps
  assert f"{saved[0]} of {steps} (preempted)" in procs.log(names[0])
  assert _loss_lines(workdir)[-1][0] == saved[0]  # every step taken is in the checkpoint
  data = workdir / "checkpoints" / str(saved[0]) / "data"
  assert sorted(p.name for p in data.glob("process_*.json")) == [
      f"process_{i}-of-{PROCESSES}.json" for i in range(PROCESSES)]


# ----------------------------------------------------------------------------- start-up


def test_distributed_start_up_from_the_launcher_variable(monkeypatch):
  """LOOKAHEAD_JAX_DISTRIBUTED=auto (launch/tpu_pod.sh): jax.distributed.initialize()
  without arguments, whatever else the environment says; off: never."""
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
  for key in _DISTRIBUTED_ENV:
    monkeypatch.delenv(key, raising=False)
  monkeypatch.setenv("LOOKAHEAD_JAX_DISTRIBUTED", "auto")
  assert sharding.maybe_initialize_distributed() and calls == [((), {})]
  monkeypatch.setenv("LOOKAHEAD_JAX_DISTRIBUTED", "off")
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1234")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
  monkeypatch.setenv("JAX_PROCESS_ID", "0")
  assert not sharding.maybe_initialize_distributed() and len(calls) == 1
  monkeypatch.setenv("LOOKAHEAD_JAX_DISTRIBUTED", "yes")
  with pytest.raises(ValueError, match="LOOKAHEAD_JAX_DISTRIBUTED='yes'"):
    sharding.maybe_initialize_distributed()
