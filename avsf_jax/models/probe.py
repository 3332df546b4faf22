"""A new classifier on a pretrained backbone's pool5 features (self-supervised spec 3).

`mode='linear'` is the paper's linear probe ("retrain the last fc layer" on a "fixed, frozen
feature extractor"): the backbone runs in inference mode, so its BatchNorm layers normalise
with the pretrained running statistics and never update them, DropPathway and dropout are off,
and its features pass through `stop_gradient`, so only `probe_fc` learns. `mode='fine_tune_all'`
(Table A.2) trains everything, the backbone in training mode.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from avsf_jax.models import layers

PROBE_MODES = ('linear', 'fine_tune_all')
FEATURE_ORDER = ('slow', 'fast', 'audio')


class ProbeModel(nn.Module):
  """`backbone` (an `AVSlowFast`) + dropout + FC `probe_fc` on its concatenated pool5 features.

  Attributes:
    backbone: the pretrained network; its parameters live under 'backbone'.
    num_classes: classes of the new FC.
    mode: 'linear' (frozen backbone, BN statistics included) or 'fine_tune_all'.
    features: pathways whose pool5 features the FC reads, of those the backbone has
      (3328-d for R50 AVSlowFast, 2304-d for SlowFast).
    dropout_rate: dropout before the FC (the probe recipe uses none).
  """

  backbone: nn.Module
  num_classes: int
  mode: str = 'linear'
  features: Sequence[str] = FEATURE_ORDER
  dropout_rate: float = 0.0

  def frozen(self) -> bool:
    if self.mode not in PROBE_MODES:
      raise ValueError(f'ProbeModel: mode={self.mode!r}; one of {PROBE_MODES}')
    return self.mode == 'linear'

  @nn.compact
  def __call__(
    self, inputs: Mapping[str, jax.Array], *, train: bool
  ) -> tuple[jax.Array, dict[str, Any]]:
    frozen = self.frozen()
    _, aux = self.backbone(inputs, train=train and not frozen)
    names = [p for p in FEATURE_ORDER if p in self.features and p in aux['pooled']]
    if not names:
      raise KeyError(
        f'ProbeModel: features={tuple(self.features)} but the backbone pools {sorted(aux["pooled"])}'
      )
    x = jnp.concatenate([aux['pooled'][p].astype(jnp.float32) for p in names], axis=-1)
    if frozen:
      x = jax.lax.stop_gradient(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Dense(
      self.num_classes, dtype=jnp.float32, kernel_init=layers.fc_kernel_init, name='probe_fc'
    )(x)
    return logits, {'features': x, **aux}
