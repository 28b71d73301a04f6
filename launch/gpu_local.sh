#!/usr/bin/env bash
# Runs a lookahead-jax command on the GPUs of this machine (see usage below).
# Needs launch/common.sh beside it (copy both).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: launch/gpu_local.sh [OPTIONS] COMMAND --config=CONFIG --workdir=DIR [--config.KEY=VALUE ...]

Runs `python -m lookahead_jax.main COMMAND ...` (COMMAND: train, eval or decode) on
the GPUs of this machine.

  --processes=1 (default)  one process drives every visible GPU: JAX's usual
                           single-host set-up, no coordinator. Use it for an
                           8-GPU node.
  --processes=N            N processes, each with its own share of the GPUs
                           (CUDA_VISIBLE_DEVICES), joined by jax.distributed:
                           JAX_COORDINATOR_ADDRESS=localhost:PORT, JAX_NUM_PROCESSES=N
                           and JAX_PROCESS_ID=i. This is the layout of a multi-node
                           job (one process per GPU, as slurm.sbatch runs), on one
                           machine. The GPU count must be a multiple of N.
  --cpu=D                  no GPU: every process runs on the CPU with D simulated
                           devices (XLA_FLAGS=--xla_force_host_platform_device_count=D)
                           and the processes talk over gloo. For trying the
                           multi-process set-up on any machine.

Only process 0 writes metrics, prints the progress bar and writes reports; every
process writes its own checkpoint shards into the workdir, so with several processes
it must be a directory they all see (here: any local path). With several processes
each one's output goes to LOGDIR/process_<i>.log and process 0's is shown here too.
If one process fails, the others are stopped (they would wait for it forever).
Ctrl-C (or SIGTERM to this script) sends SIGTERM to every process: training saves a
checkpoint at the next step and exits; run the same command to resume.

Options:
  --processes=N     processes (default 1)
  --gpus=LIST       GPU indices to use, e.g. 0,1,2,3 (default: $CUDA_VISIBLE_DEVICES,
                    else every GPU that nvidia-smi lists)
  --cpu=D           CPU processes with D devices each instead of GPUs
  --port=PORT       coordinator port on localhost (default: $PORT, else 12355)
  --logdir=DIR      logs of a multi-process run (default: logs/gpu_local-<time>)
  --python=EXE      Python with lookahead_jax installed (default: $PYTHON, else python3)
  --dry-run         print the commands, run nothing
  -h, --help        this help

Environment (read, passed on to the processes):
  CUDA_VISIBLE_DEVICES           the GPUs to use (--gpus overrides it)
  XLA_PYTHON_CLIENT_MEM_FRACTION JAX preallocates this fraction of each GPU (0.75)
  TFDS_DATA_DIR                  where the datasets are prepared
  NCCL_DEBUG                     e.g. WARN, to see NCCL's set-up
Install first: pip install -e . "jax[cuda12]" (in the environment of --python).

Examples:
  launch/gpu_local.sh train --config=configs/gpt2_small_8gpu.py --workdir=/data/runs/gpt2
  launch/gpu_local.sh --processes=8 train --config=configs/gpt2_small_8gpu.py --workdir=/data/runs/gpt2
  launch/gpu_local.sh --cpu=2 --processes=2 train --config=configs/rhyme.py --workdir=/tmp/rhyme2
EOF
}

# shellcheck disable=SC2034  # read by common.sh's die
LAUNCHER=gpu_local.sh
# shellcheck source=/dev/null  # launch/common.sh, checked on its own
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

processes=1 gpus="" cpu="" port="${PORT:-12355}" logdir="" python="${PYTHON:-python3}"
dry_run=0
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --processes=*) processes="${1#*=}" ;;
    --gpus=*) gpus="${1#*=}" ;;
    --cpu=*) cpu="${1#*=}" ;;
    --port=*) port="${1#*=}" ;;
    --logdir=*) logdir="${1#*=}" ;;
    --python=*) python="${1#*=}" ;;
    --dry-run) dry_run=1 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
  shift
done

