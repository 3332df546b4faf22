"""`input/ava_pipeline.py` (no TensorFlow) on a tiny `synthetic_ava` (1 train + 1 val video of 8 s) in the AVA
layout: examples, boxes and labels against the CSVs, excluded keyframes, detector boxes at a
score threshold, the shared training draws of frames and boxes, determinism, and the numpy
log-mel against the TensorFlow front end."""

import collections
import os

import ml_collections
import numpy as np
import pytest

from avsf_jax import experiment
from avsf_jax.input import ava_pipeline
from avsf_jax.input.prepare import ava_files, synthetic_ava
from tests import helpers


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('ava')
  synthetic_ava.generate(
    str(root / 'synthetic_ava'), seed=3, videos={'train': 1, 'val': 1}, duration_s=8
  )
  return str(root)


def _config(data_dir, **detection):
  config = helpers.load_config('configs/ava.py:demo_avslowfast')
  config.input.data_dir = data_dir
  # The stored frames' own scale (the demo may train smaller): 96-px crops, 96 x 128 tests.
  config.input.crop_size = 96
  config.input.jitter_scales = (96, 112)
  config.input.test_short_side = 96
  config.detection.test_size = (96, 128)
  config.input.eval_batch_size = 2
  config.input.batch_size = 2
  config.detection.eval_boxes = 'gt'
  config.detection.max_boxes = 4
  config.detection.update(detection)
  return config


def _annotations(data_dir, name, **kwargs):
  return ava_files.read_boxes(
    os.path.join(data_dir, 'synthetic_ava', 'annotations', name), **kwargs
  )


def test_data_source_dispatch_and_info(data_dir):
  config = _config(data_dir)
  assert experiment.data_source(config) is ava_pipeline
  info = ava_pipeline.dataset_info(config)
  train_keys = {
    (r.video_id, r.timestamp) for r in _annotations(data_dir, 'synthetic_ava_train.csv')
  }
  excluded = ava_files.read_excluded_timestamps(
    os.path.join(
      data_dir, 'synthetic_ava', 'annotations', 'synthetic_ava_val_excluded_timestamps.csv'
    )
  )
  val_keys = {(r.video_id, r.timestamp) for r in _annotations(data_dir, 'synthetic_ava_val.csv')}
  assert info.num_train_examples == len(train_keys) == 5  # keyframes 902..906
  assert info.num_eval_examples == len(val_keys - excluded) == 3
  assert info.class_names == ('walk', 'jump', 'wave', 'carry', 'sing')
  assert info.evaluated_class_ids == (1, 2, 4, 5, 6)
  assert info.frame_size == (96, 128)
  assert set(info.excluded_keys) == {f'{v},{t:04d}' for v, t in excluded}
  assert all((r.video_id, r.timestamp) not in excluded for r in info.groundtruth)


def test_eval_batches_hold_the_csv_boxes_and_labels_and_never_an_excluded_keyframe(data_dir):
  config = _config(data_dir)
  info = ava_pipeline.dataset_info(config)
  truth = collections.defaultdict(dict)
  for r in _annotations(data_dir, 'synthetic_ava_val.csv'):
    truth[f'{r.video_id},{r.timestamp:04d}'].setdefault(r.box, set()).add(r.action_id)
  batches = list(ava_pipeline.make_eval_iterator(config))
  assert len(batches) == 2 and batches[-1]['_mask'].tolist() == [1.0, 0.0]
  seen = []
  for batch in batches:
    assert batch['fast'].shape == (2, 8, 96, 128, 3) and batch['slow'].shape == (2, 4, 96, 128, 3)
    assert batch['audio'].shape == (2, 32, 40, 1)
    for n in np.flatnonzero(batch['_mask']):
      key = f'{info.eval_video_ids[batch["video_index"][n]]},{batch["timestamp"][n]:04d}'
      seen.append(key)
      valid = batch['box_mask'][n]
      assert valid.sum() == len(truth[key])
      for box, ori, labels in zip(
        batch['boxes'][n][valid], batch['ori_boxes'][n][valid], batch['box_labels'][n][valid]
      ):
        ids = truth[key][tuple(np.round(ori.astype(float), 3))]
        assert set(np.flatnonzero(labels) + 1) == ids
        # Test transform at short side 96 of a 96 x 128 frame: pixels, clipped to the frame.
        expected = np.clip(ori * [128, 96, 128, 96], 0, [127, 95, 127, 95])
        np.testing.assert_allclose(box, expected, atol=1e-4)
  assert sorted(seen) == sorted(set(truth) - set(info.excluded_keys))
  assert not set(seen) & set(info.excluded_keys)


