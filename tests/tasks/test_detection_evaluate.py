"""`python -m avsf_jax.evaluate` on a detector: a tiny SlowFast detector trained for two steps
on a tiny `synthetic_ava`, then its checkpoint and its export evaluated through
`evaluate.evaluate_workdir` / `evaluate_export` (the task's frame mAP, not classification's
(batch, views) path) must give the in-training evaluation's numbers exactly."""

import json

import numpy as np
import pytest

from avsf_jax import evaluate, export, train
from avsf_jax.input.prepare import synthetic_ava
from tests import helpers


def _config(data_dir):
  config = helpers.load_config('configs/ava.py:demo')
  config.input.data_dir = data_dir
  config.input.num_frames = 2
  config.input.crop_size = 32
  config.input.jitter_scales = (32, 36)
  config.input.test_short_side = 32
  config.detection.test_size = (32, 42)
  config.input.batch_size = 8
  config.input.eval_batch_size = 8
  config.detection.eval_boxes = 'gt'
  config.optim.num_epochs = 2 * 8 / 5  # two steps over the 5 training keyframes
  config.optim.warmup_epochs = 0.0
  return config


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """(config, workdir, final results) of the tiny detector after two steps."""
  root = tmp_path_factory.mktemp('ava')
  synthetic_ava.generate(
    str(root / 'synthetic_ava'), seed=3, videos={'train': 1, 'val': 1}, duration_s=8
  )
  config = _config(str(root))
  workdir = tmp_path_factory.mktemp('detector')
  results = train.train_and_evaluate(config, str(workdir))
  return config, workdir, results


@pytest.mark.slow  # trains (compiles) a detector, then exports it: ~55 s on 2 cores
def test_a_detection_export_evaluates_to_the_in_training_frame_map(trained, tmp_path):
  config, workdir, final = trained
  assert final['num_keyframes'] == 3 and final['class_ids'] == [1, 2, 4, 5, 6]
  out = tmp_path / 'export'
  export.export_workdir(config, str(workdir), str(out))
  results, outputs, names = evaluate.evaluate_export(config, str(out), multi_view=True)
  assert results['frame_map'] == final['frame_map']
  assert results['per_class_ap'] == pytest.approx(final['per_class_ap'], nan_ok=True, abs=0)
  assert results['num_groundtruth'] == final['num_groundtruth']
  assert results['num_boxes'] == final['num_boxes']
  assert outputs['scores'].shape == (3, config.detection.max_boxes, 80)
  assert list(names) == ['walk', 'jump', 'wave', 'carry', 'sing']
  # The checkpoint through `evaluate --workdir` gives the same scores as the export.
  again, checkpoint_outputs, _ = evaluate.evaluate_workdir(config, str(workdir), multi_view=True)
  assert again['frame_map'] == final['frame_map']
  np.testing.assert_array_equal(checkpoint_outputs['keys'], outputs['keys'])
  # The export runs the whole batch on one device, the experiment shards it: ulp-level
  # differences at most, which leave every ranking, and so the mAP, unchanged.
  np.testing.assert_allclose(checkpoint_outputs['scores'], outputs['scores'], rtol=1e-6, atol=0)


def test_detection_results_are_written_with_the_frame_map_headline(tmp_path):
  results = {
    'frame_map': 0.625,
    'per_class_ap': [0.5, 0.75, float('nan')],
    'class_ids': [1, 2, 4],
    'num_keyframes': 3,
    'views': 'single',
  }
  per_video = {
    'scores': np.zeros((3, 5, 80), np.float32),
    'keys': np.array(['v,0902', 'v,0903', 'v,0904']),
  }
  names = ('walk', 'jump', 'wave')
  written = evaluate.write_outputs(str(tmp_path / 'r.json'), results, per_video, names)
  assert [p.rsplit('/', 1)[-1] for p in written] == ['r.json', 'r.scores.npz', 'r.per_class.png']
  saved = json.loads((tmp_path / 'r.json').read_text())
  assert saved['frame_map'] == 0.625 and saved['class_names'] == list(names)
  assert saved['per_class_ap'][:2] == [0.5, 0.75] and np.isnan(saved['per_class_ap'][2])
  assert np.load(tmp_path / 'r.scores.npz')['keys'].tolist() == ['v,0902', 'v,0903', 'v,0904']
  assert evaluate.headline({'frame_map': 0.41649, 'num_boxes': 7}) == ['frame_map 0.4165']
  assert evaluate.headline({'top1': 71.234, 'top5': 90.0, 'frame_map': 0.5}) == [
    'top1 71.2%',
    'top5 90.0%',
    'frame_map 0.5000',
  ]
