#!/usr/bin/env bash
# Runs a lookahead-jax command on every worker of a Cloud TPU VM slice (see usage below).
# Needs launch/common.sh beside it (copy both).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: launch/tpu_pod.sh [OPTIONS] COMMAND --config=CONFIG --workdir=gs://BUCKET/DIR [--config.KEY=VALUE ...]

Runs `python -m lookahead_jax.main COMMAND ...` (COMMAND: train, eval or decode) on
every host of a Cloud TPU VM slice at once, one process per host. The processes find
each other with jax.distributed.initialize() and no arguments (the launcher sets
LOOKAHEAD_JAX_DISTRIBUTED=auto; JAX reads the slice's workers from the TPU metadata).

Steps, each printed before it runs:
  1. reuse the slice TPU_NAME, or create it (ACCELERATOR_TYPE, RUNTIME_VERSION);
  2. copy this checkout (tracked and untracked files that git does not ignore) to
     every worker and install it into ~/lookahead_jax_venv (skip with --no-setup);
  3. stop an earlier run of this launcher still holding the TPU (SIGTERM, then KILL
     after 120 s);
  4. run the command on all workers (gcloud ... ssh --worker=all) and stream the
     output of every worker here, also into LOGFILE;
  5. with --delete, delete the slice when the command ends (also after a failure).
Ctrl-C stops the run: every worker gets SIGTERM, training saves a checkpoint at the
next step and exits. Run the same command again to resume from the workdir.

The workdir must be a gs:// path that every worker can write (checkpoint shards come
from every host, metrics and reports from host 0). Datasets: every worker reads
TFDS_DATA_DIR (default ~/tensorflow_datasets on each worker); prepare them there
before the run, or point TFDS_DATA_DIR at storage that every worker mounts.

Options:
  --no-setup       do not copy or install the project (the workers have it already)
  --delete         delete the slice when the command ends
  --spot           create the slice as a Spot VM
  --log=FILE       local copy of the streamed output (default: logs/tpu_<TPU_NAME>-<time>.log)
  --dry-run        print the commands, run nothing (no gcloud call at all)
  -h, --help       this help

Environment:
  TPU_NAME          name of the TPU VM slice (required)
  ZONE              its zone, e.g. us-central2-b (required)
  PROJECT           Google Cloud project (default: gcloud's configured project)
  ACCELERATOR_TYPE  slice to create when TPU_NAME does not exist, e.g. v4-32
  RUNTIME_VERSION   TPU VM image to create it with (default: tpu-ubuntu2204-base)
  JAX_SPEC          pip requirement for JAX on the workers (default: jax[tpu])
  TFDS_DATA_DIR     data dir on the workers (passed on when set)

Example (a v4-32 slice: 4 hosts x 4 chips):
  TPU_NAME=lookahead-v4-32 ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 \
    launch/tpu_pod.sh train --config=configs/gpt2_small_v4_32.py \
    --workdir=gs://my-bucket/lookahead/gpt2_small
EOF
}

# shellcheck disable=SC2034  # read by common.sh's die
LAUNCHER=tpu_pod.sh
# shellcheck source=/dev/null  # launch/common.sh, checked on its own
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

setup=1 delete=0 spot=0 logfile="" dry_run=0
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --no-setup) setup=0 ;;
    --delete) delete=1 ;;
    --spot) spot=1 ;;
    --log=*) logfile="${1#*=}" ;;
    --dry-run) dry_run=1 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
  shift
done

