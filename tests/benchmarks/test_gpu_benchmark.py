"""The prepared GPU benchmark (`avsf_jax/benchmarks/gpu.py`): its plan, its budget and the
arithmetic of its JSON, end to end in the tiny CPU form, in a process without TensorFlow.

No timing is asserted: the figures must follow from the measured times (clips/s = global
batch / median step time, MFU = 2 FLOPs per multiply-add x 3 for a training step / peak,
ratios = ours / PyTorchVideo's at the same batch and compute type).
"""

import json
import subprocess
import sys

import pytest

from avsf_jax.benchmarks import gpu
from tests import helpers


def test_plan_puts_the_headline_first_and_covers_the_grid_once():
  jobs = gpu.plan(
    ['avs', 'sf'], ['bfloat16', 'float32'], [8, 16, 32], ['xla', 'lowered'], reference=True
  )
  head = [(j['kind'], j['model'], j.get('dtype'), j['batch'], j.get('lowering')) for j in jobs[:6]]
  assert head == [
    ('jax', 'avs', 'bfloat16', 32, 'xla'),
    ('pytorch', 'avs', None, 32, None),
    ('jax', 'sf', 'bfloat16', 32, 'xla'),
    ('pytorch', 'sf', None, 32, None),
    ('jax', 'avs', 'bfloat16', 32, 'lowered'),
    ('jax', 'sf', 'bfloat16', 32, 'lowered'),
  ]
  ours = {(j['model'], j['dtype'], j['batch'], j['lowering']) for j in jobs if j['kind'] == 'jax'}
  theirs = {(j['model'], j['batch']) for j in jobs if j['kind'] == 'pytorch'}
  assert len(ours) == 2 * 2 * 3 * 2 and len(theirs) == 2 * 3
  assert len(jobs) == len(ours) + len(theirs)
  # Smaller batches come before the second lowering's remaining runs.
  order = [(j['batch'], j.get('lowering')) for j in jobs]
  assert order.index((8, 'xla')) < order.index((16, 'lowered'))
  assert gpu.plan(['m'], ['float32'], [1], ['xla'], reference=False) == [
    dict(kind='jax', model='m', dtype='float32', batch=1, lowering='xla')
  ]


def test_estimate_reuses_the_last_run_and_scales_its_timed_steps_by_batch():
  assert gpu.estimate_s({'kind': 'jax', 'model': 'a', 'batch': 8}, []) == gpu.FIRST_GUESS_S['jax']
  done = [
    {'kind': 'jax', 'model': 'a', 'batch': 32, 'wall_s': 50.0, 'timed_s': 8.0},
    {'kind': 'pytorch', 'model': 'a', 'batch': 32, 'wall_s': 12.0, 'timed_s': 12.0},
  ]
  # 42 s of compiles and set-up, plus 8 s of timed steps at a quarter of the batch.
  assert gpu.estimate_s({'kind': 'jax', 'model': 'a', 'batch': 8}, done) == pytest.approx(44.0)
  # Another model falls back on the last run of the same kind.
  assert gpu.estimate_s({'kind': 'pytorch', 'model': 'b', 'batch': 16}, done) == pytest.approx(6)


def test_derived_figures_are_hand_computable():
  result = {
    'devices': 2,
    'runs': [
      dict(kind='jax', model='m', dtype='bfloat16', batch=4, lowering='xla',
           train_step_s=0.5, infer_batch_s=0.25),
      dict(kind='pytorch', model='m', batch=4, compute_dtype='bfloat16',
           train_step_s=1.0, infer_batch_s=0.2),
    ],
  }  # fmt: skip
  gpu.derive(result, macs={'m': 1e9}, peak={'bfloat16': 100e12})
  ours, theirs = result['runs']
  assert ours['global_batch'] == 8
  assert ours['train_clips_per_s'] == pytest.approx(16.0)
  assert ours['infer_clips_per_s'] == pytest.approx(32.0)
  # 3 x 2 FLOPs x 1e9 MACs x 8 clips / 0.5 s over 2 devices x 100 TFLOP/s.
  assert ours['train_mfu'] == pytest.approx(96e9 / 200e12)
  assert ours['infer_mfu'] == pytest.approx(64e9 / 200e12)
  assert theirs['train_clips_per_s'] == pytest.approx(8.0)
  (ratio,) = result['ratios']
  assert ratio['train_speed_ratio'] == pytest.approx(2.0)
  assert ratio['infer_speed_ratio'] == pytest.approx(32.0 / 40.0)


@pytest.mark.slow
def test_tiny_benchmark_runs_end_to_end_without_tensorflow(tmp_path):
  env = helpers.subprocess_env(str(tmp_path / 'cache'), devices=2)
  command = [sys.executable, '-m', 'avsf_jax.benchmarks.gpu', '--tiny', '--peak_tflops=0.5']
  done = subprocess.run(
    command, cwd=helpers.REPO, env=env, capture_output=True, text=True, timeout=900, check=False
  )
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(done.stdout.splitlines()[-1])
  assert result['tiny'] and result['platform'] == 'cpu' and result['devices'] == 2
  assert result['tensorflow_loaded'] is False
  assert result['skipped'] == []
  ours = [r for r in result['runs'] if r['kind'] == 'jax']
  theirs = [r for r in result['runs'] if r['kind'] == 'pytorch']
  assert len(ours) == 1 and len(theirs) == 1
  (run,) = ours
  assert run['lowering'] == 'lowered' and run['dtype'] == 'float32'
  assert run['global_batch'] == 2
  assert run['train_clips_per_s'] == pytest.approx(2 / run['train_step_s'])
  assert run['infer_clips_per_s'] == pytest.approx(2 / run['infer_batch_s'])
  macs = result['models']['slowfast_tiny']['gflops_per_clip'] * 1e9
  assert macs > 0
  assert run['train_mfu'] == pytest.approx(6 * macs * 2 / run['train_step_s'] / (2 * 0.5e12))
  assert run['infer_mfu'] == pytest.approx(2 * macs * 2 / run['infer_batch_s'] / (2 * 0.5e12))
  assert run['train_planned_peak_bytes'] > run['infer_planned_peak_bytes'] > 0
  (ratio,) = result['ratios']
  assert ratio['train_speed_ratio'] == pytest.approx(
    run['train_clips_per_s'] / theirs[0]['train_clips_per_s']
  )
  assert ratio['infer_speed_ratio'] == pytest.approx(
    run['infer_clips_per_s'] / theirs[0]['infer_clips_per_s']
  )
