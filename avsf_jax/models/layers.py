"""Layers shared by every pathway: PyTorch-compatible convs and pooling, grouped BatchNorm.

Blocks never see `train` or the compute dtype: the network builds `conv` and `norm` builders
once (`functools.partial` of the classes here) and hands them down, as flax's ImageNet example
does. Every layer works for any number of spatial axes, so the same code serves video
(N, T, H, W, C) and audio (N, time, frequency, C).
"""

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Initializer = Callable[..., jax.Array]

# Kaiming-normal, fan-out, untruncated: PySlowFast's `c2_msra_fill`.
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
# The classifier: normal(std=0.01), zero bias (PySlowFast `init_weights`).
fc_kernel_init = nn.initializers.normal(stddev=0.01)


_PLAIN_CONVOLUTIONS = contextvars.ContextVar('plain_convolutions', default=False)


@contextlib.contextmanager
def plain_convolutions() -> Iterator[None]:
  """While active, every `Conv` traces as one XLA convolution, without the lowerings below.

  The lowerings compute the same sums, but the grouped-taps one also multiplies a few zero
  taps and boundary frames; `stats.count_macs` traces under this context so that GFLOPs are
  those of the convolutions themselves (the papers' convention), whatever the lowering.
  """
  token = _PLAIN_CONVOLUTIONS.set(True)
  try:
    yield
  finally:
    _PLAIN_CONVOLUTIONS.reset(token)


def torch_padding(kernel_size: Sequence[int]) -> list[tuple[int, int]]:
  """Symmetric `k // 2` padding per axis, as PyTorch's `padding=k//2` gives.

  XLA's 'SAME' pads asymmetrically for even inputs with stride 2, which shifts every feature
  map by half a pixel relative to PyTorch; explicit pairs keep weights interchangeable.
  """
  return [(k // 2, k // 2) for k in kernel_size]


class Conv(nn.Module):
  """Convolution with PyTorch padding and Kaiming fan-out init (any rank); bias-free by default.

  The parameters are those of `nn.Conv` (`conv/kernel` of shape (*kernel, in, out), and
  `conv/bias`), so checkpoints never depend on how the convolution is computed. Video
  convolutions are lowered to forms that XLA's CPU backend runs much faster than its 3-D
  convolution (measured on CPU; see docs/benchmarks.md):
    - 1 x ... x 1 (any rank, any stride): a matrix product (about 2x faster than YNNPACK's
      1x1 convolution, forward and backward);
    - 1 x kh x kw (temporal stride 1): frames are folded into the batch, one 2-D convolution;
    - kt x 1 x 1 (spatial stride 1): one matrix product per tap, outputs summed shifted
      (temporally strided: the taps' frames stacked along channels, one product);
    - any other kt x kh x kw (the Fast stem's 5x7x7): groups of shifted frames stacked along
      channels, one 2-D convolution over the frames (`_grouped_time_taps_conv`).
  All compute the same sums as the 3-D convolution (tested against it). On GPU and TPU they
  are plain 2-D convolutions and matrix products too, but their speed there is unmeasured:
  `tools/benchmark --plain_convolutions` times XLA's own convolutions for comparison.
  """

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] | None = None
  use_bias: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel_size = tuple(self.kernel_size)
    strides = tuple(self.strides) if self.strides is not None else (1,) * len(kernel_size)
    return _ConvKernel(self.features, kernel_size, strides, self.use_bias, self.dtype, name='conv')(
      x
    )


class _ConvKernel(nn.Module):
  """Holds `kernel` (and `bias`) like `nn.Conv` and picks the lowering (see `Conv`)."""

  features: int
  kernel_size: tuple[int, ...]
  strides: tuple[int, ...]
  use_bias: bool
  dtype: Dtype

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param(
      'kernel', conv_kernel_init, (*self.kernel_size, x.shape[-1], self.features), jnp.float32
    )
    y = _convolve(x.astype(self.dtype), kernel.astype(self.dtype), self.strides)
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


def _convolve(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...]) -> jax.Array:
  """The convolution of `Conv`, in the form its kernel shape picks (see `Conv`)."""
  kernel_size = kernel.shape[:-2]
  if _PLAIN_CONVOLUTIONS.get():
    return _xla_conv(x, kernel, strides)
  if all(k == 1 for k in kernel_size):
    return _pointwise_conv(x, kernel.reshape(kernel.shape[-2:]), strides)
  if len(kernel_size) != 3:
    return _xla_conv(x, kernel, strides)
  if kernel_size[0] == 1 and strides[0] == 1:
    return _frames_as_batch_conv(x, kernel[0], strides[1:])
  if kernel_size[1:] == (1, 1) and strides[1:] == (1, 1):
    return _temporal_conv(x, kernel[:, 0, 0], strides[0])
  return _grouped_time_taps_conv(x, kernel, strides)


def _xla_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...]) -> jax.Array:
  rank = kernel.ndim - 2
  return jax.lax.conv_general_dilated(
    x,
    kernel,
    strides,
    torch_padding(kernel.shape[:rank]),
    dimension_numbers=_dimension_numbers(rank),
  )


def _dimension_numbers(rank: int) -> tuple[str, str, str]:
  spatial = 'DHW'[3 - rank :] if rank <= 3 else None
  if spatial is None:
    raise ValueError(f'Conv supports 1-3 spatial dims, got {rank}')
  return f'N{spatial}C', f'{spatial}IO', f'N{spatial}C'


def _frames_as_batch_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int]) -> jax.Array:
  """(N, T, H, W, C) conv with a 1 x kh x kw kernel as one 2-D conv over N*T frames."""
  n, t = x.shape[:2]
  y = _xla_conv(x.reshape((n * t, *x.shape[2:])), kernel, strides)
  return y.reshape((n, t, *y.shape[1:]))