(($#)) || { usage >&2; exit 2; }
workdir=""
check_command "$@"
[[ "$workdir" == gs://?* ]] ||
  die "--workdir=$workdir: use a gs:// path; every host writes its checkpoint shards there (a local path would scatter them over the workers' disks)"
[[ -n "${TPU_NAME:-}" ]] || die "set TPU_NAME (the slice's name; see --help)"
[[ -n "${ZONE:-}" ]] || die "set ZONE (the slice's zone; see --help)"

runtime_version="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
jax_spec="${JAX_SPEC:-jax[tpu]}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tarball="${TMPDIR:-/tmp}/lookahead_jax-$TPU_NAME.tar.gz"
logfile="${logfile:-logs/tpu_$TPU_NAME-$(date +%Y%m%d-%H%M%S).log}"
# Paths on the workers; `~` expands there.
# shellcheck disable=SC2088
remote_dir='~/lookahead_jax' remote_venv='~/lookahead_jax_venv' pidfile='~/.lookahead_jax_run.pid'

tpu=(gcloud compute tpus tpu-vm)
where=("--zone=$ZONE")
if [[ -n "${PROJECT:-}" ]]; then where+=("--project=$PROJECT"); fi

# Remote shell snippets (run by bash on every worker).
install_cmd="set -e; rm -rf $remote_dir; mkdir -p $remote_dir; tar -xzf ~/lookahead_jax.tar.gz -C $remote_dir; \
python3 -m venv $remote_venv || { sudo apt-get -qq update && sudo apt-get -qq install -y python3-venv && python3 -m venv $remote_venv; }; \
$remote_venv/bin/pip install -q --upgrade pip; \
$remote_venv/bin/pip install -q $(quote "$jax_spec") -e $remote_dir gcsfs google-cloud-storage"
# Stops the run recorded in the pid file while that process is still ours (its command
# line names lookahead_jax; an exited one has none): SIGTERM, then KILL after 120 s.
stop_cmd="f=$pidfile; if [ -f \$f ]; then p=\$(cat \$f); ours() { grep -qs lookahead_jax /proc/\$p/cmdline; }; \
if ours; then kill -TERM \$p; for _ in \$(seq 120); do ours || break; sleep 1; done; \
if ours; then kill -KILL \$p; fi; fi; rm -f \$f; fi"
run_env=(LOOKAHEAD_JAX_DISTRIBUTED=auto)
if [[ -n "${TFDS_DATA_DIR:-}" ]]; then run_env+=("TFDS_DATA_DIR=$TFDS_DATA_DIR"); fi
# `exec` keeps the shell's pid, which the pid file records, for the Python process.
run_cmd="cd $remote_dir && echo \$\$ > $pidfile && exec env $(quote "${run_env[@]}") \
$remote_venv/bin/python $(quote -m lookahead_jax.main "$@")"

show() {  # prints a command; runs it unless --dry-run
  quote "$@"
  ((dry_run)) || "$@"
}

ssh_all() {  # ssh_all REMOTE_COMMAND: on every worker
  show "${tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all "--command=$1"
}

# 1. Reuse or create the slice.
create=("${tpu[@]}" create "$TPU_NAME" "${where[@]}" "--accelerator-type=${ACCELERATOR_TYPE:-}"
  "--version=$runtime_version")
if ((spot)); then create+=(--spot); fi
describe=("${tpu[@]}" describe "$TPU_NAME" "${where[@]}" '--format=value(state)')
if ((dry_run)); then
  quote "${describe[@]}"
  if [[ -n "${ACCELERATOR_TYPE:-}" ]]; then
    echo "# only if $TPU_NAME does not exist yet:"
    quote "${create[@]}"
  fi
elif state="$(quote "${describe[@]}" >&2; "${describe[@]}" 2>/dev/null)"; then
  echo "tpu_pod.sh: reusing $TPU_NAME (state $state)" >&2
else
  [[ -n "${ACCELERATOR_TYPE:-}" ]] ||
    die "$TPU_NAME does not exist in $ZONE; set ACCELERATOR_TYPE (e.g. v4-32) to create it"
  show "${create[@]}"
fi

# shellcheck disable=SC2317  # (called by the EXIT trap)
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if ((delete)); then
    show "${tpu[@]}" delete "$TPU_NAME" "${where[@]}" --quiet || status=$?
  fi
  exit "$status"
}
((dry_run)) || trap cleanup EXIT

# 2. Copy and install the project.
if ((setup)); then
  pack="cd $(quote "$repo") && git ls-files -z --cached --others --exclude-standard | tar --null -T - -czf $(quote "$tarball")"
  echo "$pack"
  ((dry_run)) || bash -c "$pack"
  show "${tpu[@]}" scp "$tarball" "$TPU_NAME:~/lookahead_jax.tar.gz" "${where[@]}" --worker=all
  ssh_all "$install_cmd"
fi

# 3. Stop an earlier run still holding the TPU.
ssh_all "$stop_cmd"

# 4. Run on every worker, streaming every worker's output.
# shellcheck disable=SC2317  # (called by the INT and TERM traps)
on_interrupt() {
  trap - INT TERM
  echo "tpu_pod.sh: stopping the run on every worker (SIGTERM: checkpoint and exit)" >&2
  ssh_all "$stop_cmd" || true
  exit 130
}
if ((dry_run)); then
  echo "$(quote "${tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all "--command=$run_cmd") 2>&1 | tee $(quote "$logfile")"
  if ((delete)); then quote "${tpu[@]}" delete "$TPU_NAME" "${where[@]}" --quiet; fi
  exit 0
fi
trap on_interrupt INT TERM
mkdir -p "$(dirname "$logfile")"
quote "${tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all "--command=$run_cmd" >&2
set +e
"${tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all "--command=$run_cmd" 2>&1 | tee "$logfile"
status=${PIPESTATUS[0]}
set -e
echo "tpu_pod.sh: the command ended with status $status; output in $logfile" >&2
exit "$status"
