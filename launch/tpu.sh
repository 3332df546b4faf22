#!/usr/bin/env bash
# Cloud TPU VMs and pod slices for avsf_jax: create, install, run, logs, stop, delete.
#
#   launch/tpu.sh create  --name=avsf --zone=us-central2-b --accelerator=v4-32 --spot
#   launch/tpu.sh queue   --name=avsf --zone=us-central2-b --accelerator=v4-32 --spot
#   launch/tpu.sh install --name=avsf --zone=us-central2-b [--repo=https://github.com/...]
#   launch/tpu.sh run     --name=avsf --zone=us-central2-b --workdir=gs://BUCKET/runs/r50 \
#       --data_dir=gs://BUCKET/tfds [--config=configs/kinetics_r50.py] [-- --config.x=y ...]
#   launch/tpu.sh run     ... --module=evaluate -- --output=results.json
#   launch/tpu.sh logs    --name=avsf --zone=us-central2-b [--worker=0] [--module=main]
#   launch/tpu.sh stop    --name=avsf --zone=us-central2-b
#   launch/tpu.sh delete  --name=avsf --zone=us-central2-b [--queue]
#
# Every subcommand takes --dry-run: it prints the exact commands and runs none of them.
# Defaults come from the environment: PROJECT, ZONE, TPU_NAME, ACCELERATOR (v4-32),
# RUNTIME_VERSION (tpu-ubuntu2204-base), REPO_URL, PYTHON_VERSION (3.11). launch/README.md
# walks through a whole run.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
# Paths on every worker, relative to the login directory the ssh command starts in.
readonly REMOTE_DIR='avsf_jax'
readonly REMOTE_LOG_DIR='avsf_logs'

