"""launch/: syntax (bash -n, shellcheck), usage, the exact commands of every dry run, the
process handling of gpu_local.sh, and the configs sized for each launcher.

Nothing here needs gcloud, SLURM or a GPU: dry runs call no external tool, the commands
a TPU worker or srun would run are executed here with stand-ins for the programs they
start, and gpu_local.sh runs real training in 2 CPU processes (--cpu).
"""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from lookahead_jax import config as config_lib
from lookahead_jax import settings as settings_lib

from conftest import REPO, load_config

LAUNCH = os.path.join(REPO, "launch")
LAUNCHERS = ("tpu_pod.sh", "gpu_local.sh", "slurm.sbatch")
SCRIPTS = (*LAUNCHERS, "common.sh")  # common.sh: sourced by gpu_local.sh and tpu_pod.sh
ARGS = ["train", "--config=configs/default.py", "--workdir=WORKDIR",
        "--config.eval.kinds=('beam', 'smc')", "--config.data.options.paths=a file.txt"]


def _env(**more):
  """A clean environment: none of the variables the launchers read, unless given."""
  drop = ("TPU_NAME", "ZONE", "PROJECT", "ACCELERATOR_TYPE", "RUNTIME_VERSION", "JAX_SPEC",
          "TFDS_DATA_DIR", "PYTHON", "PORT", "CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID",
          "SLURM_JOB_NUM_NODES", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
          "JAX_PROCESS_ID", "XLA_FLAGS")
  env = {k: v for k, v in os.environ.items() if k not in drop}
  env.update(more)
  return env


def _launch(name, *args, env=None, timeout=60):
  return subprocess.run(["bash", os.path.join(LAUNCH, name), *args], cwd=REPO,
                        env=env or _env(), capture_output=True, text=True, timeout=timeout)


def _lines(stdout):
  """The printed commands, comments dropped."""
  return [line for line in stdout.splitlines() if line and not line.startswith("#")]


def _stand_in(path, script):
  """An executable bash script at `path` (a stand-in for python, srun, ...)."""
  path.write_text("#!/usr/bin/env bash\n" + script)
  path.chmod(0o755)
  return str(path)


# ----------------------------------------------------------------------------- syntax, usage


@pytest.mark.parametrize("name", SCRIPTS)
def test_bash_syntax(name):
  result = subprocess.run(["bash", "-n", os.path.join(LAUNCH, name)], capture_output=True,
                          text=True)
  assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", SCRIPTS)
def test_shellcheck(name):
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck is not installed (Debian/Ubuntu: apt-get install -y shellcheck)")
  result = subprocess.run(["shellcheck", "--shell=bash", os.path.join(LAUNCH, name)],
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name, documented", [
    ("tpu_pod.sh", ("TPU_NAME", "ZONE", "PROJECT", "ACCELERATOR_TYPE", "RUNTIME_VERSION",
                    "--worker=all", "gs://", "--dry-run", "--delete")),
    ("gpu_local.sh", ("--processes", "CUDA_VISIBLE_DEVICES", "JAX_COORDINATOR_ADDRESS",
                      "--cpu", "--dry-run")),
    ("slurm.sbatch", ("sbatch", "srun", "SLURM_LOCALID", "--signal=TERM", "shared",
                      "--dry-run")),
])
def test_help_documents_the_environment(name, documented):
  for flag in ("-h", "--help"):
    result = _launch(name, flag)
    assert result.returncode == 0 and result.stdout.startswith("usage:"), result.stderr
    for word in documented:
      assert word in result.stdout, f"{name} -h does not mention {word}"


@pytest.mark.parametrize("name", LAUNCHERS)
@pytest.mark.parametrize("args, message", [
    (["fit", "--config=c.py", "--workdir=gs://b/w"], "COMMAND must be train, eval or decode"),
    (["train", "--workdir=gs://b/w"], "give --config=CONFIG"),
    (["train", "--config=c.py"], "give --workdir="),
    (["--bogus", "train"], "unknown option --bogus"),
])
def test_bad_arguments_are_one_line(name, args, message):
  result = _launch(name, "--dry-run", *args, env=_env(TPU_NAME="t", ZONE="z"))
  assert result.returncode == 2 and not result.stdout
  assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