def _pointwise_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...]) -> jax.Array:
  """A 1 x ... x 1 convolution (kernel (C, O)) as a matrix product over the strided pixels."""
  if any(s > 1 for s in strides):
    x = x[(slice(None), *(slice(None, None, s) for s in strides))]
  return jnp.einsum('...c,co->...o', x, kernel)


def _shifted_frames(x: jax.Array, taps: int, stride: int) -> list[jax.Array]:
  """The `taps` frame sequences a kt-tap temporal kernel with `k//2` padding reads."""
  pad, t = taps // 2, x.shape[1]
  padded = jnp.pad(x, ((0, 0), (pad, pad)) + ((0, 0),) * (x.ndim - 2))
  t_out = (t + 2 * pad - taps) // stride + 1
  return [padded[:, k : k + stride * (t_out - 1) + 1 : stride] for k in range(taps)]


def _taps_as_channels(x: jax.Array, taps: int, stride: int) -> jax.Array:
  """The frames each of `taps` temporal taps reads, stacked along channels (tap-major)."""
  return jnp.concatenate(_shifted_frames(x, taps, stride), axis=-1)


def _sum_shifted(maps: Sequence[jax.Array], offsets: Sequence[int], t_out: int) -> jax.Array:
  """sum_i maps[i][:, t + offsets[i]] for t < t_out, reading zeros outside each map.

  XLA fuses the pads, slices and adds into one pass over the (small) output maps.
  """
  terms = []
  for y, offset in zip(maps, offsets, strict=True):
    low, high = max(-offset, 0), max(offset + t_out - y.shape[1], 0)
    y = jnp.pad(y, ((0, 0), (low, high)) + ((0, 0),) * (y.ndim - 2))
    terms.append(y[:, offset + low : offset + low + t_out])
  return functools.reduce(jnp.add, terms)


def _grouped_time_taps_conv(
  x: jax.Array, kernel: jax.Array, strides: tuple[int, int, int]
) -> jax.Array:
  """(N, T, H, W, C) conv with a kt x kh x kw kernel as one 2-D conv over the frames.

  The kt temporal taps are split into 2 groups of a = ceil(kt/2) consecutive taps. The input
  gets a shifted copies stacked along channels (a*C channels), each group's kernels are one
  block of outputs (2*O channels), and one 2-D convolution computes both groups for every
  frame; the output is group 0's map plus group 1's map shifted by a frames. For the Fast
  stem (5x7x7, 3 -> 8 channels) this is 1.4x faster on CPU than stacking all 5 taps (15 -> 8
  channels) and 13x faster than XLA's 3-D convolution. Temporal stride > 1 stacks all taps.
  """
  taps, kh, kw, c, o = kernel.shape
  if strides[0] > 1 or taps < 3:
    kernel_2d = kernel.transpose(1, 2, 0, 3, 4).reshape(kh, kw, taps * c, o)
    return _frames_as_batch_conv(_taps_as_channels(x, taps, strides[0]), kernel_2d, strides[1:])
  a = -(-taps // 2)
  # (2a, kh, kw, C, O) -> (kh, kw, a*C, 2*O): input block i is frame shift i, output block j
  # is group j (taps j*a .. j*a + a - 1; the missing tap of an odd kt is zero).
  kernel = jnp.pad(kernel, ((0, 2 * a - taps),) + ((0, 0),) * 4)
  kernel_2d = kernel.reshape(2, a, kh, kw, c, o).transpose(2, 3, 1, 4, 0, 5)
  kernel_2d = kernel_2d.reshape(kh, kw, a * c, 2 * o)
  # Group j at output frame t reads input frames t - kt//2 + j*a + i (i < a): stack, for
  # every start s = t - kt//2 + j*a, the a frames from s on.
  t, pad = x.shape[1], taps // 2
  t_out = t + 2 * pad - taps + 1
  positions = t_out + a
  padded = jnp.pad(x, ((0, 0), (pad, positions + a - 1 - pad - t)) + ((0, 0),) * 3)
  stacked = jnp.concatenate([padded[:, i : i + positions] for i in range(a)], axis=-1)
  groups = _frames_as_batch_conv(stacked, kernel_2d, strides[1:])
  return _sum_shifted([groups[..., :o], groups[..., o:]], [0, a], t_out)


def _temporal_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """(N, T, H, W, C) conv with a kt x 1 x 1 kernel (kt, C, O), without a 3-D convolution.

  Stride 1: one matrix product per tap on the unpadded input, and the kt output maps summed
  with tap k's map shifted by k - kt//2 frames (no copy of the input is made). Strided (the
  Fast->Slow laterals): the frames each tap reads are stacked along channels and one product
  maps kt*C -> O (half the backward time of a kt x 1 2-D convolution over (T, H*W)).
  """
  taps, c, o = kernel.shape
  pad = taps // 2
  if stride > 1:
    stacked = _taps_as_channels(x, taps, stride)
    return jnp.einsum('nthwc,co->nthwo', stacked, kernel.reshape(taps * c, o))
  maps = [jnp.einsum('nthwc,co->nthwo', x, kernel[k]) for k in range(taps)]
  return _sum_shifted(maps, [k - pad for k in range(taps)], x.shape[1] + 2 * pad - taps + 1)


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int]) -> jax.Array:
  """Max pooling with symmetric `k // 2` padding filled with -inf (PyTorch semantics)."""
  return nn.max_pool(x, tuple(window), strides=tuple(strides), padding=torch_padding(window))


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
