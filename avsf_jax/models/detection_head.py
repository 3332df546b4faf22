"""RoI head of the AVA detectors: per-box features from the backbone's res5 maps, then an FC.

Spec `ava.md` 2.2 (PySlowFast `ResNetRoIHead`): for each visual pathway, average the res5 map
over time, RoIAlign every box to 7x7 at scale 1/16, and max-pool the 7x7; concatenate the
pathways, apply dropout and one FC (N(0, 0.01) init, bias) to the class count. The head takes
a dict of feature maps, so it does not depend on how the backbone was built.

AVSlowFast (2.4, an assumption the papers leave open): with `audio='concat'` (the default for
audio models) the Audio pathway's global average (pool5) is broadcast to every box and
concatenated to its RoI feature, as the classifier's pool5 fusion does; with
`audio='laterals_only'` audio reaches the boxes only through the backbone's A->FS laterals.

Boxes are padded to a static `max_boxes` per clip; the head computes every slot (padded ones
from whatever finite box they hold) and the loss masks them (`tasks.detection`). Outputs are
logits; `tasks.detection.scores` gives the per-class sigmoid probabilities used at evaluation.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from avsf_jax.models import heads, layers, roi_align

AUDIO_MODES = ('concat', 'laterals_only')


def pool_boxes(
  feature_map: jax.Array,
  boxes: jax.Array,
  *,
  output_size: int,
  spatial_scale: float,
  sampling_ratio: int,
  aligned: bool,
  dtype: Any = jnp.float32,
) -> jax.Array:
  """(N, T, H, W, C) map, (N, M, 4) boxes -> (N, M, C): time average, RoIAlign, spatial max.

  The time average is taken in float32; RoIAlign's matmuls run in `dtype`.
  """
  if feature_map.ndim != 5:
    raise ValueError(f'feature map: expected (N, T, H, W, C), got shape {feature_map.shape}')
  frames = feature_map.astype(jnp.float32).mean(axis=1)
  pooled = roi_align.roi_align(
    frames,
    boxes,
    output_size=output_size,
    spatial_scale=spatial_scale,
    sampling_ratio=sampling_ratio,
    aligned=aligned,
    dtype=dtype,
  )
  return pooled.max(axis=(2, 3))


class RoIHead(nn.Module):
  """Per-box logits (N, M, num_classes) from res5 maps and (N, M, 4) boxes.

  Attributes:
    num_classes: outputs (80 for AVA: every class is trained, 60 are evaluated).
    dropout_rate: before the FC (0.5 in the papers).
    pathways: the visual feature maps RoI-pooled, in concatenation order.
    output_size: RoIAlign output P (7).
    spatial_scale: map pixels per input pixel (1/16 with res5 at stride 16).
    sampling_ratio: RoIAlign samples per bin and axis; <= 0 for adaptive.
    aligned: RoIAlign's half-pixel corrected mode; False for PySlowFast's c2 checkpoints.
    audio: how an 'audio' feature map, when given, reaches the boxes (`AUDIO_MODES`).
    dtype: dtype of RoIAlign's interpolation matmuls (the backbone's compute dtype); pooling,
      the FC and the logits are float32, as in the classifier head.
  """

  num_classes: int
  dropout_rate: float
  pathways: Sequence[str] = ('slow', 'fast')
  output_size: int = 7
  spatial_scale: float = 1.0 / 16.0
  sampling_ratio: int = 0
  aligned: bool = True
  audio: str = 'concat'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self, features: Mapping[str, jax.Array], boxes: jax.Array, *, train: bool
  ) -> jax.Array:
    """Args: features, {'slow': (N, T, H, W, C), 'fast': ..., optional 'audio': (N, ..., C)};
    boxes, (N, M, 4) x1, y1, x2, y2 in the input pixels of the transformed clip."""
    if self.audio not in AUDIO_MODES:
      raise ValueError(f'audio: expected one of {AUDIO_MODES}, got {self.audio!r}')
    missing = [p for p in self.pathways if p not in features]
    if missing:
      raise ValueError(f'features: missing pathways {missing}; got {sorted(features)}')
    per_box = [
      pool_boxes(
        features[p],
        boxes,
        output_size=self.output_size,
        spatial_scale=self.spatial_scale,
        sampling_ratio=self.sampling_ratio,
        aligned=self.aligned,
        dtype=self.dtype,
      )
      for p in self.pathways
    ]
    if 'audio' in features and self.audio == 'concat':
      audio = heads.global_pool(features['audio'])
      per_box.append(jnp.broadcast_to(audio[:, None, :], (*boxes.shape[:2], audio.shape[-1])))
    x = jnp.concatenate(per_box, axis=-1)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(
      self.num_classes, dtype=jnp.float32, kernel_init=layers.fc_kernel_init, name='projection'
    )(x)
