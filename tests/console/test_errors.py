"""The mistakes new users make end in one line on stderr, without a traceback.

Each case runs the real entry point in a subprocess (the point is what the terminal shows);
all of them fail before any compilation, and they run side by side.
"""

import subprocess
import sys

import pytest

from tests import helpers

TINY = str(helpers.TINY_CONFIG)


def _start(tmp_path, name, args, **env):
  log = open(tmp_path / f'{name}.err', 'w')  # noqa: SIM115 (closed in _finish)
  process = subprocess.Popen(
    [sys.executable, '-m', *args],
    cwd=helpers.REPO,
    env=helpers.subprocess_env(str(tmp_path / 'cache'), devices=1, **env),
    stdout=subprocess.DEVNULL,
    stderr=log,
  )
  return process, log


def _finish(started, tmp_path, name) -> tuple[int, list[str]]:
  process, log = started
  process.wait(timeout=300)
  log.close()
  lines = [line for line in (tmp_path / f'{name}.err').read_text().splitlines() if line.strip()]
  return process.returncode, lines


@pytest.mark.slow
def test_each_user_mistake_is_one_line(tmp_path):
  mismatch = tmp_path / 'other_experiment'
  saved = helpers.tiny_config('slowfast')
  (mismatch / 'checkpoints' / '6').mkdir(parents=True)
  (mismatch / 'config.json').write_text(saved.to_json_best_effort())
  cases = {
    'variant': ['avsf_jax.main', '--config=configs/demo.py:bogus', f'--workdir={tmp_path}/v'],
    'unprepared': [
      'avsf_jax.main',
      f'--config={TINY}',
      f'--workdir={tmp_path}/u',
      '--config.input.dataset=charades',
    ],
    'mismatch': ['avsf_jax.main', f'--config={TINY}', f'--workdir={mismatch}'],
    'export': [
      'avsf_jax.evaluate',
      f'--config={TINY}',
      f'--export={tmp_path}/no_export',
      f'--output={tmp_path}/e/results.json',
    ],
  }
  data_dir = tmp_path / 'empty_data'
  started = {
    name: _start(tmp_path, name, args, AVSF_DATA_DIR=str(data_dir)) for name, args in cases.items()
  }
  results = {name: _finish(p, tmp_path, name) for name, p in started.items()}

  code, lines = results['variant']
  assert (code, lines) == (
    2,
    [
      "avsf_jax.main: configs/demo.py: unknown variant 'bogus'; choose one of: avslowfast, slowfast"
    ],
  )
  code, lines = results['unprepared']
  assert code == 1 and len(lines) == 1, lines
  assert lines[0].startswith(f'main: {data_dir}/charades/')
  assert (
    "dataset 'charades' is not prepared; run python -m avsf_jax.tools.prepare_dataset" in (lines[0])
  )
  code, lines = results['mismatch']
  assert code == 1 and len(lines) == 1, lines
  assert lines[0].startswith(
    f'main: {mismatch} holds checkpoints of another experiment (model.audio_fusion_junctions: '
    "[] there, ['res3', 'res4'] here; "
  )
  assert '(and 3 more fields)' in lines[0]
  assert lines[0].endswith(
    'not mixing them. Use another --workdir, or delete that one to start over.'
  )
  code, lines = results['export']
  assert (code, lines) == (1, [f'evaluate: {tmp_path}/no_export: no such export directory'])
  # The traceback of a user error goes to the log file, never to the console.
  assert 'Traceback' in (tmp_path / 'u' / 'log.txt').read_text()
