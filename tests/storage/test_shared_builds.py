"""Shared dataset caches: one build per cache, markers written last, others wait for them."""

import os
import subprocess
import sys
import threading
import types

import pytest

from avsf_jax.input import pipeline
from avsf_jax.input.prepare import builders, synthetic
from tests import helpers


def _race(tmp_path, compilation_cache, clips: tuple[int, int], timeout: float):
  data_dir = tmp_path / 'cache'
  env = helpers.subprocess_env(compilation_cache, devices=1)
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(helpers.REPO), env.get('PYTHONPATH')]))
  script = helpers.REPO / 'tests' / 'storage' / 'build_tiny.py'
  logs = [tmp_path / f'build{i}.log' for i in range(2)]
  processes = []
  for log in logs:
    with open(log, 'w') as out:
      processes.append(
        subprocess.Popen(
          [sys.executable, str(script), str(data_dir), *map(str, clips)],
          cwd=tmp_path,
          env=env,
          stdout=out,
          stderr=subprocess.STDOUT,
        )
      )
  try:
    codes = [p.wait(timeout=timeout) for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
        p.wait()
  texts = [log.read_text() for log in logs]
  assert codes == [0, 0], '\n'.join(t[-2000:] for t in texts)
  return data_dir, texts


def test_two_processes_on_an_empty_cache_build_it_once_and_both_finish(tmp_path, compilation_cache):
  data_dir, texts = _race(tmp_path, compilation_cache, (1, 1), timeout=900)
  num_classes = len(synthetic.CLASS_NAMES)
  for text in texts:
    assert f'complete=True train={num_classes}' in text
  # The raw files were generated once: the second process waited on the lock and found
  # the dataset prepared.
  assert sum(t.count('synthetic_av: generating mp4 files') for t in texts) == 1
  raw = data_dir / 'synthetic_av_raw'
  assert (raw / builders.RAW_COMPLETE).read_text() == f'{2 * num_classes} clips\n'
  leftovers = [p for p in data_dir.rglob('*') if '.tmp-' in p.name or 'incomplete' in p.name]
  assert leftovers == []


@pytest.mark.slow
def test_two_demo_sized_builds_racing_both_finish(tmp_path, compilation_cache):
  """The demo's full synthetic_av (20 + 5 clips per class), two builds started together."""
  data_dir, texts = _race(tmp_path, compilation_cache, tuple(synthetic.SPLITS.values()), 900)
  train = synthetic.SPLITS['train'] * len(synthetic.CLASS_NAMES)
  assert all(f'complete=True train={train}' in t for t in texts)
  assert sum(t.count('synthetic_av: generating mp4 files') for t in texts) == 1


def test_half_written_raw_files_are_generated_again(tmp_path, monkeypatch):
  """A killed generation leaves CSVs but no marker: the next build generates everything."""
  manual = tmp_path / 'raw'
  manual.mkdir()
  (manual / 'train.csv').write_text('label,youtube_id,time_start,time_end,split\n')
  calls = []

  def fake_generate(manual_dir, seed, pool, clips_per_class):
    calls.append(manual_dir)
    return 7

  monkeypatch.setattr(synthetic, 'generate', fake_generate)
  builder = builders.get_builder('synthetic_av', str(tmp_path / 'data'), num_workers=1)
  builder.make_raw_files(str(manual))
  assert calls == [str(manual)]
  assert (manual / builders.RAW_COMPLETE).read_text() == '7 clips\n'
  builder.make_raw_files(str(manual))  # complete now: not generated again
  assert calls == [str(manual)]


def test_other_processes_wait_for_the_marker_of_process_0(tmp_path):
  builder = types.SimpleNamespace(data_dir=str(tmp_path), name='synthetic_av')
  marker = tmp_path / builders.PREPARED_MARKER
  timer = threading.Timer(0.3, lambda: builders.write_marker(str(marker)))
  timer.start()
  pipeline.wait_for_build(builder, timeout_s=20, poll_s=0.05)
  timer.join()
  assert marker.read_text() == 'done\n'
  assert [p.name for p in tmp_path.iterdir()] == [builders.PREPARED_MARKER]


def test_waiting_too_long_stops_with_a_message_naming_the_folder(tmp_path):
  builder = types.SimpleNamespace(data_dir=str(tmp_path), name='synthetic_av')
  with pytest.raises(TimeoutError) as error:
    pipeline.wait_for_build(builder, timeout_s=0.2, poll_s=0.05)
  message = str(error.value)
  assert str(tmp_path) in message and 'process 0' in message
  assert builders.PREPARED_MARKER in message and 'AVSF_BUILD_WAIT_S' in message


def test_get_builder_in_process_1_waits_and_never_builds(tmp_path, monkeypatch):
  config = helpers.load_config('configs/demo.py')
  config.input.data_dir = str(tmp_path)
  monkeypatch.setattr('jax.process_index', lambda: 1)
  monkeypatch.setenv('AVSF_BUILD_WAIT_S', '0.2')
  monkeypatch.setattr(
    builders, 'build', lambda *a: (_ for _ in ()).throw(AssertionError('process 1 built'))
  )
  with pytest.raises(TimeoutError, match='has not finished building synthetic_av'):
    pipeline.get_builder(config)
