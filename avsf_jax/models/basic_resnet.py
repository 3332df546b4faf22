"""ResNet-18-style trunks of BasicBlocks (two 3x3 convs per block), as torchvision builds them.

Listen to Look's student (paper 004, spec listen_to_look.md section 2.2) uses two of them: an
image trunk on one 112x112 frame and an audio trunk, with a stride-1 first conv, on a 101x40
log-mel. Child names follow torchvision's `resnet18` (`conv1`, `bn1`, `layer1`..`layer4`,
`block<i>` for `layer<k>.<i>`, `downsample` / `downsample_bn` for `downsample.0` / `.1`) so that
the converter in `interop/torchvision_weights.py` is a plain renaming.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from avsf_jax.models import convolution, layers

ModuleDef = Callable[..., nn.Module]


class BasicBlock(nn.Module):
  """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, plus a (1x1 conv + BN) or identity shortcut.

  torchvision's `BasicBlock` with `zero_init_residual=False`: the second BN's scale starts at 1.
  Works for any number of spatial axes (the kernel is 3 along each axis of `strides`).
  """

  features: int
  strides: Sequence[int]
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    strides = tuple(self.strides)
    ones, threes = (1,) * len(strides), (3,) * len(strides)
    y = self.conv(self.features, threes, strides, name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(self.features, threes, name='conv2')(y)
    y = self.norm(name='bn2')(y)
    shortcut = x
    if x.shape[-1] != self.features or any(s != 1 for s in strides):
      shortcut = self.conv(self.features, ones, strides, name='downsample')(x)
      shortcut = self.norm(name='downsample_bn')(shortcut)
    return nn.relu(y + shortcut)


class BasicResNet(nn.Module):
  """7x7 stem conv -> BN -> ReLU -> 3x3/2 max pool -> four stages of BasicBlocks; no pooling, no FC.

  Attributes:
    widths: channels of layer1..layer4 (ResNet-18: 64, 128, 256, 512; the stem has widths[0]).
    stage_blocks: BasicBlocks per stage (ResNet-18: 2, 2, 2, 2).
    stem_stride: stride of the 7x7 conv along both axes (torchvision 2; the audio stream 1).
    stem_kernel_init: init of the 7x7 conv kernel (torchvision: Kaiming-normal fan-out).
    bn_momentum, bn_epsilon: BatchNorm running-average momentum (Flax convention), epsilon.
    dtype: compute dtype; parameters and BN statistics stay float32.

  Returns the last stage's map (N, h, w, widths[-1]) in `dtype`.
  """

  widths: Sequence[int] = (64, 128, 256, 512)
  stage_blocks: Sequence[int] = (2, 2, 2, 2)
  stem_stride: int = 2
  stem_kernel_init: layers.Initializer = layers.conv_kernel_init
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if len(self.widths) != len(self.stage_blocks):
      raise ValueError(
        f'BasicResNet: widths {tuple(self.widths)} and stage_blocks {tuple(self.stage_blocks)} '
        'need one entry per stage'
      )
    if x.ndim != 4:
      raise ValueError(f'BasicResNet: expected (N, H, W, C) inputs, got shape {x.shape}')
    conv = functools.partial(layers.Conv, dtype=self.dtype)
    norm = functools.partial(
      layers.BatchNorm,
      use_running_average=not train,
      group_size=0,
      momentum=self.bn_momentum,
      epsilon=self.bn_epsilon,
      dtype=self.dtype,
    )
    x = _Stem(self.widths[0], self.stem_stride, self.stem_kernel_init, self.dtype, name='conv1')(
      jnp.asarray(x, self.dtype)
    )
    x = nn.relu(norm(name='bn1')(x))
    x = layers.max_pool(x, (3, 3), (2, 2))
    for stage, (width, blocks) in enumerate(zip(self.widths, self.stage_blocks, strict=True)):
      stride = 1 if stage == 0 else 2
      for i in range(blocks):
        s = stride if i == 0 else 1
        x = BasicBlock(width, (s, s), conv, norm, name=f'layer{stage + 1}_block{i}')(x)
    return x


class _Stem(nn.Module):
  """The 7x7 conv with its own kernel init, stored like `layers.Conv` (`conv/kernel`)."""

  features: int
  stride: int
  kernel_init: layers.Initializer
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', self.kernel_init, (7, 7, x.shape[-1], self.features), jnp.float32)
    return jax.lax.conv_general_dilated(
      x,
      kernel.astype(self.dtype),
      (self.stride, self.stride),
      convolution.torch_padding((7, 7)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    )