usage() {
  # The comment block at the top of this file, without the '# '.
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
  cat <<'EOF'

Flags (--flag=value):
  --name         TPU name (env TPU_NAME; required)
  --zone         zone (env ZONE; required)
  --project      GCP project (env PROJECT; default: gcloud's configured project)
  --accelerator  accelerator type (env ACCELERATOR; default v4-32)
  --version      TPU VM runtime version (env RUNTIME_VERSION; default tpu-ubuntu2204-base)
  --spot         create: a Spot TPU (preemptible; training resumes from the workdir)
  --queue        create/delete: through a queued resource (`queue` = `create --queue`)
  --repo         install: git URL to clone (env REPO_URL; default: copy this checkout's HEAD)
  --ref          install: branch or tag to clone (default: the repository's default branch)
  --python_version  install: Python for the workers' venv (env PYTHON_VERSION; default 3.11)
  --config       run: config file[:variant] (default configs/kinetics_r50.py)
  --workdir      run: gs:// directory for checkpoints and results (required)
  --data_dir     run: gs:// directory of the prepared TFDS datasets (config.input.data_dir)
  --module       run/logs/stop: main (train + eval) or evaluate (avsf_jax.<module>; default main)
  --worker       logs: which worker's log to stream (default 0)
  --dry-run      print the commands, run nothing
  -- ARGS        run: more flags for the module (e.g. --config.optim.num_epochs=10)
EOF
}

die() {
  echo "tpu.sh: $*" >&2
  exit 2
}

# One word as the shell reads it back: bare when it is safe, else single-quoted (only the
# value of a --flag=value word, so that it reads --command='...').
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

# A command line from its words, each quoted, so that it can be pasted into a shell.
join_quoted() {
  local out=() word
  for word in "$@"; do
    out+=("$(quote "${word}")")
  done
  printf '%s\n' "${out[*]}"
}

# Prints the command (stdout on --dry-run, else stderr with a '+ ') and runs it unless dry.
run_cmd() {
  if [[ "${DRY_RUN}" == 1 ]]; then
    join_quoted "$@"
  else
    printf '+ %s\n' "$(join_quoted "$@")" >&2
    "$@"
  fi
}

# Fails with the flag's name (and its environment variable, if it has one) when it is empty.
require() {
  local value="$1" flag="$2" env_name="${3:-}"
  if [[ -z "${value}" ]]; then
    die "${SUBCOMMAND}: missing required flag ${flag}${env_name:+ (or set ${env_name})}"
  fi
}

# Flags every gcloud call shares.
location_flags() {
  LOCATION=("--zone=${ZONE}")
  if [[ -n "${PROJECT}" ]]; then
    LOCATION+=("--project=${PROJECT}")
  fi
}

# `gcloud compute tpus tpu-vm ssh` on the given worker(s) running one remote command line.
ssh_cmd() {
  local worker="$1" command="$2"
  run_cmd gcloud compute tpus tpu-vm ssh "${TPU_NAME}" "${LOCATION[@]}" \
    "--worker=${worker}" "--command=${command}"
}

cmd_create() {
  require "${ACCELERATOR}" --accelerator ACCELERATOR
  require "${RUNTIME_VERSION}" --version RUNTIME_VERSION
  local spot=()
  if [[ "${SPOT}" == 1 ]]; then
    spot=(--spot)
  fi
  if [[ "${QUEUE}" == 1 ]]; then
    run_cmd gcloud compute tpus queued-resources create "${TPU_NAME}" "${LOCATION[@]}" \
      "--node-id=${TPU_NAME}" "--accelerator-type=${ACCELERATOR}" \
      "--runtime-version=${RUNTIME_VERSION}" "${spot[@]}"
  else
    run_cmd gcloud compute tpus tpu-vm create "${TPU_NAME}" "${LOCATION[@]}" \
      "--accelerator-type=${ACCELERATOR}" "--version=${RUNTIME_VERSION}" "${spot[@]}"
  fi
}

cmd_install() {
  local jax_version
  jax_version="$(sed -n 's/^jax==//p' "${REPO_ROOT}/constraints.txt")"
  [[ -n "${jax_version}" ]] || die "install: no jax==VERSION line in ${REPO_ROOT}/constraints.txt"
  local fetch
  if [[ -n "${REPO_URL}" ]]; then
    local branch=()
    if [[ -n "${REF}" ]]; then
      branch=(--branch "${REF}")
    fi
    fetch="if [ -d ${REMOTE_DIR}/.git ]; then git -C ${REMOTE_DIR} pull -q --ff-only;"
    fetch+=" else $(join_quoted git clone -q "${branch[@]}" "${REPO_URL}" "${REMOTE_DIR}"); fi"
  else
    # No repository URL: ship this checkout's HEAD (committed files only) to every worker.
    local archive="/tmp/avsf_jax-${TPU_NAME}.tar.gz"
    run_cmd git -C "${REPO_ROOT}" archive --format=tar.gz "--prefix=${REMOTE_DIR}/" \
      -o "${archive}" HEAD
    run_cmd gcloud compute tpus tpu-vm scp "${archive}" "${TPU_NAME}:avsf_jax.tar.gz" \
      "${LOCATION[@]}" --worker=all
    fetch='tar -xzf avsf_jax.tar.gz'
  fi
  # numpy and jax need Python >= 3.11, newer than the TPU images' python3: uv provides it.
  # Single quotes on purpose: $HOME expands on the worker.
  # shellcheck disable=SC2016
  local steps=(
    'set -e'
    'command -v git >/dev/null || (sudo apt-get -qq update && sudo apt-get -qq install -y git)'
    "${fetch}"
    "cd ${REMOTE_DIR}"
    '[ -x "$HOME/.local/bin/uv" ] || curl -LsSf https://astral.sh/uv/install.sh | sh'
    "\$HOME/.local/bin/uv venv -q --seed --allow-existing --python=${PYTHON_VERSION} .venv"
    '.venv/bin/pip install -q -c constraints.txt -e .'
    "$(join_quoted .venv/bin/pip install -q -c constraints.txt "jax[tpu]==${jax_version}")"
    '.venv/bin/python -c "import jax, avsf_jax; print(jax.__version__)"'
  )
  local joined
  joined="$(printf '%s; ' "${steps[@]}")"
  ssh_cmd all "${joined%; }"
}

cmd_run() {
  require "${WORKDIR}" --workdir
  local main=(.venv/bin/python -m "avsf_jax.${MODULE}" "--config=${CONFIG}" "--workdir=${WORKDIR}")
  if [[ -n "${DATA_DIR}" ]]; then
    main+=("--config.input.data_dir=${DATA_DIR}")
  fi
  main+=("${EXTRA_ARGS[@]}")
  # Detached, so the ssh session can end; each worker logs to its own disk.
  local command="cd ${REMOTE_DIR} && mkdir -p ../${REMOTE_LOG_DIR} && "
  command+="TF_CPP_MIN_LOG_LEVEL=2 nohup $(join_quoted "${main[@]}")"
  command+=" > ../${REMOTE_LOG} 2>&1 < /dev/null & echo \$! > ../${REMOTE_PID}"
  ssh_cmd all "${command}"
}

cmd_logs() {
  [[ "${WORKER}" =~ ^[0-9]+$ ]] || die "logs: --worker must be a worker index, got '${WORKER}'"
  ssh_cmd "${WORKER}" "tail -n +1 -F ${REMOTE_LOG}"
}

cmd_stop() {
  # SIGTERM makes training save a checkpoint at the current step before it exits.
  ssh_cmd all "if [ -f ${REMOTE_PID} ]; then kill -TERM \$(cat ${REMOTE_PID}) || true; fi"
}

cmd_delete() {
  if [[ "${QUEUE}" == 1 ]]; then
    run_cmd gcloud compute tpus queued-resources delete "${TPU_NAME}" "${LOCATION[@]}" \
      --force --quiet
  else
    run_cmd gcloud compute tpus tpu-vm delete "${TPU_NAME}" "${LOCATION[@]}" --quiet
  fi
}

main() {
  if [[ $# -eq 0 ]]; then
    usage >&2
    exit 2
  fi
  SUBCOMMAND="$1"
  shift
  case "${SUBCOMMAND}" in
    -h | --help | help)
      usage
      exit 0
      ;;
    create | install | run | logs | stop | delete) QUEUE=0 ;;
    queue)
      SUBCOMMAND=create
      QUEUE=1
      ;;
    *) die "unknown subcommand '${SUBCOMMAND}' (expected create, queue, install, run, logs, stop, delete)" ;;
  esac

  PROJECT="${PROJECT:-}"
  ZONE="${ZONE:-}"
  TPU_NAME="${TPU_NAME:-}"
  ACCELERATOR="${ACCELERATOR:-v4-32}"
  RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
  REPO_URL="${REPO_URL:-}"
  PYTHON_VERSION="${PYTHON_VERSION:-3.11}"
  REF=''
  CONFIG='configs/kinetics_r50.py'
  WORKDIR=''
  DATA_DIR=''
  WORKER=0
  MODULE=main
  SPOT=0
  DRY_RUN=0
  EXTRA_ARGS=()

  while [[ $# -gt 0 ]]; do
    case "$1" in
      --name=*) TPU_NAME="${1#*=}" ;;
      --zone=*) ZONE="${1#*=}" ;;
      --project=*) PROJECT="${1#*=}" ;;
      --accelerator=*) ACCELERATOR="${1#*=}" ;;
      --version=*) RUNTIME_VERSION="${1#*=}" ;;
      --repo=*) REPO_URL="${1#*=}" ;;
      --ref=*) REF="${1#*=}" ;;
      --python_version=*) PYTHON_VERSION="${1#*=}" ;;
      --config=*) CONFIG="${1#*=}" ;;
      --workdir=*) WORKDIR="${1#*=}" ;;
      --data_dir=*) DATA_DIR="${1#*=}" ;;
      --worker=*) WORKER="${1#*=}" ;;
      --module=*) MODULE="${1#*=}" ;;
      --spot) SPOT=1 ;;
      --queue) QUEUE=1 ;;
      --dry-run | --dry_run) DRY_RUN=1 ;;
      -h | --help)
        usage
        exit 0
        ;;
      --)
        shift
        EXTRA_ARGS=("$@")
        break
        ;;
      *) die "${SUBCOMMAND}: unknown argument '$1' (flags are --flag=value; see --help)" ;;
    esac
    shift
  done

  require "${TPU_NAME}" --name TPU_NAME
  require "${ZONE}" --zone ZONE
  if [[ ${#EXTRA_ARGS[@]} -gt 0 && "${SUBCOMMAND}" != run ]]; then
    die "${SUBCOMMAND}: arguments after -- are only for run"
  fi
  case "${MODULE}" in
    main | evaluate) ;;
    *) die "${SUBCOMMAND}: --module must be main or evaluate, got '${MODULE}'" ;;
  esac
  # Each module logs to its own file on every worker's disk.
  REMOTE_LOG="${REMOTE_LOG_DIR}/${MODULE}.log"
  REMOTE_PID="${REMOTE_LOG_DIR}/${MODULE}.pid"
  location_flags
  "cmd_${SUBCOMMAND}"
}

main "$@"
