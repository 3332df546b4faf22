"""Layers shared by every pathway: PyTorch-compatible convs and pooling, grouped BatchNorm.

Blocks never see `train` or the compute dtype: the network builds `conv` and `norm` builders
once (`functools.partial` of the classes here) and hands them down, as flax's ImageNet example
does. Every layer works for any number of spatial axes, so the same code serves video
(N, T, H, W, C) and audio (N, time, frequency, C).
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from avsf_jax.models import convolution

Dtype = Any
Initializer = Callable[..., jax.Array]

# Kaiming-normal, fan-out, untruncated: PySlowFast's `c2_msra_fill`.
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
# The classifier: normal(std=0.01), zero bias (PySlowFast `init_weights`).
fc_kernel_init = nn.initializers.normal(stddev=0.01)


class Conv(nn.Module):
  """Convolution with PyTorch padding and Kaiming fan-out init (any rank); bias-free by default.

  The parameters are those of `nn.Conv` (`conv/kernel` of shape (*kernel, in, out), and
  `conv/bias`), so checkpoints never depend on how the convolution is computed. `lowering`
  picks the computation (`convolution.LOWERINGS`): 'xla' is one XLA convolution, 'lowered'
  the matrix-product and 2-D forms that XLA's CPU backend runs much faster than its 3-D
  convolution, 'auto' (the default) the former on GPU/TPU and the latter on CPU. Every form
  computes the same sums (tested against the 3-D convolution). `dilation` spaces the kernel
  taps (the detection backbone's res5) and keeps PyTorch's `dilation * (k // 2)` padding.
  """

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] | None = None
  dilation: Sequence[int] | None = None
  use_bias: bool = False
  lowering: str = 'auto'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel_size = tuple(self.kernel_size)
    ones = (1,) * len(kernel_size)
    strides = tuple(self.strides) if self.strides is not None else ones
    dilation = tuple(self.dilation) if self.dilation is not None else ones
    return _ConvKernel(
      self.features,
      kernel_size,
      strides,
      dilation,
      self.use_bias,
      self.lowering,
      self.dtype,
      name='conv',
    )(x)


class _ConvKernel(nn.Module):
  """Holds `kernel` (and `bias`) like `nn.Conv`; `convolution.convolve` computes."""

  features: int
  kernel_size: tuple[int, ...]
  strides: tuple[int, ...]
  dilation: tuple[int, ...]
  use_bias: bool
  lowering: str
  dtype: Dtype

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param(
      'kernel', conv_kernel_init, (*self.kernel_size, x.shape[-1], self.features), jnp.float32
    )
    y = convolution.convolve(
      x.astype(self.dtype),
      kernel.astype(self.dtype),
      self.strides,
      dilation=self.dilation,
      lowering=self.lowering,
    )
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int]) -> jax.Array:
  """Max pooling with symmetric `k // 2` padding filled with -inf (PyTorch semantics)."""
  padding = convolution.torch_padding(window)
  return nn.max_pool(x, tuple(window), strides=tuple(strides), padding=padding)


class BatchNorm(nn.Module):
  """BatchNorm whose training statistics are computed within groups of clips.

  `group_size` clips share statistics (the papers train with 8 clips per GPU, hence 8); with
  `group_size=0`, or a batch no larger than one group, statistics cover the whole (global)
  batch. Under `jax.jit` with a batch sharded over devices, a group never straddles devices
  as long as the per-device batch is a multiple of the group size, so grouped BN needs no
  cross-device communication; whole-batch BN becomes an all-reduce that XLA inserts.

  Statistics, scale and bias are float32 whatever the compute dtype; the output is cast to
  `dtype`. Running averages follow Flax's convention (`momentum` 0.9 == PyTorch's 0.1) and
  hold the statistics of the whole batch (the mean of the group means; the group variances
  plus the spread of the group means), which is what PySlowFast's SubBatchNorm aggregates.
  """

  use_running_average: bool
  group_size: int = 0
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  scale_init: Initializer = nn.initializers.ones

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    scale = self.param('scale', self.scale_init, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)

    xf = x.astype(jnp.float32)
    if self.use_running_average:
      y = (xf - ra_mean.value) * jax.lax.rsqrt(ra_var.value + self.epsilon)
    else:
      batch = x.shape[0]
      group = self.group_size if 0 < self.group_size < batch else batch
      if batch % group:
        raise ValueError(
          f'BatchNorm {self.name}: batch of {batch} clips is not a multiple of '
          f'bn_group_size={self.group_size}; use a per-device batch that is a multiple of it '
          'or bn_group_size=0 for whole-batch statistics.'
        )
      grouped = xf.reshape((batch // group, group) + x.shape[1:])
      axes = tuple(range(1, grouped.ndim - 1))
      mean = grouped.mean(axis=axes, keepdims=True)
      var = jnp.square(grouped - mean).mean(axis=axes, keepdims=True)
      y = ((grouped - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
      if not self.is_initializing():
        # Two per-channel reductions over the groups (one all-reduce when groups span
        # devices): E[x] and E[x^2] of the whole batch from the groups' moments.
        flat_mean = mean.reshape(-1, features)
        batch_mean = flat_mean.mean(axis=0)
        batch_square = (var.reshape(-1, features) + jnp.square(flat_mean)).mean(axis=0)
        batch_var = jnp.maximum(batch_square - jnp.square(batch_mean), 0.0)
        m = self.momentum
        ra_mean.value = m * ra_mean.value + (1.0 - m) * batch_mean
        ra_var.value = m * ra_var.value + (1.0 - m) * batch_var
    return (y * scale + bias).astype(self.dtype)