def test_detector_boxes_are_those_at_or_above_the_threshold(data_dir):
  rows = _annotations(data_dir, 'synthetic_ava_val_predicted_boxes.csv', detections=True)
  for threshold in (0.8, 0.0):
    config = _config(data_dir, eval_boxes='detector', score_threshold=threshold)
    config.detection.max_boxes = 8
    info = ava_pipeline.dataset_info(config)
    for batch in ava_pipeline.make_eval_iterator(config):
      for n in np.flatnonzero(batch['_mask']):
        video, stamp = info.eval_video_ids[batch['video_index'][n]], batch['timestamp'][n]
        expected = sorted(
          r.box
          for r in rows
          if r.video_id == video and r.timestamp == stamp and r.score >= threshold
        )
        got = sorted(tuple(b) for b in np.round(batch['ori_boxes'][n][batch['box_mask'][n]], 3))
        np.testing.assert_allclose(np.array(got).reshape(-1, 4), np.array(expected).reshape(-1, 4))


def test_an_evaluation_keyframe_with_more_boxes_than_max_boxes_is_an_error(data_dir):
  rows = _annotations(data_dir, 'synthetic_ava_val_predicted_boxes.csv', detections=True)
  most = max(collections.Counter((r.video_id, r.timestamp) for r in rows).values())
  assert most >= 2  # the tiny dataset has a keyframe with several detections
  config = _config(data_dir, eval_boxes='detector', score_threshold=0.0)
  config.detection.max_boxes = most - 1
  with pytest.raises(ValueError, match=f'has {most} evaluation boxes.*max_boxes={most - 1}'):
    list(ava_pipeline.make_eval_iterator(config))
  config.detection.max_boxes = most
  assert len(list(ava_pipeline.make_eval_iterator(config))) == 2


def test_training_frames_and_boxes_share_the_crop_and_flip(data_dir):
  config = _config(data_dir)
  config.input.jitter_scales = (96, 96)  # no rescale: only the crop offset and flip vary
  keyframe = ava_pipeline.keyframes(config, 'train')[2]
  full = ava_pipeline.load_example(config, keyframe, train=False)
  for seed in range(4):
    clip = ava_pipeline.load_example(config, keyframe, rng=np.random.default_rng(seed), train=True)
    assert clip['fast'].shape == (8, 96, 96, 3)
    matches = [
      (x, flip)
      for x in range(0, 33)
      for flip in (False, True)
      if np.array_equal(
        clip['fast'],
        full['fast'][:, :, x : x + 96][:, :, ::-1] if flip else full['fast'][:, :, x : x + 96],
      )
    ]
    assert len(matches) == 1
    x, flip = matches[0]
    boxes = full['boxes'][full['box_mask']] - [x, 0, x, 0]
    if flip:
      boxes = np.stack([95 - boxes[:, 2], boxes[:, 1], 95 - boxes[:, 0], boxes[:, 3]], 1)
    np.testing.assert_allclose(clip['boxes'][clip['box_mask']], np.clip(boxes, 0, 95), atol=1e-4)
    np.testing.assert_array_equal(clip['box_labels'], full['box_labels'])


def test_training_batches_are_a_function_of_seed_and_step(data_dir):
  config = _config(data_dir)
  a = ava_pipeline.make_train_iterator(config, seed=1)
  b = ava_pipeline.make_train_iterator(config, seed=1, start_step=1)
  next(a)
  first, second = next(a), next(b)
  assert set(first) == {'slow', 'fast', 'audio', 'boxes', 'box_mask', 'box_labels'}
  for k in first:
    np.testing.assert_array_equal(first[k], second[k])
  assert first['box_labels'].shape == (2, 4, 80)
  assert np.all(first['boxes'] >= 0) and np.all(first['boxes'] <= 95)


def test_numpy_log_mel_matches_the_tensorflow_front_end():
  import tensorflow as tf  # noqa: PLC0415

  from avsf_jax.input import audio  # noqa: PLC0415

  a = ml_collections.ConfigDict(
    {
      'sample_rate': 16000,
      'window_size': 512,
      'hop_size': 256,
      'fft_size': 512,
      'num_mel_bins': 40,
      'num_frames': 32,
      'log_offset': 1e-8,
      'mean': -7.03,
      'std': 4.66,
    }
  )
  samples = np.random.default_rng(0).integers(-8000, 8000, 17067).astype(np.int16)
  ours = ava_pipeline.log_mel(samples.astype(np.float32) / 32768.0, a)
  theirs = audio.clip_log_mel(tf.constant(samples), 0, len(samples), a).numpy()
  assert ours.shape == theirs.shape == (32, 40, 1)
  np.testing.assert_allclose(
    ava_pipeline.mel_weights(16000, 512, 40), audio.mel_matrix(16000, 512, 40), atol=1e-7
  )
  np.testing.assert_allclose(ours, theirs, atol=2e-3)
