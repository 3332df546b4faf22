#!/usr/bin/env bash
# One process of a multi-node GPU run of avsf_jax: run it once on every node.
#
#   launch/gpu_multinode.sh --coordinator=node0:1234 --num_processes=2 --process_id=0 \
#       --workdir=/shared/runs/r50 [--config=configs/kinetics_r50.py] \
#       [--data_dir=/shared/tfds] [-- --config.optim.num_epochs=10 ...]
#
# It sets JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (which
# avsf_jax.main hands to jax.distributed.initialize) and runs `python -m avsf_jax.main`.
# Under SLURM, --num_processes and --process_id default to SLURM_NTASKS and SLURM_PROCID.
# --dry-run prints the environment and the command and runs nothing. The workdir must be on
# storage every node sees. The Python is $PYTHON (default python3; use the venv's).
set -euo pipefail

usage() {
  # The comment block at the top of this file, without the '# '.
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

die() {
  echo "gpu_multinode.sh: $*" >&2
  exit 2
}

# One word as the shell reads it back: bare when it is safe, else single-quoted.
quote() {
  local s="$1" prefix=''
  if [[ "${s}" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "${s}"
    return
  fi
  if [[ "${s}" =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    prefix="${BASH_REMATCH[1]}"
    s="${BASH_REMATCH[2]}"
  fi
  printf "%s'%s'" "${prefix}" "${s//\'/\'\\\'\'}"
}

main() {
  local coordinator='' num_processes="${SLURM_NTASKS:-}" process_id="${SLURM_PROCID:-}"
  local config='configs/kinetics_r50.py' workdir='' data_dir='' dry_run=0
  local python="${PYTHON:-python3}"
  local extra=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --coordinator=*) coordinator="${1#*=}" ;;
      --num_processes=*) num_processes="${1#*=}" ;;
      --process_id=*) process_id="${1#*=}" ;;
      --config=*) config="${1#*=}" ;;
      --workdir=*) workdir="${1#*=}" ;;
      --data_dir=*) data_dir="${1#*=}" ;;
      --python=*) python="${1#*=}" ;;
      --dry-run | --dry_run) dry_run=1 ;;
      -h | --help)
        usage
        exit 0
        ;;
      --)
        shift
        extra=("$@")
        break
        ;;
      *) die "unknown argument '$1' (flags are --flag=value; see --help)" ;;
    esac
    shift
  done

  [[ -n "${coordinator}" ]] || die 'missing required flag --coordinator=HOST:PORT'
  [[ "${coordinator}" =~ ^.+:[0-9]+$ ]] ||
    die "--coordinator must be HOST:PORT, got '${coordinator}'"
  [[ -n "${num_processes}" ]] || die 'missing required flag --num_processes=N (or SLURM_NTASKS)'
  [[ -n "${process_id}" ]] || die 'missing required flag --process_id=I (or SLURM_PROCID)'
  [[ "${num_processes}" =~ ^[1-9][0-9]*$ ]] ||
    die "--num_processes must be a positive integer, got '${num_processes}'"
  if ! [[ "${process_id}" =~ ^[0-9]+$ ]] || ((10#${process_id} >= 10#${num_processes})); then
    die "--process_id must be an integer in [0, ${num_processes}), got '${process_id}'"
  fi
  [[ -n "${workdir}" ]] || die 'missing required flag --workdir=DIR (shared by every node)'

  local command=("${python}" -m avsf_jax.main "--config=${config}" "--workdir=${workdir}")
  if [[ -n "${data_dir}" ]]; then
    command+=("--config.input.data_dir=${data_dir}")
  fi
  command+=("${extra[@]}")

  export JAX_COORDINATOR_ADDRESS="${coordinator}"
  export JAX_NUM_PROCESSES="${num_processes}"
  export JAX_PROCESS_ID="${process_id}"
  local words=() word
  for word in "${command[@]}"; do
    words+=("$(quote "${word}")")
  done
  local env_lines
  env_lines="$(printf '%s\n' "JAX_COORDINATOR_ADDRESS=$(quote "${coordinator}")" \
    "JAX_NUM_PROCESSES=${num_processes}" "JAX_PROCESS_ID=${process_id}")"
  if [[ "${dry_run}" == 1 ]]; then
    printf '%s\n%s\n' "${env_lines}" "${words[*]}"
    return
  fi
  printf '%s\n+ %s\n' "${env_lines}" "${words[*]}" >&2
  exec "${command[@]}"
}

main "$@"
