"""ResNet bottleneck blocks and stages for the Slow, Fast and Audio pathways.

One block class serves video (kernels over (T, H, W)) and audio (kernels over
(time, frequency)): the caller passes the kernel sizes and the `conv`/`norm` builders.
"""

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from avsf_jax.models import nonlocal_block

ModuleDef = Callable[..., nn.Module]

# Bottleneck blocks per stage (res2..res5). 14 and 26 are small variants for demos and tests.
STAGE_DEPTHS = {14: (1, 1, 1, 1), 26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# Transforms of the middle ("b") layer of a bottleneck.
TRANSFORMS = ('standard', 'factorized_concat', 'factorized_sum')


class Bottleneck(nn.Module):
  """Bottleneck residual block: a (1x1 or temporal) -> b (3x3) -> c (1x1) + shortcut.

  `transform` picks the b layer:
    - 'standard': one `kernel_b` conv with `strides` (the visual pathways; audio res4/res5).
    - 'factorized_sum': PyTorchVideo's acoustic block ("v2"): after the 1x1 reduction, a
      3x1 (time) and a 1x3 (frequency) conv, each with its own BN and ReLU, run in parallel
      and are summed.
    - 'factorized_concat': the released AVSlowFast audio block ("v1"): a 3x1 (time) and a
      1x3 (frequency) conv run in parallel on the block input, each to the inner width
      (paper 000 Table 1: "[3x1, 1x3], 32"), and are concatenated; a 1x1 conv to the output
      width follows. There is no separate reduction layer: two layers in the residual branch.
  The spatial (or time-frequency) stride sits on the b layer, except that with
  `time_stride_in_a` the stride along the first (time) axis moves to the a layer
  (PyTorchVideo's convention); the last BN's scale starts at zero so each block starts as
  the identity. `dilation` spaces the taps of the 'standard' b layer only (the detection
  backbone's res5: (1, 2, 2) with padding = dilation, PySlowFast's SPATIAL_DILATIONS).
  """

  features: int
  inner: int
  kernel_a: Sequence[int]
  kernel_b: Sequence[int]
  strides: Sequence[int]
  conv: ModuleDef
  norm: ModuleDef
  transform: str = 'standard'
  time_stride_in_a: bool = False
  dilation: Sequence[int] | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.transform not in TRANSFORMS:
      raise ValueError(f'Bottleneck.transform={self.transform!r}; expected one of {TRANSFORMS}')
    strides = tuple(self.strides)
    ones = (1,) * len(strides)
    stride_a, stride_b = ones, strides
    if self.time_stride_in_a and self.transform != 'factorized_concat':
      stride_a, stride_b = (strides[0], *ones[1:]), (1, *strides[1:])
    if self.transform == 'factorized_concat':
      time_kernel, freq_kernel = _factorized_kernels(len(self.kernel_b))
      y = jnp.concatenate(
        [
          self.conv(self.inner, time_kernel, strides, name='conv_a_time')(x),
          self.conv(self.inner, freq_kernel, strides, name='conv_a_freq')(x),
        ],
        axis=-1,
      )
      y = nn.relu(self.norm(name='bn_a')(y))
    else:
      y = self.conv(self.inner, self.kernel_a, stride_a, name='conv_a')(x)
      y = nn.relu(self.norm(name='bn_a')(y))
      if self.transform == 'standard':
        y = self.conv(self.inner, self.kernel_b, stride_b, dilation=self.dilation, name='conv_b')(y)
        y = nn.relu(self.norm(name='bn_b')(y))
      else:
        time_kernel, freq_kernel = _factorized_kernels(len(self.kernel_b))
        branches = []
        for axis, kernel in (('time', time_kernel), ('freq', freq_kernel)):
          b = self.conv(self.inner, kernel, stride_b, name=f'conv_b_{axis}')(y)
          branches.append(nn.relu(self.norm(name=f'bn_b_{axis}')(b)))
        y = branches[0] + branches[1]
    y = self.conv(self.features, ones, name='conv_c')(y)
    y = self.norm(name='bn_c', scale_init=nn.initializers.zeros)(y)

    shortcut = x
    if x.shape[-1] != self.features or any(s != 1 for s in strides):
      shortcut = self.conv(self.features, ones, strides, name='shortcut')(x)
      shortcut = self.norm(name='shortcut_bn')(shortcut)
    return nn.relu(y + shortcut)


def _factorized_kernels(rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(3, 1) and (1, 3) for audio's (time, frequency) axes."""
  if rank != 2:
    raise ValueError(f'factorized blocks are for 2-D (time, frequency) inputs, got rank {rank}')
  return (3, 1), (1, 3)


class Stage(nn.Module):
  """`num_blocks` bottlenecks; the first one carries the stride.

  Only the first `temporal_blocks` blocks use `kernel_a` as given; later blocks use a 1x1
  `kernel_a` (PySlowFast's NUM_BLOCK_TEMP_KERNEL, which the SlowFast R101 models set so that
  6 of the 23 res4 blocks are temporal). None means every block.

  `nonlocal_after` lists the block indices after which a non-local block is inserted
  (PySlowFast's NONLOCAL.LOCATION), with max-pooling `nonlocal_pool` on its keys/values and
  the affinity normalisation `nonlocal_instantiation` (see `nonlocal_block.NonLocal`).
  `dilation` goes to every block's b layer (see `Bottleneck`).
  """

  num_blocks: int
  features: int
  inner: int
  kernel_a: Sequence[int]
  kernel_b: Sequence[int]
  stride: Sequence[int]
  conv: ModuleDef
  norm: ModuleDef
  transform: str = 'standard'
  time_stride_in_a: bool = False
  temporal_blocks: int | None = None
  nonlocal_after: Sequence[int] = ()
  nonlocal_pool: Sequence[int] = (1, 2, 2)
  nonlocal_instantiation: str = 'dot_product'
  dilation: Sequence[int] | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(self.num_blocks):
      temporal = self.temporal_blocks is None or i < self.temporal_blocks
      x = Bottleneck(
        features=self.features,
        inner=self.inner,
        kernel_a=tuple(self.kernel_a) if temporal else (1,) * len(self.kernel_a),
        kernel_b=self.kernel_b,
        strides=self.stride if i == 0 else (1,) * len(self.stride),
        conv=self.conv,
        norm=self.norm,
        transform=self.transform,
        time_stride_in_a=self.time_stride_in_a,
        dilation=self.dilation,
        name=f'block{i}',
      )(x)
      if i in self.nonlocal_after:
        x = nonlocal_block.NonLocal(
          inner=self.features // 2,
          pool=self.nonlocal_pool,
          instantiation=self.nonlocal_instantiation,
          conv=self.conv,
          norm=self.norm,
          name=f'nonlocal{i}',
        )(x)
    return x


def stage_widths(width: int, depth: int) -> list[tuple[int, int, int]]:
  """(num_blocks, out, inner) for res2..res5 of a pathway whose stem has `width` channels."""
  try:
    depths = STAGE_DEPTHS[depth]
  except KeyError as e:
    raise ValueError(f'depth={depth}; supported ResNet depths are {sorted(STAGE_DEPTHS)}') from e
  return [(n, width * 4 * 2**i, width * 2**i) for i, n in enumerate(depths)]
