"""launch/*.sh with --dry-run: the exact commands they would run, and their errors."""

import os
import pathlib
import shlex
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TPU = str(REPO / 'launch' / 'tpu.sh')
GPU = str(REPO / 'launch' / 'gpu_multinode.sh')
JAX_VERSION = next(
  line.split('==')[1].strip()
  for line in (REPO / 'constraints.txt').read_text().splitlines()
  if line.startswith('jax==')
)


@pytest.fixture(autouse=True, scope='module')
def _no_real_cloud_tools(tmp_path_factory):
  """Puts failing stand-ins for gcloud and gsutil first on PATH: a test never reaches a cloud."""
  global _SHIMS
  _SHIMS = tmp_path_factory.mktemp('shims')
  for tool in ('gcloud', 'gsutil'):
    shim = _SHIMS / tool
    shim.write_text(f'#!/bin/sh\necho "{tool} must not run in tests" >&2\nexit 99\n')
    shim.chmod(0o755)


_SHIMS = None


def launch(script, *args, env=None):
  """Runs a launch script under bash with a clean environment (plus `env`)."""
  clean = {'PATH': f'{_SHIMS}:{os.environ["PATH"]}', 'HOME': os.environ.get('HOME', '/tmp')}
  clean.update(env or {})
  return subprocess.run(
    ['bash', script, *args], env=clean, capture_output=True, text=True, timeout=30, cwd=REPO
  )


def dry_run(script, *args, env=None) -> list[list[str]]:
  """The commands a --dry-run prints, each split into words as a shell would."""
  args = list(args)
  at = args.index('--') if '--' in args else len(args)  # after `--` flags go to avsf_jax.main
  proc = launch(script, *args[:at], '--dry-run', *args[at:], env=env)
  assert proc.returncode == 0, proc.stderr
  return [shlex.split(line) for line in proc.stdout.splitlines()]


_WHERE = ('--name=avsf-pod', '--zone=us-central2-b')


def ssh(worker, command, zone='us-central2-b', name='avsf-pod'):
  return [
    'gcloud',
    'compute',
    'tpus',
    'tpu-vm',
    'ssh',
    name,
    f'--zone={zone}',
    f'--worker={worker}',
    f'--command={command}',
  ]


# tpu.sh create / queue / delete


def test_create_on_demand_with_defaults():
  assert dry_run(TPU, 'create', *_WHERE) == [
    'gcloud compute tpus tpu-vm create avsf-pod --zone=us-central2-b '
    '--accelerator-type=v4-32 --version=tpu-ubuntu2204-base'.split()
  ]


def test_create_spot_with_project_accelerator_and_version():
  commands = dry_run(
    TPU,
    'create',
    *_WHERE,
    '--project=my-proj',
    '--accelerator=v5p-64',
    '--version=v2-alpha',
    '--spot',
  )
  assert commands == [
    'gcloud compute tpus tpu-vm create avsf-pod --zone=us-central2-b --project=my-proj '
    '--accelerator-type=v5p-64 --version=v2-alpha --spot'.split()
  ]


def test_queue_creates_a_spot_queued_resource():
  assert dry_run(TPU, 'queue', *_WHERE, '--spot') == [
    'gcloud compute tpus queued-resources create avsf-pod --zone=us-central2-b '
    '--node-id=avsf-pod --accelerator-type=v4-32 --runtime-version=tpu-ubuntu2204-base '
    '--spot'.split()
  ]
  assert dry_run(TPU, 'create', *_WHERE, '--queue', '--spot') == dry_run(
    TPU, 'queue', *_WHERE, '--spot'
  )


def test_flags_default_from_the_environment():
  env = {
    'TPU_NAME': 'envtpu',
    'ZONE': 'europe-west4-a',
    'PROJECT': 'envproj',
    'ACCELERATOR': 'v3-8',
    'RUNTIME_VERSION': 'tpu-vm-base',
  }
  assert dry_run(TPU, 'create', env=env) == [
    'gcloud compute tpus tpu-vm create envtpu --zone=europe-west4-a --project=envproj '
    '--accelerator-type=v3-8 --version=tpu-vm-base'.split()
  ]
  # A flag wins over the environment.
  assert dry_run(TPU, 'create', '--accelerator=v4-8', env=env)[0][8] == '--accelerator-type=v4-8'


