"""Classification head: per-pathway pooling, concatenation, dropout, one or several FC layers."""

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from avsf_jax.models import layers

POOLINGS = ('global', 'window')


def global_pool(x: jax.Array) -> jax.Array:
  """Average over every axis but batch and channels, in float32."""
  return x.astype(jnp.float32).mean(axis=tuple(range(1, x.ndim - 1)))


def window_pool(x: jax.Array, window: Sequence[int]) -> jax.Array:
  """(N, T, H, W, C) -> (N, P, C): full-T x window average pools at stride 1 (P positions).

  This is PySlowFast/PyTorchVideo's fully convolutional test-time head: the pooling window
  is the training crop's res5 size (7x7 for 224 crops), slid over a larger test view. A view
  no larger than the window gives one position, i.e. the global average.
  """
  x = x.astype(jnp.float32)
  h, w = min(window[0], x.shape[2]), min(window[1], x.shape[3])
  pooled = nn.avg_pool(x, (x.shape[1], h, w), strides=(1, 1, 1), padding='VALID')
  return pooled.reshape(x.shape[0], -1, x.shape[-1])


class ClassifierHead(nn.Module):
  """Dropout then FC; `num_classes` may map head names to sizes (EPIC: verb + noun).

  Features are (N, C) or (N, P, C) for P test-time window positions, whose logits are
  averaged (PyTorchVideo's `output_with_global_average`). Always computed in float32.
  """

  num_classes: int | Mapping[str, int]
  dropout_rate: float

  @nn.compact
  def __call__(self, features: jax.Array, *, train: bool) -> jax.Array | dict[str, jax.Array]:
    features = nn.Dropout(self.dropout_rate, deterministic=not train)(features)

    def fc(size: int, name: str) -> jax.Array:
      logits = nn.Dense(size, dtype=jnp.float32, kernel_init=layers.fc_kernel_init, name=name)(
        features
      )
      return logits.mean(axis=1) if logits.ndim == 3 else logits

    if isinstance(self.num_classes, Mapping):
      return {name: fc(size, f'fc_{name}') for name, size in sorted(self.num_classes.items())}
    return fc(self.num_classes, 'fc')
