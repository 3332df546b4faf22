"""avsf_jax.models.roi_align against a loop-by-loop numpy reference of torchvision's kernel.

torchvision cannot be imported here (its wheels do not load beside this CPU torch build), so
the reference `_reference_roi_align` is written from the spec (`ava.md` 2.3, torchvision's
`roi_align_kernel.cpp` semantics): one bilinear sample at a time, float64.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avsf_jax.models import roi_align


def _bilinear(fmap, y, x):
  height, width = fmap.shape[:2]
  if y < -1.0 or y > height or x < -1.0 or x > width:
    return np.zeros(fmap.shape[2])
  y, x = max(y, 0.0), max(x, 0.0)
  y_lo, x_lo = int(y), int(x)
  if y_lo >= height - 1:
    y_hi = y_lo = height - 1
    y = float(y_lo)
  else:
    y_hi = y_lo + 1
  if x_lo >= width - 1:
    x_hi = x_lo = width - 1
    x = float(x_lo)
  else:
    x_hi = x_lo + 1
  ly, lx = y - y_lo, x - x_lo
  hy, hx = 1.0 - ly, 1.0 - lx
  return (
    hy * hx * fmap[y_lo, x_lo]
    + hy * lx * fmap[y_lo, x_hi]
    + ly * hx * fmap[y_hi, x_lo]
    + ly * lx * fmap[y_hi, x_hi]
  )


def _reference_roi_align(fmap, box, size, scale, sampling_ratio, aligned):
  """One (H, W, C) map, one x1, y1, x2, y2 box -> (P, P, C), torchvision's loops in float64."""
  fmap = np.asarray(fmap, np.float64)
  off = 0.5 if aligned else 0.0
  x0, y0 = box[0] * scale - off, box[1] * scale - off
  w, h = box[2] * scale - off - x0, box[3] * scale - off - y0
  if not aligned:
    w, h = max(w, 1.0), max(h, 1.0)
  bin_h, bin_w = h / size, w / size
  g_h = sampling_ratio if sampling_ratio > 0 else math.ceil(h / size)
  g_w = sampling_ratio if sampling_ratio > 0 else math.ceil(w / size)
  count = max(g_h * g_w, 1)
  out = np.zeros((size, size, fmap.shape[2]))
  for i in range(size):
    for j in range(size):
      total = np.zeros(fmap.shape[2])
      for a in range(g_h):
        y = y0 + i * bin_h + (a + 0.5) * bin_h / g_h
        for b in range(g_w):
          x = x0 + j * bin_w + (b + 0.5) * bin_w / g_w
          total += _bilinear(fmap, y, x)
      out[i, j] = total / count
  return out


def _features(n=2, h=6, w=8, c=3, seed=0):
  return np.random.default_rng(seed).normal(size=(n, h, w, c)).astype(np.float32)


# Hand-picked boxes in input pixels (scale 1/16 onto a 6x8 map: the image is 96x128).
_EDGE_BOXES = np.array(
  [
    [0.0, 0.0, 128.0, 96.0],  # the whole image
    [10.0, 20.0, 70.0, 90.0],  # an ordinary box
    [-40.0, -30.0, 50.0, 40.0],  # partly outside, top-left
    [100.0, 70.0, 170.0, 130.0],  # partly outside, bottom-right (past H and W)
    [200.0, 150.0, 260.0, 190.0],  # fully outside: samples beyond W + 1 read zero
    [33.0, 41.0, 33.0, 41.0],  # zero-size
    [60.0, 50.0, 62.0, 51.0],  # tiny: legacy mode widens it to one map pixel
    [50.0, 40.0, 30.0, 20.0],  # inverted (x2 < x1): aligned mode has no samples -> 0
  ],
  np.float32,
)


def _check(features, boxes, sampling_ratio, aligned, size=7, scale=1 / 16, max_grid=None):
  fn = jax.jit(
    functools.partial(
      roi_align.roi_align,
      output_size=size,
      spatial_scale=scale,
      sampling_ratio=sampling_ratio,
      aligned=aligned,
      max_grid=max_grid,
    )
  )
  ours = fn(jnp.asarray(features), jnp.asarray(boxes))
  assert ours.shape == boxes.shape[:2] + (size, size, features.shape[-1])
  assert ours.dtype == jnp.float32
  for n in range(boxes.shape[0]):
    for m in range(boxes.shape[1]):
      ref = _reference_roi_align(features[n], boxes[n, m], size, scale, sampling_ratio, aligned)
      np.testing.assert_allclose(ours[n, m], ref, atol=1e-5, err_msg=f'clip {n} box {m}')


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [0, 2])
def test_matches_reference_on_edge_case_and_random_boxes(aligned, sampling_ratio):
  """The hand-picked boxes, then 10 random ones per clip reaching past every border."""
  features = _features()
  corners = np.random.default_rng(1).uniform(-30, 160, size=(2, 10, 2, 2))
  random_boxes = np.concatenate([corners.min(axis=2), corners.max(axis=2)], axis=-1)
  boxes = np.concatenate([np.stack([_EDGE_BOXES, _EDGE_BOXES[::-1]]), random_boxes], axis=1)
  _check(features, boxes.astype(np.float32), sampling_ratio, aligned)