def test_delete_tpu_vm_and_queued_resource():
  assert dry_run(TPU, 'delete', *_WHERE) == [
    'gcloud compute tpus tpu-vm delete avsf-pod --zone=us-central2-b --quiet'.split()
  ]
  assert dry_run(TPU, 'delete', *_WHERE, '--queue') == [
    'gcloud compute tpus queued-resources delete avsf-pod --zone=us-central2-b '
    '--force --quiet'.split()
  ]


# tpu.sh install / run / logs / stop


def _install_steps(fetch):
  return '; '.join(
    [
      'set -e',
      'command -v git >/dev/null || (sudo apt-get -qq update && sudo apt-get -qq install -y git)',
      fetch,
      'cd avsf_jax',
      '[ -x "$HOME/.local/bin/uv" ] || curl -LsSf https://astral.sh/uv/install.sh | sh',
      '$HOME/.local/bin/uv venv -q --seed --allow-existing --python=3.11 .venv',
      '.venv/bin/pip install -q -c constraints.txt -e .',
      f".venv/bin/pip install -q -c constraints.txt 'jax[tpu]=={JAX_VERSION}'",
      '.venv/bin/python -c "import jax, avsf_jax; print(jax.__version__)"',
    ]
  )


def test_install_clones_on_every_worker_and_pins_tpu_jax():
  commands = dry_run(
    TPU, 'install', *_WHERE, '--repo=https://github.com/org/avsf_jax.git', '--ref=v0.1'
  )
  fetch = (
    'if [ -d avsf_jax/.git ]; then git -C avsf_jax pull -q --ff-only; '
    'else git clone -q --branch v0.1 https://github.com/org/avsf_jax.git avsf_jax; fi'
  )
  assert commands == [ssh('all', _install_steps(fetch))]


def test_install_without_repo_copies_this_checkout_to_every_worker():
  commands = dry_run(TPU, 'install', *_WHERE)
  archive = '/tmp/avsf_jax-avsf-pod.tar.gz'
  assert commands == [
    ['git', '-C', str(REPO), 'archive', '--format=tar.gz', '--prefix=avsf_jax/', '-o', archive]
    + ['HEAD'],
    'gcloud compute tpus tpu-vm scp'.split()
    + [archive, 'avsf-pod:avsf_jax.tar.gz', '--zone=us-central2-b', '--worker=all'],
    ssh('all', _install_steps('tar -xzf avsf_jax.tar.gz')),
  ]


def test_run_starts_the_same_main_command_on_all_workers_with_a_log_each():
  commands = dry_run(
    TPU,
    'run',
    *_WHERE,
    '--config=configs/kinetics_r50.py',
    '--workdir=gs://bucket/runs/avsf_r50',
    '--data_dir=gs://bucket/tfds',
  )
  main = (
    '.venv/bin/python -m avsf_jax.main --config=configs/kinetics_r50.py '
    '--workdir=gs://bucket/runs/avsf_r50 --config.input.data_dir=gs://bucket/tfds'
  )
  assert commands == [
    ssh(
      'all',
      'cd avsf_jax && mkdir -p ../avsf_logs && TF_CPP_MIN_LOG_LEVEL=2 nohup '
      + main
      + ' > ../avsf_logs/main.log 2>&1 < /dev/null & echo $! > ../avsf_logs/main.pid',
    )
  ]


