"""Sampling indices against hand-computed ones, and eager vs tf.data parity of each op."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from avsf_jax import config_lib
from avsf_jax.input import ops


def test_clip_frame_indices_follow_pyslowfast_linspace():
  # 30 fps, T=4, tau=4 at 30 fps: 16 source frames; alpha=4 -> 16 fast frames, stride 1.
  index = ops.clip_frame_indices(10.0, 16.0, 16, 100).numpy()
  np.testing.assert_array_equal(index, np.arange(10, 26))
  # A 60 fps video: the same clip spans 32 source frames, fast stride 2 (31/15 per step).
  index = ops.clip_frame_indices(0.0, 32.0, 16, 100).numpy()
  np.testing.assert_array_equal(index, [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 31])
  # Clamped into a short video.
  np.testing.assert_array_equal(ops.clip_frame_indices(0.0, 8.0, 4, 5).numpy(), [0, 2, 4, 4])


def test_slow_from_fast_is_truncated_linspace():
  np.testing.assert_array_equal(ops.slow_from_fast(32, 8).numpy(), [0, 10, 20, 31])
  np.testing.assert_array_equal(ops.slow_from_fast(16, 4).numpy(), [0, 5, 10, 15])


def test_eval_clip_starts_are_uniform():
  features = {'fps': tf.constant(30.0), 'num_frames': tf.constant(116)}
  out = ops.sample_eval_clips(features, num_views=3, num_frames=4, tau=4, alpha=4, target_fps=30.0)
  np.testing.assert_array_equal(out['fast_index'].numpy()[:, 0], [0, 50, 100])  # delta = 100
  out = ops.sample_eval_clips(features, num_views=1, num_frames=4, tau=4, alpha=4, target_fps=30.0)
  np.testing.assert_array_equal(out['fast_index'].numpy()[0], np.arange(50, 66))


def test_pyslowfast_view_starts_tile_the_video_from_its_start():
  """PySlowFast's test decoder: view i of V starts at delta * i / V (delta = 100 here), so
  10 views start at 0, 10, ..., 90 and none reaches the last frame; 'spread' (delta * i /
  (V - 1)) would start them at 0, 11.1, ..., 100."""
  features = {'fps': tf.constant(30.0), 'num_frames': tf.constant(116)}
  geometry = {'num_frames': 4, 'tau': 4, 'alpha': 4, 'target_fps': 30.0}
  out = ops.sample_eval_clips(features, num_views=10, view_starts='pyslowfast', **geometry)
  index = out['fast_index'].numpy()
  np.testing.assert_array_equal(index[:, 0], np.arange(0, 100, 10))
  np.testing.assert_array_equal(index[3], 30 + np.arange(16))  # 16 frames, 15 apart in total
  out = ops.sample_eval_clips(features, num_views=3, view_starts='pyslowfast', **geometry)
  np.testing.assert_array_equal(out['fast_index'].numpy()[:, 0], [0, 33, 66])  # int(100 * i / 3)
  spread = ops.sample_eval_clips(features, num_views=10, view_starts='spread', **geometry)
  np.testing.assert_array_equal(
    spread['fast_index'].numpy()[:, 0], [0, 11, 22, 33, 44, 55, 66, 77, 88, 100]
  )
  # A video no longer than the clip: every view starts at frame 0 either way.
  short = {'fps': tf.constant(30.0), 'num_frames': tf.constant(10)}
  out = ops.sample_eval_clips(short, num_views=2, view_starts='pyslowfast', **geometry)
  np.testing.assert_array_equal(out['fast_index'].numpy()[:, 0], [0, 0])


def test_unknown_view_starts_is_an_error():
  with pytest.raises(ValueError, match='input.view_starts'):
    ops.view_start_frames(tf.constant(10.0), 3, 'middle')


def test_audio_window_starts_at_first_frame_timestamp():
  features = {'fps': tf.constant(25.0), 'fast_index': tf.constant([40, 41, 42])}
  out, n = ops.audio_window(features, num_frames=4, tau=16, target_fps=30.0, sample_rate=16000)
  assert out['audio_start'].numpy() == 40 / 25 * 16000
  assert n == round(64 / 30 * 16000)


@pytest.mark.parametrize('start', [0, 8000, 30000])
def test_hard_negative_is_far_enough_and_inside(start):
  features = {'audio_start': tf.constant(start), 'audio': tf.zeros([48000], tf.int16)}
  for s in range(20):
    out = ops.sample_hard_negative(features, tf.constant([s, 0]), num_samples=16000, min_shift=8000)
    neg = int(out['negative_start'])
    assert out['negative_is_hard'].numpy() == 1.0
    assert abs(neg - start) >= 8000 and 0 <= neg <= 32000


def test_hard_negative_flags_too_short_audio():
  features = {'audio_start': tf.constant(0), 'audio': tf.zeros([20000], tf.int16)}
  out = ops.sample_hard_negative(features, tf.constant([0, 0]), num_samples=16000, min_shift=8000)
  assert out['negative_is_hard'].numpy() == 0.0


def _jpeg(value, height=40, width=60):
  image = np.zeros((height, width, 3), np.uint8)
  image[..., 0] = value
  image[:, : width // 2, 1] = 200  # left half green: tells flips apart
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='JPEG', quality=95)
  return buffer.getvalue()


def _features():
  return {
    'frames': tf.constant([_jpeg(10 * i) for i in range(20)]),
    'fps': tf.constant(30.0),
    'num_frames': tf.constant(20),
    'height': tf.constant(40),
    'width': tf.constant(60),
    'audio': tf.constant((np.sin(np.arange(16000) / 5.0) * 8000).astype(np.int16)),
    'has_audio': tf.constant(True),
  }


def _parity(fn):
  eager = fn(_features())
  graph = next(iter(tf.data.Dataset.from_tensors(_features()).map(fn)))
  for key in eager:
    if eager[key].dtype == tf.string:
      continue
    np.testing.assert_allclose(
      np.asarray(eager[key]), np.asarray(graph[key]), atol=1e-5, err_msg=key
    )
  return eager


def test_ops_agree_eagerly_and_in_tf_data():
  seed = tf.constant([3, 4], tf.int64)
  sample = lambda f: ops.sample_train_clip(f, seed, num_frames=2, tau=4, alpha=2, target_fps=30.0)
  out = _parity(sample)
  index = out['fast_index'].numpy()  # int(linspace(s, s + 7, 4)) for a random s in [0, 12]
  assert index[-1] - index[0] == 7 and set(np.diff(index)) <= {2, 3} and 0 <= index[0] <= 12
  decode = lambda f: ops.decode_train_frames(
    sample(f), seed, index_key='fast_index', jitter_scales=(32, 40), crop_size=24, flip=True
  )
  out = _parity(decode)
  red = out['video'].numpy()[..., 0].mean(axis=(1, 2))
  np.testing.assert_allclose(red, 10 * out['fast_index'].numpy(), atol=3)  # frame i has red 10 i
  windowed = lambda f: ops.audio_window(
    sample(f), num_frames=2, tau=4, target_fps=30.0, sample_rate=16000
  )[0]
  spectro = lambda f: {
    'a': ops.audio_features(
      windowed(f), config_lib.audio_config(), start_key='audio_start', num_samples=4267
    )
  }
  out = _parity(spectro)
  assert out['a'].shape == (128, 80, 1) and np.isfinite(out['a'].numpy()).all()


def test_train_crop_flips_half_of_the_seeds():
  flipped = 0
  for s in range(16):
    f = ops.sample_train_clip(
      _features(), tf.constant([s, 0]), num_frames=1, tau=1, alpha=1, target_fps=30.0
    )
    out = ops.decode_train_frames(
      f,
      tf.constant([s, 0]),
      index_key='fast_index',
      jitter_scales=(40, 40),
      crop_size=40,
      flip=True,
    )
    green = out['video'].numpy()[0, :, :, 1].mean(axis=0)
    flipped += green[-5:].mean() > green[:5].mean()
  assert 3 <= flipped <= 13


def test_spatial_crops_cover_start_centre_end_of_longer_side():
  images = tf.tile(tf.range(60, dtype=tf.float32)[None, None, :, None], [1, 40, 1, 3])
  crops = ops.spatial_crops(images, short_side=40, crop_size=40, num_crops=3).numpy()
  np.testing.assert_allclose(crops[:, 0, 0, 0, 0], [0, 10, 20])
  centre = ops.spatial_crops(images, short_side=40, crop_size=40, num_crops=1).numpy()
  np.testing.assert_allclose(centre[0, 0, 0, :, 0], np.arange(10, 50))