def test_adaptive_sampling_uses_more_samples_for_bigger_boxes():
  """A 24x24-pixel box on a scale-1 map needs ceil(24 / 7) = 4 samples per bin and axis."""
  features = _features(n=1, h=32, w=32, c=2, seed=3)
  boxes = np.array([[[1.5, 2.25, 25.5, 26.25], [3.0, 3.0, 5.0, 6.0]]], np.float32)
  assert roi_align.required_grid(32, 7) == 6
  _check(features, boxes, 0, True, scale=1.0)
  _check(features, boxes, 0, False, scale=1.0, max_grid=4)


def test_hand_computed_case():
  """A 2x2 ramp map f[y, x] = 10 y + x, one output bin, one sample (sampling_ratio=1).

  Legacy mode, box (0, 0)-(1, 1): the sample sits at (0.5, 0.5) -> 0.25 (0 + 1 + 10 + 11) = 5.5.
  Aligned mode, same box: shifted by -0.5 to (0, 0) -> f[0, 0] = 0.
  Aligned, box (1, 1)-(3, 3) (2x2, sample at (1.5, 1.5) -> clamped to the last row/column):
  f[1, 1] = 11.
  """
  fmap = np.array([[0.0, 1.0], [10.0, 11.0]], np.float32)[None, :, :, None]
  kwargs = dict(output_size=1, spatial_scale=1.0, sampling_ratio=1)
  legacy_fn = jax.jit(functools.partial(roi_align.roi_align, aligned=False, **kwargs))
  aligned_fn = jax.jit(functools.partial(roi_align.roi_align, aligned=True, **kwargs))
  legacy = legacy_fn(fmap, np.array([[[0, 0, 1, 1]]], np.float32))
  aligned, corner = aligned_fn(fmap, np.array([[[0, 0, 1, 1], [1, 1, 3, 3]]], np.float32))[0]
  assert float(legacy.squeeze()) == pytest.approx(5.5, abs=1e-6)
  assert float(aligned.squeeze()) == pytest.approx(0.0, abs=1e-6)
  assert float(corner.squeeze()) == pytest.approx(11.0, abs=1e-6)


def test_jits_and_indexed_form_picks_the_map_by_batch_index():
  features = _features(n=3, seed=4)
  rois = np.array([[2, 10.0, 20.0, 70.0, 90.0], [0, -40.0, -30.0, 50.0, 40.0]], np.float32)
  fn = jax.jit(
    lambda f, r: roi_align.roi_align_indexed(
      f, r, output_size=7, spatial_scale=1 / 16, sampling_ratio=0, aligned=False
    )
  )
  ours = fn(features, rois)
  for k, roi in enumerate(rois):
    ref = _reference_roi_align(features[int(roi[0])], roi[1:], 7, 1 / 16, 0, False)
    np.testing.assert_allclose(ours[k], ref, atol=1e-5)


def test_rejects_bad_shapes():
  with pytest.raises(ValueError, match='boxes: expected'):
    roi_align.roi_align(
      _features(),
      np.zeros((2, 4)),
      output_size=7,
      spatial_scale=1.0,
      sampling_ratio=0,
      aligned=True,
    )
  with pytest.raises(ValueError, match='output_size'):
    roi_align.roi_align(
      _features(),
      np.zeros((2, 1, 4)),
      output_size=0,
      spatial_scale=1.0,
      sampling_ratio=0,
      aligned=True,
    )


def test_bfloat16_matmuls_stay_close_to_float32():
  features = _features(seed=5)
  boxes = np.stack([_EDGE_BOXES, _EDGE_BOXES[::-1]])
  kwargs = dict(output_size=7, spatial_scale=1 / 16, sampling_ratio=0, aligned=True)
  full = jax.jit(functools.partial(roi_align.roi_align, **kwargs))(features, boxes)
  half = jax.jit(functools.partial(roi_align.roi_align, dtype=jnp.bfloat16, **kwargs))(
    features, boxes
  )
  assert half.dtype == jnp.float32
  np.testing.assert_allclose(half, full, atol=0.05)
  assert not np.array_equal(half, full)  # the matmuls really ran in bfloat16


def test_boxes_past_the_static_grid_get_that_many_samples():
  """A 24-pixel box needs 4 samples per bin; with a grid of 2 it is sampled as with
  sampling_ratio=2, not truncated."""
  features = _features(n=1, h=32, w=32, c=2, seed=6)
  boxes = np.array([[[1.5, 2.25, 25.5, 26.25]]], np.float32)
  ours = jax.jit(
    functools.partial(
      roi_align.roi_align,
      output_size=7,
      spatial_scale=1.0,
      sampling_ratio=0,
      aligned=True,
      max_grid=2,
    )
  )(features, boxes)
  ref = _reference_roi_align(features[0], boxes[0, 0], 7, 1.0, 2, True)
  np.testing.assert_allclose(ours[0, 0], ref, atol=1e-5)
