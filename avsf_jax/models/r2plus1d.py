"""R(2+1)D-18 (Tran et al. 2018), the Listen to Look teacher Omega, in torchvision's layout.

torchvision's `r2plus1d_18`, as its documentation describes it:
  - stem: Conv(1x7x7, stride 1x2x2, 3 -> 45) -> BN -> ReLU -> Conv(3x1x1, 45 -> 64) -> BN -> ReLU,
    no max pool;
  - layer1..layer4 of two BasicBlocks each, widths 64, 128, 256, 512; layer2..4 stride 2 in
    time and space (so 16x112x112 ends as a 2x7x7 res5 map);
  - every 3x3x3 conv of a block is factorised as Conv(1x3x3, stride 1xsxs, -> M) -> BN -> ReLU ->
    Conv(3x1x1, stride sx1x1, M -> out), with the "midplanes" M = (in*out*27) // (in*9 + 3*out)
    chosen so the pair has about the parameters of the 3-D conv; both convs of a block use the M
    of its first conv's (in, out);
  - the downsample shortcut is Conv(1x1x1, stride sxsxs) -> BN;
  - global average pool (z^V, D = 512) -> FC to the classes.
Child names mirror the state dict (`stem_spatial` = `stem.0`, `layer2_block0/conv1/spatial` =
`layer2.0.conv1.0.0`, ...; see `interop/torchvision_weights.py`).

Input: {'video': (N, T, H, W, 3)}. Returns `(logits, aux)` with aux['pooled'] = z^V (N, 512).
"""

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from avsf_jax.models import heads, layers

ModuleDef = Callable[..., nn.Module]

# torchvision's Kinetics-400 video models expect RGB in [0, 1] normalised with these, on frames
# resized to 128x171 and centre-cropped to 112x112 (its video classification reference).
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


def midplanes(in_planes: int, out_planes: int) -> int:
  """Width between the (1x3x3) and (3x1x1) convs: (in*out*27) // (in*9 + 3*out)."""
  return (in_planes * out_planes * 27) // (in_planes * 9 + 3 * out_planes)


class Conv2Plus1D(nn.Module):
  """A 3x3x3 conv factorised into a spatial (1x3x3) and a temporal (3x1x1) conv, BN+ReLU between."""

  features: int
  mid: int
  stride: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    s = self.stride
    x = self.conv(self.mid, (1, 3, 3), (1, s, s), name='spatial')(x)
    x = nn.relu(self.norm(name='spatial_bn')(x))
    return self.conv(self.features, (3, 1, 1), (s, 1, 1), name='temporal')(x)


class R2Plus1DBlock(nn.Module):
  """BasicBlock of two (2+1)-D convs; a 1x1x1 strided conv + BN shortcut when the shape changes."""

  features: int
  stride: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    mid = midplanes(x.shape[-1], self.features)
    y = Conv2Plus1D(self.features, mid, self.stride, self.conv, self.norm, name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = Conv2Plus1D(self.features, mid, 1, self.conv, self.norm, name='conv2')(y)
    y = self.norm(name='bn2')(y)
    shortcut = x
    if x.shape[-1] != self.features or self.stride != 1:
      s = self.stride
      shortcut = self.conv(self.features, (1, 1, 1), (s, s, s), name='downsample')(x)
      shortcut = self.norm(name='downsample_bn')(shortcut)
    return nn.relu(y + shortcut)


class R2Plus1D(nn.Module):
  """R(2+1)D with BasicBlocks (18 layers by default) and a linear classifier.

  Attributes:
    num_classes: classifier width (Kinetics-400: 400).
    widths: channels of layer1..layer4.
    stage_blocks: blocks per stage ((2, 2, 2, 2) for R(2+1)D-18).
    stem_mid: channels between the stem's spatial and temporal convs (45).
    stem_stride: the stem's spatial stride (torchvision: 2). The CPU demo's tiny teacher uses
      4, which quarters the cost of its full-frame-rate layers for twice their width.
    fc_init_std: std of the classifier's normal init (torchvision: 0.01).
    bn_momentum, bn_epsilon: BatchNorm running-average momentum (Flax convention), epsilon.
    dtype: compute dtype; parameters, BN statistics, the pooled descriptor and logits are
      float32.
  """

  num_classes: int = 400
  widths: Sequence[int] = (64, 128, 256, 512)
  stage_blocks: Sequence[int] = (2, 2, 2, 2)
  stem_mid: int = 45
  stem_stride: int = 2
  fc_init_std: float = 0.01
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self, inputs: Mapping[str, jax.Array], *, train: bool
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    if 'video' not in inputs:
      raise KeyError(f"R2Plus1D: inputs lack 'video'; got keys {sorted(inputs)}")
    x = jnp.asarray(inputs['video'], self.dtype)
    if x.ndim != 5 or x.shape[-1] != 3:
      raise ValueError(f"R2Plus1D: expected 'video' (N, T, H, W, 3), got shape {x.shape}")
    if len(self.widths) != len(self.stage_blocks):
      raise ValueError('R2Plus1D: widths and stage_blocks need one entry per stage')
    conv = functools.partial(layers.Conv, dtype=self.dtype)
    norm = functools.partial(
      layers.BatchNorm,
      use_running_average=not train,
      group_size=0,
      momentum=self.bn_momentum,
      epsilon=self.bn_epsilon,
      dtype=self.dtype,
    )
    s = self.stem_stride
    x = conv(self.stem_mid, (1, 7, 7), (1, s, s), name='stem_spatial')(x)
    x = nn.relu(norm(name='stem_spatial_bn')(x))
    x = conv(self.widths[0], (3, 1, 1), name='stem_temporal')(x)
    x = nn.relu(norm(name='stem_temporal_bn')(x))
    for stage, (width, blocks) in enumerate(zip(self.widths, self.stage_blocks, strict=True)):
      for i in range(blocks):
        stride = 2 if stage > 0 and i == 0 else 1
        x = R2Plus1DBlock(width, stride, conv, norm, name=f'layer{stage + 1}_block{i}')(x)
    pooled = heads.global_pool(x)
    # torchvision's init: FC N(0, fc_init_std = 0.01) with zero bias; convs Kaiming-normal fan-out.
    logits = nn.Dense(
      self.num_classes,
      dtype=jnp.float32,
      kernel_init=nn.initializers.normal(stddev=self.fc_init_std),
      name='fc',
    )(pooled)
    return logits, {'pooled': pooled}