(($#)) || { usage >&2; exit 2; }
check_command "$@"
[[ "$processes" =~ ^[1-9][0-9]*$ ]] || die "--processes=$processes: give a positive integer"
[[ -z "$cpu" || "$cpu" =~ ^[1-9][0-9]*$ ]] || die "--cpu=$cpu: give a positive integer"
[[ "$port" =~ ^[0-9]+$ ]] || die "--port=$port: give a port number"

program=("$python" -m lookahead_jax.main "$@")

# The GPUs of each process: the list split into `processes` equal consecutive parts.
gpu_list=()
if [[ -z "$cpu" ]]; then
  if [[ -n "$gpus" ]]; then
    IFS=, read -r -a gpu_list <<<"$gpus"
  elif [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
    IFS=, read -r -a gpu_list <<<"$CUDA_VISIBLE_DEVICES"
  elif ((processes > 1)); then
    command -v nvidia-smi >/dev/null || die "nvidia-smi not found: pass --gpus=0,1,... (or --cpu=D)"
    mapfile -t gpu_list < <(nvidia-smi --query-gpu=index --format=csv,noheader)
  fi
  if ((processes > 1)); then
    ((${#gpu_list[@]} > 0)) || die "no GPU found: pass --gpus=0,1,... (or --cpu=D)"
    ((${#gpu_list[@]} % processes == 0)) ||
      die "${#gpu_list[@]} GPUs (${gpu_list[*]}) cannot be split evenly over $processes processes"
  fi
fi

# The environment of process i (as `env` arguments).
process_env() {
  local i=$1 per
  local -a vars=()
  if [[ -n "$cpu" ]]; then
    vars+=(JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=$cpu${XLA_FLAGS:+ $XLA_FLAGS}")
  elif ((${#gpu_list[@]})); then
    per=$((${#gpu_list[@]} / processes))
    local IFS=,
    vars+=("CUDA_VISIBLE_DEVICES=${gpu_list[*]:i*per:per}")
  fi
  if ((processes > 1)); then
    vars+=("JAX_COORDINATOR_ADDRESS=localhost:$port" "JAX_NUM_PROCESSES=$processes"
      "JAX_PROCESS_ID=$i")
  fi
  if ((${#vars[@]})); then printf '%s\n' "${vars[@]}"; fi
}

if ((processes == 1)); then
  mapfile -t vars < <(process_env 0)
  run=("${program[@]}")
  if ((${#vars[@]})); then run=(env "${vars[@]}" "${program[@]}"); fi
  if ((dry_run)); then
    quote "${run[@]}"
    exit 0
  fi
  exec "${run[@]}"
fi

logdir="${logdir:-logs/gpu_local-$(date +%Y%m%d-%H%M%S)}"
if ((dry_run)); then
  quote mkdir -p "$logdir"
  for ((i = 0; i < processes; i++)); do
    mapfile -t vars < <(process_env "$i")
    echo "$(quote env "${vars[@]}" "${program[@]}") > $(quote "$logdir/process_$i.log") 2>&1 &"
  done
  quote wait
  exit 0
fi

mkdir -p "$logdir"
pids=()
signal_all() {  # signal_all SIGNAL: to every process still running
  local pid
  for pid in "${pids[@]}"; do
    kill -"$1" "$pid" 2>/dev/null || true
  done
}
any_running() {
  local pid
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then return 0; fi
  done
  return 1
}
# SIGTERM makes training save a checkpoint at the next step and exit.
trap 'echo "gpu_local.sh: stopping (SIGTERM to every process)" >&2; signal_all TERM' INT TERM
# Background processes of a script ignore SIGINT; Ctrl-C reaches them as SIGTERM.
for ((i = 0; i < processes; i++)); do
  mapfile -t vars < <(process_env "$i")
  : >"$logdir/process_$i.log"  # exists before `tail -f` opens it, however late the child starts
  env "${vars[@]}" "${program[@]}" >>"$logdir/process_$i.log" 2>&1 &
  pids+=($!)
done
echo "gpu_local.sh: $processes processes (pids ${pids[*]}), logs in $logdir/" >&2
tail -n +1 -f --pid="${pids[0]}" "$logdir/process_0.log" &
tail_pid=$!

# Wait for every process; when one fails, stop the others (they would wait for it at
# the next collective) and exit with its status.
status=0 failed=""
declare -A done_pids=()
while ((${#done_pids[@]} < processes)); do
  for i in "${!pids[@]}"; do
    [[ -n "${done_pids[$i]:-}" ]] && continue
    kill -0 "${pids[$i]}" 2>/dev/null && continue
    code=0
    wait "${pids[$i]}" || code=$?
    done_pids[$i]=$code
    if ((code != 0 && status == 0)); then
      status=$code failed=$i
      echo "gpu_local.sh: process $i exited with status $code; stopping the others" >&2
      signal_all TERM
      grace=$((SECONDS + 30))
      while ((SECONDS < grace)) && any_running; do sleep 1; done
      signal_all KILL
    fi
  done
  if ((${#done_pids[@]} < processes)); then sleep 1; fi
done
wait "$tail_pid" 2>/dev/null || true
if ((status != 0)); then
  echo "gpu_local.sh: process $failed failed; the end of $logdir/process_$failed.log:" >&2
  tail -n 30 "$logdir/process_$failed.log" >&2
fi
exit "$status"
