"""Classification head: per-pathway pooling, concatenation, dropout, one or several FC layers."""

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from avsf_jax.models import layers

POOLINGS = ('global', 'window')
POSITION_AVERAGES = ('softmax', 'sigmoid', 'logits')


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


def average_positions(logits: jax.Array, mode: str) -> jax.Array:
  """(N, P, K) per-position logits -> (N, K) logits of the averaged scores.

  - 'softmax' (PySlowFast's test head: softmax per position, then the mean): returns
    log(mean_p softmax), whose softmax is exactly that mean, so the evaluation's softmax
    average across views sees PySlowFast's scores;
  - 'sigmoid' (multi-label heads): logit(mean_p sigmoid), likewise;
  - 'logits': the mean of the logits (PyTorchVideo's `output_with_global_average`).
  """
  if mode == 'logits':
    return logits.mean(axis=1)
  if mode == 'softmax':
    return jax.nn.logsumexp(jax.nn.log_softmax(logits, axis=-1), axis=1) - jnp.log(logits.shape[1])
  if mode == 'sigmoid':
    p = jax.nn.sigmoid(logits).mean(axis=1)
    return jnp.log(p) - jnp.log1p(-p)
  raise ValueError(f'head position average {mode!r}; expected one of {POSITION_AVERAGES}')


class ClassifierHead(nn.Module):
  """Dropout then FC; `num_classes` may map head names to sizes (EPIC: verb + noun).

  Features are (N, C) or (N, P, C) for P test-time window positions, whose scores are
  averaged as `position_average` says (see `average_positions`). Always in float32.
  """

  num_classes: int | Mapping[str, int]
  dropout_rate: float
  position_average: str = 'softmax'

  @nn.compact
  def __call__(self, features: jax.Array, *, train: bool) -> jax.Array | dict[str, jax.Array]:
    features = nn.Dropout(self.dropout_rate, deterministic=not train)(features)

    def fc(size: int, name: str) -> jax.Array:
      logits = nn.Dense(size, dtype=jnp.float32, kernel_init=layers.fc_kernel_init, name=name)(
        features
      )
      return average_positions(logits, self.position_average) if logits.ndim == 3 else logits

    if isinstance(self.num_classes, Mapping):
      return {name: fc(size, f'fc_{name}') for name, size in sorted(self.num_classes.items())}
    return fc(self.num_classes, 'fc')