# ----------------------------------------------------------------------------- gpu_local.sh


def test_gpu_local_one_process_runs_the_command_as_given():
  result = _launch("gpu_local.sh", "--dry-run", *ARGS)
  assert result.returncode == 0, result.stderr
  assert [shlex.split(line) for line in _lines(result.stdout)] == [
      ["python3", "-m", "lookahead_jax.main", *ARGS]]

  result = _launch("gpu_local.sh", "--dry-run", "--gpus=2,3", "--python=/opt/venv/bin/python",
                   *ARGS)
  assert [shlex.split(line) for line in _lines(result.stdout)] == [
      ["env", "CUDA_VISIBLE_DEVICES=2,3", "/opt/venv/bin/python", "-m", "lookahead_jax.main",
       *ARGS]]


def test_gpu_local_processes_split_the_gpus_and_share_a_coordinator(tmp_path):
  logs = str(tmp_path / "logs")
  result = _launch("gpu_local.sh", "--dry-run", "--processes=2", "--port=23456",
                   f"--logdir={logs}", *ARGS, env=_env(CUDA_VISIBLE_DEVICES="4,5,6,7"))
  assert result.returncode == 0, result.stderr
  lines = [shlex.split(line) for line in _lines(result.stdout)]
  assert lines[0] == ["mkdir", "-p", logs] and lines[-1] == ["wait"]
  for i, line in enumerate(lines[1:-1]):
    assert line == ["env", f"CUDA_VISIBLE_DEVICES={('4,5', '6,7')[i]}",
                    "JAX_COORDINATOR_ADDRESS=localhost:23456", "JAX_NUM_PROCESSES=2",
                    f"JAX_PROCESS_ID={i}", "python3", "-m", "lookahead_jax.main", *ARGS,
                    ">", f"{logs}/process_{i}.log", "2>&1", "&"]
  assert len(lines) == 4

  result = _launch("gpu_local.sh", "--dry-run", "--processes=3", "--gpus=0,1,2,3", *ARGS)
  assert result.returncode == 2 and "cannot be split evenly over 3 processes" in result.stderr


def test_gpu_local_cpu_processes(tmp_path):
  result = _launch("gpu_local.sh", "--dry-run", "--cpu=2", "--processes=2",
                   f"--logdir={tmp_path}", *ARGS)
  lines = [shlex.split(line) for line in _lines(result.stdout)]
  assert lines[1][:6] == ["env", "JAX_PLATFORMS=cpu",
                          "XLA_FLAGS=--xla_force_host_platform_device_count=2",
                          "JAX_COORDINATOR_ADDRESS=localhost:12355", "JAX_NUM_PROCESSES=2",
                          "JAX_PROCESS_ID=0"]


# A process that runs until SIGTERM, then prints `message` and exits with `status`.
_WAIT_FOR_SIGTERM = ("sleep 120 & s=$!\n"
                     "trap 'kill $s; echo {message}; exit {status}' TERM\n"
                     "wait\n")


def _fake_python(tmp_path, body):
  """A stand-in for python: logs its process id and argv, then runs `body`."""
  return _stand_in(tmp_path / "python", 'echo "process $JAX_PROCESS_ID argv $*"\n' + body)


def test_gpu_local_stops_every_process_when_one_fails(tmp_path):
  # Process 1 fails at once; process 0 would wait for it forever.
  python = _fake_python(tmp_path, 'if [ "$JAX_PROCESS_ID" = 1 ]; then sleep 1; echo boom >&2; '
                                  "exit 3; fi\n" + _WAIT_FOR_SIGTERM.format(message="got SIGTERM",
                                                                            status=143))
  start = time.monotonic()
  result = _launch("gpu_local.sh", "--processes=2", "--gpus=0,1", f"--python={python}",
                   f"--logdir={tmp_path / 'logs'}", *ARGS, timeout=60)
  assert result.returncode == 3 and time.monotonic() - start < 30
  assert "process 1 exited with status 3" in result.stderr and "boom" in result.stderr
  assert "got SIGTERM" in (tmp_path / "logs" / "process_0.log").read_text()
  assert "process 0 argv -m lookahead_jax.main train" in result.stdout  # process 0's output


