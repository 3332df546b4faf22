"""avsf_jax.input.ava_ops: clip indices, audio window and box transforms on hand-computed cases."""

import numpy as np
import pytest

from avsf_jax.input import ava_ops


def test_keyframe_clip_is_centred_and_clamped():
  # 4x16 with alpha 8: Fast 32 frames at stride 2 around c = (902 - 900) * 30 = 60.
  fast = ava_ops.keyframe_frame_indices(902, num_frames=32, stride=2, total_frames=27030)
  np.testing.assert_array_equal(fast, np.arange(28, 92, 2))
  slow = ava_ops.keyframe_frame_indices(902, num_frames=4, stride=16, total_frames=27030)
  np.testing.assert_array_equal(slow, [28, 44, 60, 76])
  # Near the ends the indices clamp to the first / last frame.
  start = ava_ops.keyframe_frame_indices(900, num_frames=4, stride=16, total_frames=100)
  np.testing.assert_array_equal(start, [0, 0, 0, 16])
  end = ava_ops.keyframe_frame_indices(903, num_frames=4, stride=16, total_frames=100)
  np.testing.assert_array_equal(end, [58, 74, 90, 99])


def test_audio_window_covers_the_clip_frames():
  start, end = ava_ops.audio_window(np.arange(28, 92, 2))
  assert start == pytest.approx(28 / 30) and end == pytest.approx(91 / 30)


def test_normalised_boxes_to_pixels_clip_to_the_last_pixel():
  boxes = ava_ops.to_pixels([[0.1, 0.2, 1.0, 0.5]], height=100, width=200)
  np.testing.assert_allclose(boxes, [[20.0, 20.0, 199.0, 50.0]])


def test_short_side_scale_of_frame_and_boxes():
  assert ava_ops.short_side_size(360, 640, 256) == (256, 455)  # floor(640 / 360 * 256)
  assert ava_ops.short_side_size(640, 360, 256) == (455, 256)
  boxes = ava_ops.scale_boxes([[64.0, 36.0, 128.0, 72.0]], 360, 640, 256)
  np.testing.assert_allclose(
    boxes, [[64 * 455 / 640, 36 * 455 / 640, 128 * 455 / 640, 72 * 455 / 640]]
  )


def test_crop_and_flip():
  boxes = np.array([[10.0, 20.0, 50.0, 60.0]])
  np.testing.assert_allclose(ava_ops.crop_boxes(boxes, 5, 8), [[2.0, 15.0, 42.0, 55.0]])
  np.testing.assert_allclose(ava_ops.flip_boxes(boxes, 224), [[173.0, 20.0, 213.0, 60.0]])
  np.testing.assert_allclose(ava_ops.flip_boxes(ava_ops.flip_boxes(boxes, 224), 224), boxes)


def test_train_transform_applies_the_returned_draws():
  rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
  boxes = np.array([[0.1, 0.2, 0.6, 0.9], [0.0, 0.0, 1.0, 1.0]])
  out, draws = ava_ops.train_boxes(
    boxes, 360, 640, rng_a, min_size=256, max_size=320, crop_size=224
  )
  short = ava_ops.jitter_short_side(rng_b, 256, 320)
  assert short == draws['short_side'] and 256 <= short <= 320
  height, width = ava_ops.short_side_size(360, 640, short)
  y, x = ava_ops.crop_offsets(rng_b, height, width, 224)
  assert (y, x) == draws['offsets']
  flip = rng_b.uniform() < 0.5
  assert flip == draws['flip']
  factor = width / 640
  expected = np.array([[64.0, 72.0, 384.0, 324.0], [0.0, 0.0, 639.0, 359.0]]) * factor
  expected = ava_ops.crop_boxes(expected, y, x)
  if flip:
    expected = ava_ops.flip_boxes(expected, 224)
  np.testing.assert_allclose(out, np.clip(expected, 0, 223), rtol=1e-5)
  assert out.min() >= 0 and out.max() <= 223


def test_jittered_short_side_stays_in_range_and_is_inverse_uniform():
  rng = np.random.default_rng(0)
  sizes = np.array([ava_ops.jitter_short_side(rng, 256, 320) for _ in range(4000)])
  assert sizes.min() == 256 and sizes.max() == 320
  # Uniform in 1/size: the median is the harmonic midpoint 2 / (1/256 + 1/320) = 284.4.
  assert np.median(sizes) == pytest.approx(284.4, abs=2.0)


def test_eval_transform_is_a_full_frame_short_side_scale():
  out = ava_ops.eval_boxes([[0.5, 0.5, 1.0, 1.0]], 360, 640, 256)
  np.testing.assert_allclose(out, [[320 * 455 / 640, 180 * 455 / 640, 454.0, 255.0]], rtol=1e-6)


def test_multi_hot_and_padding():
  labels = ava_ops.multi_hot([[1, 80], [-1], [12]], 80)
  assert labels.shape == (3, 80) and labels.sum() == 3
  assert labels[0, 0] == labels[0, 79] == labels[2, 11] == 1.0 and not labels[1].any()
  with pytest.raises(ValueError, match='action id: expected 1..80 or -1, got 81'):
    ava_ops.multi_hot([[81]], 80)
  boxes = np.arange(12, dtype=np.float32).reshape(3, 4)
  padded, padded_labels, mask, dropped = ava_ops.pad_boxes(boxes, labels, 5)
  np.testing.assert_array_equal(mask, [True, True, True, False, False])
  np.testing.assert_array_equal(padded[:3], boxes)
  assert not padded[3:].any() and not padded_labels[3:].any() and dropped == 0
  _, _, mask, dropped = ava_ops.pad_boxes(boxes, labels, 2)
  assert mask.all() and dropped == 1


def test_filter_by_score_keeps_scores_at_the_threshold():
  np.testing.assert_array_equal(ava_ops.filter_by_score([0.79, 0.8, 0.95], 0.8), [1, 2])