def test_run_passes_extra_flags_quoted_for_the_remote_shell():
  (command,) = dry_run(
    TPU,
    'run',
    *_WHERE,
    '--workdir=gs://b/r',
    '--',
    '--config.optim.num_epochs=10',
    "--config.model.name=it's spaced",
  )
  assert command[-2] == '--worker=all'
  remote = command[-1].removeprefix('--command=')
  main_words = shlex.split(remote.split(' && ')[2].split(' > ')[0])
  assert main_words == [
    'TF_CPP_MIN_LOG_LEVEL=2',
    'nohup',
    '.venv/bin/python',
    '-m',
    'avsf_jax.main',
    '--config=configs/kinetics_r50.py',  # the default config
    '--workdir=gs://b/r',
    '--config.optim.num_epochs=10',
    "--config.model.name=it's spaced",
  ]


def test_run_evaluate_runs_the_evaluator_on_all_workers_with_its_own_log():
  commands = dry_run(
    TPU, 'run', *_WHERE, '--module=evaluate', '--workdir=gs://b/r', '--', '--output=results.json'
  )
  assert commands == [
    ssh(
      'all',
      'cd avsf_jax && mkdir -p ../avsf_logs && TF_CPP_MIN_LOG_LEVEL=2 nohup .venv/bin/python '
      '-m avsf_jax.evaluate --config=configs/kinetics_r50.py --workdir=gs://b/r '
      '--output=results.json > ../avsf_logs/evaluate.log 2>&1 < /dev/null & '
      'echo $! > ../avsf_logs/evaluate.pid',
    )
  ]
  assert dry_run(TPU, 'logs', *_WHERE, '--module=evaluate') == [
    ssh('0', 'tail -n +1 -F avsf_logs/evaluate.log')
  ]


def test_logs_streams_one_workers_log_and_stop_sends_sigterm_to_all():
  assert dry_run(TPU, 'logs', *_WHERE, '--worker=3') == [
    ssh('3', 'tail -n +1 -F avsf_logs/main.log')
  ]
  assert dry_run(TPU, 'logs', *_WHERE)[0][-2] == '--worker=0'
  assert dry_run(TPU, 'stop', *_WHERE) == [
    ssh(
      'all',
      'if [ -f avsf_logs/main.pid ]; then kill -TERM $(cat avsf_logs/main.pid) || true; fi',
    )
  ]


@pytest.mark.parametrize(
  'args',
  [
    ('install', '--repo=https://github.com/org/avsf_jax.git'),
    ('install',),
    ('run', '--workdir=gs://b/r', '--', "--config.x=it's"),
    ('logs',),
    ('stop',),
  ],
)
def test_worker_commands_are_valid_bash(args):
  remote = dry_run(TPU, args[0], *_WHERE, *args[1:])[-1][-1].removeprefix('--command=')
  proc = subprocess.run(['bash', '-n', '-c', remote], capture_output=True, text=True, timeout=30)
  assert proc.returncode == 0, proc.stderr


# tpu.sh errors


@pytest.mark.parametrize(
  'args, message',
  [
    (('create', '--zone=z'), 'create: missing required flag --name (or set TPU_NAME)'),
    (('install', '--name=n'), 'install: missing required flag --zone (or set ZONE)'),
    (('run', '--name=n', '--zone=z'), 'run: missing required flag --workdir'),
    (('launch', '--name=n', '--zone=z'), "unknown subcommand 'launch'"),
    (('create', '--name=n', '--zone=z', '--zone', 'y'), "create: unknown argument '--zone'"),
    (('delete', '--name=n', '--zone=z', '--', '--x=1'), 'arguments after -- are only for run'),
    (('logs', '--name=n', '--zone=z', '--worker=all'), 'logs: --worker must be a worker index'),
    (('run', '--name=n', '--zone=z', '--module=export'), 'run: --module must be main or'),
  ],
)
def test_tpu_errors_exit_nonzero_with_a_message_and_print_no_command(args, message):
  proc = launch(TPU, *args, '--dry-run')
  assert proc.returncode == 2
  assert message in proc.stderr
  assert proc.stdout == ''


def test_tpu_help_lists_the_subcommands():
  proc = launch(TPU, '--help')
  assert proc.returncode == 0
  for word in ('create', 'queue', 'install', 'run', 'logs', 'stop', 'delete', '--dry-run'):
    assert word in proc.stdout


