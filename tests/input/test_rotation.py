"""The ROT transform against `np.rot90`, eagerly and inside tf.data (self-supervised 1.2, T4)."""

import numpy as np
import pytest
import tensorflow as tf

from avsf_jax import config_lib
from avsf_jax.input import ops, pipeline, rotation
from avsf_jax.tasks import pretraining

ALPHA, NUM_FAST, SIZE = 4, 8, 6


def _example(seed: int) -> dict:
  """A cropped clip as the pipeline makes it: Slow = Fast frames at `slow_from_fast`."""
  rng = np.random.default_rng(seed)
  fast = rng.normal(size=(NUM_FAST, SIZE, SIZE, 3)).astype(np.float32)
  slow = fast[ops.slow_from_fast(NUM_FAST, ALPHA).numpy()]
  audio = rng.normal(size=(16, 8, 1)).astype(np.float32)
  return {'slow': slow, 'fast': fast, 'audio': audio, 'label': np.int32(seed % 5)}


def _seed(i: int):
  return tf.constant([i, 1234], tf.int64)


def test_rotate_frames_matches_np_rot90_and_four_turns_are_the_identity():
  video = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
  for k in range(-1, 6):
    expected = np.rot90(video, k, axes=(1, 2))
    np.testing.assert_array_equal(rotation.rotate_frames(video, k).numpy(), expected)
  # A hand-checked quarter turn of a 2x2 image: [[a, b], [c, d]] -> [[b, d], [a, c]].
  image = np.array([[1, 2], [3, 4]], np.float32)[None, :, :, None]
  np.testing.assert_array_equal(
    rotation.rotate_frames(image, 1).numpy()[0, ..., 0], [[2, 4], [1, 3]]
  )
  x = tf.constant(video)
  for _ in range(4):
    x = rotation.rotate_frames(x, 1)
  np.testing.assert_array_equal(x.numpy(), video)
  with pytest.raises(ValueError, match='square'):
    rotation.rotate_frames(np.zeros((2, 4, 6, 3), np.float32), 1)


def test_label_is_the_applied_k_and_slow_and_fast_share_it():
  seen = set()
  for i in range(24):
    example = _example(i)
    out = rotation.rotate_clip(example, _seed(i))
    k = int(out['rotation'])
    seen.add(k)
    np.testing.assert_array_equal(out['fast'].numpy(), np.rot90(example['fast'], k, axes=(1, 2)))
    np.testing.assert_array_equal(out['slow'].numpy(), np.rot90(example['slow'], k, axes=(1, 2)))
    # Same k: Slow is still the Fast frames at slow_from_fast.
    np.testing.assert_array_equal(
      out['slow'].numpy(), out['fast'].numpy()[ops.slow_from_fast(NUM_FAST, ALPHA).numpy()]
    )
    np.testing.assert_array_equal(out['audio'], example['audio'])  # audio is never rotated
    assert out['label'] == example['label']
    assert int(rotation.rotate_clip(example, _seed(i))['rotation']) == k  # keyed by the seed
  assert seen == {0, 1, 2, 3}


def test_inside_tf_data_equals_eager():
  examples = [_example(i) for i in range(12)]
  stacked = {key: np.stack([e[key] for e in examples]) for key in examples[0]}
  seeds = np.stack([_seed(i).numpy() for i in range(12)])
  dataset = tf.data.Dataset.from_tensor_slices((stacked, seeds)).map(rotation.rotate_clip)
  for i, out in enumerate(dataset.as_numpy_iterator()):
    eager = rotation.rotate_clip(examples[i], _seed(i))
    assert out['rotation'] == int(eager['rotation'])
    np.testing.assert_array_equal(out['fast'], eager['fast'].numpy())
    np.testing.assert_array_equal(out['slow'], eager['slow'].numpy())


def test_k_is_uniform_over_many_seeds():
  ks = np.array([int(rotation.draw_rotation(_seed(i))) for i in range(400)])
  counts = np.bincount(ks, minlength=4)
  assert counts.min() > 70 and counts.max() < 130  # 100 expected each; 4.3 sigma either way


def test_all_four_mode_stacks_every_rotation_for_unbatch():
  example = _example(3)
  dataset = tf.data.Dataset.from_tensors(example).map(
    lambda e: rotation.apply(e, _seed(0), 'all_four')
  )
  outs = list(dataset.unbatch().as_numpy_iterator())
  assert [int(o['rotation']) for o in outs] == [0, 1, 2, 3]
  for k, out in enumerate(outs):
    np.testing.assert_array_equal(out['fast'], np.rot90(example['fast'], k, axes=(1, 2)))
    np.testing.assert_array_equal(out['slow'], np.rot90(example['slow'], k, axes=(1, 2)))
    np.testing.assert_array_equal(out['audio'], example['audio'])
  with pytest.raises(ValueError, match='mode'):
    rotation.apply(example, _seed(0), 'sometimes')
  with pytest.raises(KeyError, match='visual'):
    rotation.rotate_clip({'audio': example['audio']}, _seed(0))


def _pipeline_config(data_dir, **pretraining):
  """A tiny Kinetics training stream (as tests/input/test_pipeline.py's), as a pretraining task
  when `pretraining` fields are given."""
  config = config_lib.base_config()
  config.input.update(
    {
      'dataset': 'kinetics400',
      'data_dir': data_dir,
      'num_frames': 2,
      'tau': 4,
      'crop_size': 32,
      'jitter_scales': (36, 44),
      'batch_size': 4,
    }
  )
  config.model.alpha = 2
  config.audio.num_frames = 16
  if pretraining:
    config.task = 'pretraining'
    config.pretraining = pretraining
  return config


@pytest.mark.slow
def test_pipeline_rotates_pretraining_clips_after_the_crop(kinetics_prepared):
  """The tf.data hook: with the ROT head, each training clip is the plain stream's clip turned
  by `rotation` quarter turns (np.rot90 over H, W), Slow and Fast alike; every other key is the
  plain stream's. AVS only and classification streams are not rotated."""
  data_dir = kinetics_prepared[0]
  plain = pipeline.make_train_iterator(_pipeline_config(data_dir), seed=0)
  rotated = pipeline.make_train_iterator(_pipeline_config(data_dir, rotation=True), seed=0)
  ks = []
  for _ in range(2):
    a, b = next(plain), next(rotated)
    assert set(b) == set(a) | {'rotation'} and b['rotation'].dtype == np.int32
    for i, k in enumerate(b['rotation']):
      for key in ('slow', 'fast'):
        np.testing.assert_array_equal(b[key][i], np.rot90(a[key][i], k, axes=(1, 2)))
    for key in set(a) - {'slow', 'fast'}:
      np.testing.assert_array_equal(b[key], a[key])
    ks.extend(int(k) for k in b['rotation'])
  assert len(set(ks)) > 1 and set(ks) <= {0, 1, 2, 3}
  assert pipeline.rotation_mode(_pipeline_config(data_dir, rotation=False)) is None
  assert pipeline.rotation_mode(_pipeline_config(data_dir)) is None
  # The default follows the task's section: a pretraining config without it has the ROT head.
  assert pretraining.PRETRAINING['rotation'] is True
  assert pipeline.rotation_mode(_pipeline_config(data_dir, rotation_mode='one_per_clip')) == (
    'one_per_clip'
  )
  with pytest.raises(ValueError, match=r"rotation_mode='all_four'.*one_per_clip"):
    pipeline.rotation_mode(_pipeline_config(data_dir, rotation_mode='all_four'))
