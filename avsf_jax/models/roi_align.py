"""RoIAlign with torchvision's kernel semantics, as separable interpolation matrices.

For each box, torchvision's `roi_align` (= detectron2's) averages, per output bin, a grid of
bilinear samples of the feature map (spec `ava.md` 2.3). Bilinear sampling is separable and
so is the grid (count = g_h * g_w, and a sample is dropped when its y *or* its x is out of
range), so the whole operation is `A_y @ F @ A_x^T` per box and channel, with
`A_y` of shape (P_h, H) holding, for output row i, the averaged bilinear weights of its g_h
sample rows. That form is jittable with static shapes and runs as two matmuls (no gathers).

Adaptive sampling (`sampling_ratio <= 0`) uses ceil(roi size / output size) samples per bin,
a per-box number: the samples lie on a static grid of `max_grid` per axis and those with
index >= g are masked. This is exact whenever g <= max_grid; a box that would need more is
sampled as if `sampling_ratio = max_grid` (`required_grid` gives a grid that is exact for every
box inside the map).
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp


def _pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
  pair = (size, size) if isinstance(size, int) else tuple(size)
  if len(pair) != 2 or any(int(p) != p or p < 1 for p in pair):
    raise ValueError(f'{name}: expected a positive int or a pair of them, got {size!r}')
  return int(pair[0]), int(pair[1])


def required_grid(feature_size: int, output_size: int) -> int:
  """Static sample-grid size per axis that is exact for any box inside a map of this size.

  A box spanning the whole map (plus the legacy mode's 1-pixel minimum) needs
  ceil(size / P) samples per bin; one more covers boxes that reach past the border (spec
  2.3: G = ceil(max(H, W) / P) + 1).
  """
  return math.ceil(feature_size / output_size) + 1


def _axis_weights(
  start: jax.Array,
  length: jax.Array,
  size: int,
  bins: int,
  grid: int,
  sampling_ratio: int,
) -> jax.Array:
  """(K,) box starts and lengths on one axis -> (K, bins, size) averaged sampling weights."""
  bin_size = length / bins
  if sampling_ratio > 0:
    count = jnp.full_like(length, sampling_ratio, dtype=jnp.int32)
  else:
    # Boxes needing more samples than the static grid get `grid` evenly spread ones.
    count = jnp.minimum(jnp.ceil(length / bins).astype(jnp.int32), grid)
  # Masked samples divide by 1 to stay finite; their weight is zeroed below.
  denominator = jnp.maximum(count, 1).astype(length.dtype)
  bin_index = jnp.arange(bins, dtype=length.dtype)
  sample_index = jnp.arange(grid)
  offsets = (sample_index.astype(length.dtype) + 0.5)[None, None, :] * (bin_size / denominator)[
    :, None, None
  ]
  coords = start[:, None, None] + bin_index[None, :, None] * bin_size[:, None, None] + offsets
  used = sample_index[None, None, :] < count[:, None, None]
  inside = (coords >= -1.0) & (coords <= size)
  coords = jnp.maximum(coords, 0.0)
  low = jnp.floor(coords).astype(jnp.int32)
  at_end = low >= size - 1
  low = jnp.where(at_end, size - 1, low)
  high = jnp.where(at_end, size - 1, low + 1)
  frac = jnp.where(at_end, 0.0, coords - low.astype(coords.dtype))
  keep = (used & inside).astype(coords.dtype) / denominator[:, None, None]
  weights = jax.nn.one_hot(low, size, dtype=coords.dtype) * ((1.0 - frac) * keep)[..., None]
  weights += jax.nn.one_hot(high, size, dtype=coords.dtype) * (frac * keep)[..., None]
  return weights.sum(axis=2)


def roi_align(
  features: jax.Array,
  boxes: jax.Array,
  *,
  output_size: int | Sequence[int],
  spatial_scale: float,
  sampling_ratio: int,
  aligned: bool,
  max_grid: int | None = None,
  dtype: jnp.dtype = jnp.float32,
) -> jax.Array:
  """RoIAlign of per-clip boxes: (N, H, W, C) maps, (N, M, 4) boxes -> (N, M, P_h, P_w, C).

  Args:
    features: channels-last feature maps, one per clip.
    boxes: x1, y1, x2, y2 per box in input-pixel coordinates (multiplied by `spatial_scale`
      to reach the map); padded boxes may hold anything finite, their rows are just ignored
      by the caller's mask.
    output_size: P, or (P_h, P_w).
    spatial_scale: feature-map pixels per input pixel (1/16 for the AVA res5 map).
    sampling_ratio: samples per bin and axis; <= 0 for torchvision's adaptive
      ceil(roi size / P).
    aligned: True shifts box coordinates by -0.5 pixel (detectron2's corrected mode);
      False is the legacy mode of PySlowFast's released checkpoints (and torchvision's
      default), which also forces rois to at least 1x1 map pixels.
    max_grid: static sample grid per axis for adaptive sampling; defaults to
      `required_grid(max(H, W), max(P))`. Ignored when `sampling_ratio > 0`.
    dtype: dtype of the two interpolation matmuls' operands (e.g. bfloat16 on accelerators);
      sample positions and weights are computed, and the products accumulated, in float32.

  Returns:
    float32 pooled features.
  """
  if features.ndim != 4:
    raise ValueError(f'features: expected (N, H, W, C), got shape {features.shape}')
  if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != features.shape[0]:
    raise ValueError(
      f'boxes: expected (N={features.shape[0]}, M, 4) as x1, y1, x2, y2, got shape {boxes.shape}'
    )
  bins_h, bins_w = _pair(output_size, 'output_size')
  n, height, width, _ = features.shape
  if sampling_ratio > 0:
    grid_h = grid_w = int(sampling_ratio)
  else:
    if max_grid is None:
      max_grid = required_grid(max(height, width), min(bins_h, bins_w))
    grid_h = grid_w = int(max_grid)
  offset = 0.5 if aligned else 0.0
  flat = boxes.reshape(-1, 4).astype(jnp.float32) * spatial_scale - offset
  x0, y0, x1, y1 = flat[:, 0], flat[:, 1], flat[:, 2], flat[:, 3]
  roi_w, roi_h = x1 - x0, y1 - y0
  if not aligned:
    roi_w, roi_h = jnp.maximum(roi_w, 1.0), jnp.maximum(roi_h, 1.0)
  weights_y = _axis_weights(y0, roi_h, height, bins_h, grid_h, sampling_ratio)
  weights_x = _axis_weights(x0, roi_w, width, bins_w, grid_w, sampling_ratio)
  m = boxes.shape[1]
  weights_y = weights_y.reshape(n, m, bins_h, height)
  weights_x = weights_x.reshape(n, m, bins_w, width)
  f32 = jnp.float32
  rows = jnp.einsum(
    'nmph,nhwc->nmpwc',
    weights_y.astype(dtype),
    features.astype(dtype),
    preferred_element_type=f32,
  )
  return jnp.einsum(
    'nmpwc,nmqw->nmpqc', rows.astype(dtype), weights_x.astype(dtype), preferred_element_type=f32
  )


def roi_align_indexed(features: jax.Array, rois: jax.Array, **kwargs) -> jax.Array:
  """torchvision's calling convention: (K, 5) rois of (batch index, x1, y1, x2, y2).

  Returns (K, P_h, P_w, C). Each roi picks its map by index, so this copies one map per roi;
  prefer `roi_align` with per-clip padded boxes inside models.
  """
  if rois.ndim != 2 or rois.shape[-1] != 5:
    raise ValueError(f'rois: expected (K, 5) as batch index, x1, y1, x2, y2, got {rois.shape}')
  maps = features[rois[:, 0].astype(jnp.int32)]
  return roi_align(maps, rois[:, None, 1:], **kwargs)[:, 0]
