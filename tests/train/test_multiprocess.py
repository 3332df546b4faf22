"""Two processes x 4 CPU devices on localhost, through jax.distributed: train, save, restore.

Each process feeds its half of the global batch; checkpoints are written and read by both.
"""

import json
import socket

import pytest

from tests.helpers import finished_checkpoints, start_main, subprocess_env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _launch(workdir, tmp_path, compilation_cache, tag: str, *overrides: str) -> list[str]:
  port = _free_port()
  processes = []
  for i in range(2):
    env = subprocess_env(
      compilation_cache,
      devices=4,
      JAX_COORDINATOR_ADDRESS=f'localhost:{port}',
      JAX_NUM_PROCESSES='2',
      JAX_PROCESS_ID=str(i),
    )
    processes.append(
      start_main(
        workdir, tmp_path / f'{tag}_{i}.log', env, *overrides, '--verbose', variant='slow_only'
      )
    )
  try:
    codes = [p.wait(timeout=420) for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
  logs = [(tmp_path / f'{tag}_{i}.log').read_text() for i in range(2)]
  assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
  return logs


@pytest.mark.slow
def test_two_processes_train_save_and_resume(tmp_path, compilation_cache):
  workdir = tmp_path / 'run'
  # Slow-only keeps compilation short; what is tested is the multi-process machinery.
  common = ('--config.evals.precise_bn_batches=0',)
  logs = _launch(
    workdir, tmp_path, compilation_cache, 'first', '--config.optim.num_epochs=0.5', *common
  )
  assert 'Process 1 of 2; 4 local / 8 global devices' in logs[1]
  assert finished_checkpoints(workdir) == [2]
  first = json.loads((workdir / 'eval_results.json').read_text())
  assert first['num_examples'] == 12 and first['step'] == 2

  logs = _launch(
    workdir, tmp_path, compilation_cache, 'second', '--config.optim.num_epochs=1.0', *common
  )
  assert all('Resuming from checkpoint 2' in log for log in logs)
  assert finished_checkpoints(workdir) == [2, 4]
  second = json.loads((workdir / 'eval_results.json').read_text())
  assert second['num_examples'] == 12 and second['step'] == 4
