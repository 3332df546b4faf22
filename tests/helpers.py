"""What the tests share: config loading, the tiny training config, subprocess runs of the
command-line programs, and reading checkpoints back. One import style: `from tests import
helpers`."""

import importlib.util
import os
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / 'tests' / 'train' / 'tiny_config.py'


def load_config(spec: str):
  """`configs/x.py:variant` (relative to the repository, or absolute) -> ConfigDict, the
  way `--config=FILE:variant` loads it."""
  path, _, variant = str(spec).partition(':')
  path = pathlib.Path(path)
  path = path if path.is_absolute() else REPO / path
  module_spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant or None)


def tiny_config(variant: str = ''):
  """A narrow depth-14 AVSlowFast (or `variant`) on fake data: a step takes well under 1 s."""
  return load_config(f'{TINY_CONFIG}:{variant}' if variant else str(TINY_CONFIG))


def subprocess_env(compilation_cache: str, devices: int = 8, **extra: str) -> dict[str, str]:
  env = dict(os.environ)
  env.update(
    XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
    JAX_PLATFORMS='cpu',
    TF_CPP_MIN_LOG_LEVEL='2',
    JAX_COMPILATION_CACHE_DIR=compilation_cache,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
  )
  env.update(extra)
  return env


def start_main(workdir, log_path, env, *overrides: str, variant: str = '') -> subprocess.Popen:
  """Starts `python -m avsf_jax.main` on the tiny config; stdout+stderr go to `log_path`."""
  config = f'{TINY_CONFIG}:{variant}' if variant else str(TINY_CONFIG)
  command = [
    sys.executable,
    '-m',
    'avsf_jax.main',
    f'--config={config}',
    f'--workdir={workdir}',
    *overrides,
  ]
  log = open(log_path, 'w')  # noqa: SIM115 (closed with the process by the caller's wait)
  return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for(predicate, timeout: float, process: subprocess.Popen | None = None) -> None:
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    if process is not None and process.poll() is not None:
      raise AssertionError(f'process exited early with {process.returncode}')
    time.sleep(0.2)
  raise AssertionError('timed out')


def finished_checkpoints(workdir) -> list[int]:
  """Checkpoint steps whose save completed (orbax renames tmp dirs when done)."""
  directory = pathlib.Path(workdir) / 'checkpoints'
  if not directory.exists():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def load_checkpoint(workdir, step: int):
  """The saved train state as nested dicts of numpy arrays."""
  import orbax.checkpoint as ocp  # noqa: PLC0415

  path = pathlib.Path(workdir).resolve() / 'checkpoints' / str(step) / 'default'
  return ocp.PyTreeCheckpointer().restore(path)
