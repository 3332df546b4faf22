"""The ROT pretext head: a 4-way linear classifier of the clip's rotation (self-supervised 1.2).

It reads the pooled pool5 features that `AVSlowFast` returns in `aux['pooled']`. By default only
the visual pathways (Slow + Fast: 2048 + 256 = 2304 channels for R50): the audio is not rotated,
so it carries no rotation signal. `features='all'` reads the audio too (3328 channels). The head
is separate from the classification head; no classification loss is used in pretraining.
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from avsf_jax.models import layers

FEATURES = {'visual': ('slow', 'fast'), 'all': ('slow', 'fast', 'audio')}


class RotationHead(nn.Module):
  """FC (no dropout) from pooled pathway features to `num_rotations` logits, in float32.

  Attributes:
    num_rotations: 4 (0, 90, 180, 270 degrees).
    features: 'visual' (Slow and Fast pool5) or 'all' (with the Audio pool5).
    dtype: kept for the model-family convention; the FC always runs in float32.
  """

  num_rotations: int = 4
  features: str = 'visual'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pooled: Mapping[str, jax.Array], *, train: bool) -> jax.Array:
    del train  # no dropout: the head is the whole pretext classifier
    if self.features not in FEATURES:
      raise ValueError(f'RotationHead: features={self.features!r}; one of {sorted(FEATURES)}')
    names = [p for p in FEATURES[self.features] if p in pooled]
    if not any(p in pooled for p in ('slow', 'fast')):
      raise KeyError(f'RotationHead: needs the slow or fast pool5 features; got {sorted(pooled)}')
    x = jnp.concatenate([pooled[p].astype(jnp.float32) for p in names], axis=-1)
    return nn.Dense(
      self.num_rotations, dtype=jnp.float32, kernel_init=layers.fc_kernel_init, name='fc'
    )(x)


class PretextModel(nn.Module):
  """A backbone of the SlowFast family with the ROT head on its pooled features.

  Returns `(rotation_logits, aux)`: the logits are None without a rotation head (the AVS-only
  variant); `aux` is the backbone's (its 'avs' embeddings feed the AVS loss, its 'pooled'
  features the probe). The backbone's own classification head is built but unused in
  pretraining (no classification loss, so it gets no gradient). Parameters live under
  'backbone' and 'rotation_head', so the backbone's can be exported and probed alone.

  Attributes:
    backbone: an `AVSlowFast` (any pathways).
    rotation: whether to add the ROT head.
    rotation_features: 'visual' or 'all' (see `RotationHead`).
  """

  backbone: nn.Module
  rotation: bool = True
  rotation_features: str = 'visual'

  @nn.compact
  def __call__(
    self, inputs: Mapping[str, jax.Array], *, train: bool
  ) -> tuple[jax.Array | None, dict[str, Any]]:
    _, aux = self.backbone(inputs, train=train)
    if not self.rotation:
      return None, aux
    logits = RotationHead(features=self.rotation_features, name='rotation_head')(
      aux['pooled'], train=train
    )
    return logits, aux
