"""The AVA detectors: the SlowFast-family backbone's res5 maps plus the RoI head.

Spec `ava.md` 2.1-2.4. `Detector` is `AVSlowFast` (every backbone field, so `config.model`
reads the same) whose classifier is replaced by `detection_head.RoIHead`, named `head`. The
backbone's modules keep their top-level names (`slow_res2`, `fast_to_slow_res2`, ...), so a
Kinetics classification export initialises a detector tensor for tensor (`init_from`; the
400-way `head` does not match and is re-initialised). The detection setting is
`res5_spatial_stride=1, res5_dilation=2` (res5 at 1/16, `roi_spatial_scale` 1/16).

Inputs: the backbone's pathways plus 'boxes' (N, M, 4) x1, y1, x2, y2 in the input pixels of
the transformed clip (padded to `max_boxes` M; the task masks padding in the loss). Returns
`(logits (N, M, num_classes), aux)` with aux as the backbone's ('avs', 'pooled',
'drop_pathway_keep'), so the AVS loss could be added to detection training unchanged.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from avsf_jax.models import avslowfast, build, detection_head


class Detector(avslowfast.AVSlowFast):
  """AVSlowFast backbone + RoI head (see the module docstring).

  Attributes (beyond `AVSlowFast`'s; `num_classes` is the head's outputs, 80 for AVA):
    roi_output_size: RoIAlign's P (7).
    roi_spatial_scale: res5 map pixels per input pixel (1/16 with a stride-1 res5).
    roi_sampling_ratio: RoIAlign samples per bin and axis; <= 0 adaptive (PySlowFast: 0).
    roi_aligned: the half-pixel-corrected RoIAlign (True); False for PySlowFast's c2 zoo.
    roi_audio: 'concat' (audio pool5 broadcast to every box, spec 2.4 (a)) or
      'laterals_only' (audio reaches the boxes only through the A->FS laterals).
  """

  roi_output_size: int = 7
  roi_spatial_scale: float = 1.0 / 16.0
  roi_sampling_ratio: int = 0
  roi_aligned: bool = True
  roi_audio: str = 'concat'

  @nn.compact
  def __call__(
    self, inputs: Mapping[str, jax.Array], *, train: bool
  ) -> tuple[jax.Array, dict[str, Any]]:
    if 'boxes' not in inputs:
      raise KeyError(f'Detector: inputs lack "boxes" (N, M, 4); got keys {sorted(inputs)}')
    boxes = inputs['boxes']
    x, pooled, avs, keep = self.trunk(inputs, train=train)
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != x[self.pathways[0]].shape[0]:
      raise ValueError(
        f'Detector: boxes must be (N, M, 4) with N = the clip batch, got {boxes.shape}'
      )
    visual = tuple(p for p in self.pathways if p != 'audio')
    if not visual:
      raise ValueError(f'Detector: needs a visual pathway, got pathways={tuple(self.pathways)}')
    features = {p: x[p] for p in visual}
    if 'audio' in self.pathways:
      audio = pooled['audio']
      if self.drop_pathway_scope == 'laterals_and_head' and keep is not None:
        k = keep.astype(audio.dtype)
        audio = audio * k.reshape(k.shape + (1,) * (audio.ndim - k.ndim))
      # RoIHead pools an audio map globally; pass the pooled (N, C) features as a (N, 1, C) map.
      features['audio'] = audio[:, None, :]
    logits = detection_head.RoIHead(
      num_classes=int(self.num_classes),
      dropout_rate=self.dropout_rate,
      pathways=visual,
      output_size=self.roi_output_size,
      spatial_scale=self.roi_spatial_scale,
      sampling_ratio=self.roi_sampling_ratio,
      aligned=self.roi_aligned,
      audio=self.roi_audio,
      dtype=self.dtype,
      name='head',
    )(features, boxes.astype(jnp.float32), train=train)
    keep_out = jnp.ones((), jnp.float32) if keep is None else keep.astype(jnp.float32)
    return logits, {'avs': avs, 'pooled': pooled, 'drop_pathway_keep': keep_out}


_FIELDS = {f.name for f in dataclasses.fields(Detector)} - {'parent', 'name'}


def build_detector(model_config: Mapping[str, Any] | ml_collections.ConfigDict) -> Detector:
  """`Detector(**model_config)` (as `build.build_model` does for `AVSlowFast`); unknown keys
  are an error naming the known fields."""
  kwargs = {k: build._plain(v) for k, v in dict(model_config).items()}
  unknown = sorted(set(kwargs) - _FIELDS)
  if unknown:
    raise ValueError(f'config.model has unknown fields {unknown}; known fields: {sorted(_FIELDS)}')
  if 'dtype' in kwargs:
    kwargs['dtype'] = jnp.dtype(kwargs['dtype'])
  return Detector(**kwargs)