# gpu_multinode.sh


def test_gpu_sets_the_jax_distributed_environment_and_runs_main():
  proc = launch(
    GPU,
    '--coordinator=node0:1234',
    '--num_processes=2',
    '--process_id=1',
    '--workdir=/shared/runs/r50',
    '--data_dir=/shared/tfds',
    '--dry-run',
    '--',
    '--config.optim.num_epochs=3',
  )
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.splitlines() == [
    'JAX_COORDINATOR_ADDRESS=node0:1234',
    'JAX_NUM_PROCESSES=2',
    'JAX_PROCESS_ID=1',
    'python3 -m avsf_jax.main --config=configs/kinetics_r50.py --workdir=/shared/runs/r50 '
    '--config.input.data_dir=/shared/tfds --config.optim.num_epochs=3',
  ]


def test_gpu_takes_process_count_and_id_from_slurm():
  proc = launch(
    GPU,
    '--coordinator=node0:1234',
    '--workdir=/w',
    '--config=configs/kinetics_r50.py:slowfast_4x16',
    '--dry-run',
    env={'SLURM_NTASKS': '4', 'SLURM_PROCID': '3', 'PYTHON': '.venv/bin/python'},
  )
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.splitlines() == [
    'JAX_COORDINATOR_ADDRESS=node0:1234',
    'JAX_NUM_PROCESSES=4',
    'JAX_PROCESS_ID=3',
    '.venv/bin/python -m avsf_jax.main --config=configs/kinetics_r50.py:slowfast_4x16 --workdir=/w',
  ]


def test_gpu_without_dry_run_execs_main_with_the_environment(tmp_path):
  # A stand-in "python" that records its environment and arguments.
  fake = tmp_path / 'python'
  fake.write_text(
    '#!/usr/bin/env bash\necho "$JAX_COORDINATOR_ADDRESS $JAX_NUM_PROCESSES $JAX_PROCESS_ID $*"\n'
  )
  fake.chmod(0o755)
  proc = launch(
    GPU, '--coordinator=h:1', '--num_processes=1', '--process_id=0', '--workdir=/w',
    f'--python={fake}',
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout == ('h:1 1 0 -m avsf_jax.main --config=configs/kinetics_r50.py --workdir=/w\n')


@pytest.mark.parametrize(
  'args, message',
  [
    (
      ('--num_processes=2', '--process_id=0', '--workdir=/w'),
      'missing required flag --coordinator',
    ),
    (
      ('--coordinator=h:1', '--process_id=0', '--workdir=/w'),
      'missing required flag --num_processes',
    ),
    (
      ('--coordinator=h:1', '--num_processes=2', '--workdir=/w'),
      'missing required flag --process_id',
    ),
    (
      ('--coordinator=h:1', '--num_processes=2', '--process_id=0'),
      'missing required flag --workdir',
    ),
    (('--coordinator=h', '--num_processes=2', '--process_id=0', '--workdir=/w'), 'HOST:PORT'),
    (('--coordinator=h:1', '--num_processes=2', '--process_id=2', '--workdir=/w'), r'in [0, 2)'),
    (('--coordinator=h:1', '--num_processes=0', '--process_id=0', '--workdir=/w'), 'positive'),
  ],
)
def test_gpu_errors_exit_nonzero_with_a_message(args, message):
  proc = launch(GPU, *args, '--dry-run')
  assert proc.returncode == 2
  assert message in proc.stderr
  assert proc.stdout == ''


def test_without_dry_run_the_printed_command_is_the_one_run():
  # The gcloud stand-in fails with status 99: the command was run, after being echoed.
  proc = launch(TPU, 'delete', *_WHERE)
  assert proc.returncode == 99
  assert proc.stderr.splitlines() == [
    '+ gcloud compute tpus tpu-vm delete avsf-pod --zone=us-central2-b --quiet',
    'gcloud must not run in tests',
  ]
