# shellcheck shell=bash
# What gpu_local.sh and tpu_pod.sh share; they source it (set LAUNCHER first).
# slurm.sbatch keeps its own copy: SLURM runs a copy of that file from its spool
# directory, where nothing sits beside it.

# die MESSAGE: "<launcher>: MESSAGE" on stderr, exit status 2.
die() {
  echo "$LAUNCHER: $*" >&2
  exit 2
}

# Prints its arguments as one shell command line, quoting only what needs it.
quote() {
  local out="" arg
  for arg in "$@"; do
    if [[ -n "$arg" && "$arg" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+="$arg "
    else
      out+="'${arg//\'/\'\\\'\'}' "
    fi
  done
  printf '%s\n' "${out% }"
}

# check_command COMMAND ARGS...: COMMAND is train, eval or decode and ARGS name
# --config= and --workdir=; sets `workdir`.
check_command() {
  case "$1" in
    train | eval | decode) ;;
    *) die "COMMAND must be train, eval or decode, not '$1' (see --help)" ;;
  esac
  local has_config=0 arg
  workdir=""
  for arg in "$@"; do
    case "$arg" in
      --config=?*) has_config=1 ;;
      --workdir=?*) workdir="${arg#--workdir=}" ;;
    esac
  done
  ((has_config)) || die "give --config=CONFIG after the command"
  [[ -n "$workdir" ]] || die "give --workdir=DIR after the command"
}