def test_gpu_local_forwards_sigterm_to_every_process(tmp_path):
  python = _fake_python(tmp_path, _WAIT_FOR_SIGTERM.format(message="checkpoint saved",
                                                            status=0))
  logs = tmp_path / "logs"
  proc = subprocess.Popen(["bash", os.path.join(LAUNCH, "gpu_local.sh"), "--processes=2",
                           "--gpus=0,1", f"--python={python}", f"--logdir={logs}", *ARGS],
                          cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True)
  try:
    deadline = time.monotonic() + 30
    while not all((logs / f"process_{i}.log").exists() and (logs / f"process_{i}.log").stat()
                  .st_size for i in range(2)):
      assert time.monotonic() < deadline and proc.poll() is None
      time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
  assert proc.returncode == 0, stderr
  for i in range(2):
    assert "checkpoint saved" in (logs / f"process_{i}.log").read_text()


def test_gpu_local_trains_in_two_cpu_processes(tiny_run, tmp_path):
  """A real run: 2 processes x 2 CPU devices under jax.distributed, started by the launcher."""
  workdir, logs = tmp_path / "run", tmp_path / "logs"
  overrides = {**tiny_run, "train.steps": 3, "train.log_every": 1, "train.checkpoint_every": 0,
               "eval.at_end": False}
  args = ["train", f"--config={os.path.join(REPO, 'configs', 'rhyme.py')}",
          f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in overrides.items())]
  env = _env(XLA_FLAGS="--xla_backend_optimization_level=0")  # faster compiles; both alike
  proc = subprocess.Popen(["bash", os.path.join(LAUNCH, "gpu_local.sh"), "--cpu=2",
                           "--processes=2", f"--port={_free_port()}", f"--logdir={logs}",
                           f"--python={sys.executable}", *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)
  try:
    out, _ = proc.communicate(timeout=240)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
  assert proc.returncode == 0, out[-4000:]
  assert "steps        3 of 3" in out  # process 0's summary, streamed by the launcher
  assert "summary:" not in (logs / "process_1.log").read_text()
  data = workdir / "checkpoints" / "3" / "data"
  assert sorted(p.name for p in data.glob("process_*.json")) == [
      "process_0-of-2.json", "process_1-of-2.json"]


def _free_port():
  import socket

  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


# ----------------------------------------------------------------------------- tpu_pod.sh


TPU_ENV = dict(TPU_NAME="lookahead-v4-32", ZONE="us-central2-b", PROJECT="my-project",
               ACCELERATOR_TYPE="v4-32")
TPU_ARGS = ["train", "--config=configs/gpt2_small_v4_32.py", "--workdir=gs://bucket/runs/gpt2",
            "--config.eval.kinds=('beam', 'smc')", "--config.data.options.paths=a file.txt"]


def test_tpu_pod_dry_run_prints_every_gcloud_command(tmp_path):
  log = str(tmp_path / "run.log")
  result = _launch("tpu_pod.sh", "--dry-run", "--delete", "--spot", f"--log={log}", *TPU_ARGS,
                   env=_env(**TPU_ENV, TMPDIR=str(tmp_path)))
  assert result.returncode == 0, result.stderr
  lines = _lines(result.stdout)
  tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
  where = ["--zone=us-central2-b", "--project=my-project"]
  tarball = str(tmp_path / "lookahead_jax-lookahead-v4-32.tar.gz")
  assert shlex.split(lines[0]) == [*tpu, "describe", "lookahead-v4-32", *where,
                                   "--format=value(state)"]
  assert shlex.split(lines[1]) == [*tpu, "create", "lookahead-v4-32", *where,
                                   "--accelerator-type=v4-32",
                                   "--version=tpu-ubuntu2204-base", "--spot"]
  assert lines[2].startswith(f"cd {os.path.realpath(REPO)} && git ls-files") and tarball in lines[2]
  assert shlex.split(lines[3]) == [*tpu, "scp", tarball, "lookahead-v4-32:~/lookahead_jax.tar.gz",
                                   *where, "--worker=all"]
  ssh = [*tpu, "ssh", "lookahead-v4-32", *where, "--worker=all"]
  install, stop, run = (shlex.split(line) for line in lines[4:7])
  for command in (install, stop):
    assert command[:-1] == ssh and command[-1].startswith("--command=")
  assert "pip install -q 'jax[tpu]' -e ~/lookahead_jax gcsfs google-cloud-storage" in install[-1]
  assert run[:len(ssh)] == ssh and run[len(ssh) + 1:] == ["2>&1", "|", "tee", log]
  assert shlex.split(lines[7]) == [*tpu, "delete", "lookahead-v4-32", *where, "--quiet"]
  assert len(lines) == 8

  # No ACCELERATOR_TYPE: the slice must exist, nothing is created.
  env = _env(**{**TPU_ENV, "ACCELERATOR_TYPE": ""})
  result = _launch("tpu_pod.sh", "--dry-run", "--no-setup", *TPU_ARGS, env=env)
  assert [shlex.split(line)[4] for line in _lines(result.stdout)] == ["describe", "ssh", "ssh"]


def _remote_command(line):
  """The --command= of a printed `gcloud ... ssh` line: what bash runs on every worker."""
  command = shlex.split(line)
  remote = [arg for arg in command if arg.startswith("--command=")]
  assert len(remote) == 1, line
  return remote[0][len("--command="):]


def test_tpu_pod_worker_commands_run_the_given_command(tmp_path):
  """The worker side, run here: HOME is a stand-in worker whose venv python records argv."""
  result = _launch("tpu_pod.sh", "--dry-run", "--no-setup", *TPU_ARGS,
                   env=_env(**TPU_ENV, TFDS_DATA_DIR="/mnt/tfds"))
  stop, run = (_remote_command(line) for line in _lines(result.stdout)[-2:])
  home = tmp_path / "worker"
  (home / "lookahead_jax").mkdir(parents=True)
  (home / "lookahead_jax_venv" / "bin").mkdir(parents=True)
  record = home / "argv.json"
  recorder = tmp_path / "recorder.py"
  recorder.write_text(
      "import json, os, sys\n"
      "env = {k: os.environ.get(k) for k in ('LOOKAHEAD_JAX_DISTRIBUTED', 'TFDS_DATA_DIR')}\n"
      "json.dump(dict(argv=sys.argv[2:], cwd=os.getcwd(), env=env, pid=os.getpid()),\n"
      "          open(sys.argv[1], 'w'))\n")
  _stand_in(home / "lookahead_jax_venv" / "bin" / "python",
            f'exec "{sys.executable}" "{recorder}" "{record}" "$@"\n')
  env = _env(HOME=str(home))
  subprocess.run(["bash", "-c", run], env=env, check=True, timeout=30)
  ran = json.loads(record.read_text())
  assert ran["argv"] == ["-m", "lookahead_jax.main", *TPU_ARGS]
  assert ran["cwd"] == str(home / "lookahead_jax")
  assert ran["env"] == {"LOOKAHEAD_JAX_DISTRIBUTED": "auto", "TFDS_DATA_DIR": "/mnt/tfds"}
  pidfile = home / ".lookahead_jax_run.pid"
  assert pidfile.read_text().strip() == str(ran["pid"])  # `exec`: the pid file names python

  # The stop command signals only a live process of ours, and removes the pid file.
  sleeper = subprocess.Popen(["bash", "-c", "exec -a lookahead_jax_stand_in sleep 60"])
  try:
    pidfile.write_text(f"{sleeper.pid}\n")
    subprocess.run(["bash", "-c", stop], env=env, check=True, timeout=30)
    assert sleeper.wait(timeout=10) == -signal.SIGTERM and not pidfile.exists()
  finally:
    if sleeper.poll() is None:
      sleeper.kill()
  subprocess.run(["bash", "-c", stop], env=env, check=True, timeout=30)  # no pid file: a no-op


@pytest.mark.parametrize("env, message", [
    (dict(ZONE="z"), "set TPU_NAME"),
    (dict(TPU_NAME="t"), "set ZONE"),
])
def test_tpu_pod_needs_its_environment(env, message):
  result = _launch("tpu_pod.sh", "--dry-run", *TPU_ARGS, env=_env(**env))
  assert result.returncode == 2 and message in result.stderr


def test_tpu_pod_needs_a_gcs_workdir():
  result = _launch("tpu_pod.sh", "--dry-run", "train", "--config=c.py", "--workdir=/tmp/run",
                   env=_env(**TPU_ENV))
  assert result.returncode == 2 and "use a gs:// path" in result.stderr


# ----------------------------------------------------------------------------- slurm.sbatch


def test_slurm_dry_run_is_one_srun_task_per_gpu():
  args = [a.replace("WORKDIR", "/shared/runs/x") for a in ARGS]
  result = _launch("slurm.sbatch", "--dry-run", *args)
  assert result.returncode == 0, result.stderr
  assert [shlex.split(line) for line in _lines(result.stdout)] == [
      ["srun", "--kill-on-bad-exit=1", "--gpu-bind=none", "python3", "-m",
       "lookahead_jax.main", *args]]
  with open(os.path.join(LAUNCH, "slurm.sbatch")) as f:
    header = [line.split()[1] for line in f if line.startswith("#SBATCH")]
  for option in ("--ntasks-per-node=8", "--gpus-per-node=8", "--signal=TERM@300"):
    assert option in header


def test_slurm_inside_a_job_execs_srun(tmp_path):
  """With a stand-in srun on PATH, as if sbatch had started the script."""
  record = tmp_path / "srun.txt"
  _stand_in(tmp_path / "srun", f'printf "%s\\n" "$@" > "{record}"\n')
  args = [a.replace("WORKDIR", "/shared/runs/x") for a in ARGS]
  env = _env(PATH=f"{tmp_path}:{os.environ['PATH']}", SLURM_JOB_ID="42",
             SLURM_JOB_NUM_NODES="2", PYTHON="/opt/venv/bin/python")
  result = _launch("slurm.sbatch", *args, env=env)
  assert result.returncode == 0, result.stderr
  assert record.read_text().splitlines() == [
      "--kill-on-bad-exit=1", "--gpu-bind=none", "/opt/venv/bin/python", "-m",
      "lookahead_jax.main", *args]

  # outside a job: how to submit it; a node-local workdir on several nodes: refused
  outside = _launch("slurm.sbatch", *args, env=_env(PATH=env["PATH"]))
  assert outside.returncode == 2 and "sbatch launch/slurm.sbatch train" in outside.stderr
  local = _launch("slurm.sbatch", "train", "--config=c.py", "--workdir=/tmp/run", env=env)
  assert local.returncode == 2 and "node-local" in local.stderr


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name, launcher, devices", [
    ("gpt2_small_v4_32.py", "launch/tpu_pod.sh", (16,)),  # v4-32: 16 chips
    ("gpt2_small_8gpu.py", "launch/slurm.sbatch", (8, 16, 32)),  # 1, 2, 4 nodes of 8 GPUs
])
def test_scale_configs(name, launcher, devices):
  path = os.path.join(REPO, "configs", name)
  config = load_config(path)
  with open(path) as f:
    doc = f.read()
  assert launcher in doc and f"--config=configs/{name}" in doc
  assert (config.model.num_layers, config.model.d_model, config.model.num_heads) == (12, 768, 12)
  for n in devices:
    assert config.train.global_batch % n == 0 and config.eval.batch_size % n == 0
  # Every check passes up to the dataset, which is not prepared here.
  with pytest.raises(config_lib.ConfigError, match=r"^data.name='lm1b'"):
    settings_lib.validate(config)
