"""Listen to Look's image-audio student Phi (paper 004 section 3.2; spec listen_to_look.md 2.2).

Phi(I, A) stands in for an expensive clip model Omega(V): one RGB frame I (the clip's first)
and the clip's 1-s log-mel A go through two ResNet-18 streams, a fusion network Psi maps the
concatenated descriptors to the teacher's descriptor width D, and an FC layer classifies:

  'image': (N, 112, 112, 3)  -> image stream f_I: ResNet-18 (res5 4x4), global average -> z^I
  'audio': (N, 101, 40, 1)   -> audio stream f_A: ResNet-18 with a stride-1 conv1 (res5 7x3 over
                                (time, frequency)), a learned 1x1 sum over the 3 frequency
                                positions (`freq_conv1x1`), a max over time -> z^A
  Psi: concat(z^I, z^A) -> Linear 1024 -> ReLU -> Linear D;  logits = Linear C (Psi).

`modalities=('image',)` or `('audio',)` gives the single-stream baselines of Fig. 5 (Psi then
reads the one descriptor). `__call__` returns `(logits, aux)`, aux holding 'image' (z^I),
'audio' (z^A) and 'fused' (Psi), each (N, ...) float32, for the distillation loss and for the
skimming feature banks.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from avsf_jax.models import basic_resnet, heads

MODALITIES = ('image', 'audio')
# The frame normalisation ImageNet-initialised torchvision ResNets expect (RGB in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The official code initialises the audio conv1 and Psi's weights N(0, 0.02).
NORMAL_002 = nn.initializers.normal(stddev=0.02)


def torch_linear_bias_init(fan_in: int) -> nn.initializers.Initializer:
  """PyTorch's default Linear/Conv bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


# PyTorch's default Linear weight init (kaiming_uniform with a=sqrt(5)): U(+-1/sqrt(fan_in)).
torch_linear_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


class ImageStream(nn.Module):
  """f_I: a ResNet-18 trunk on one frame, global average pooled: (N, H, W, 3) -> (N, C)."""

  widths: Sequence[int] = (64, 128, 256, 512)
  stage_blocks: Sequence[int] = (2, 2, 2, 2)
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array, *, train: bool) -> jax.Array:
    if image.ndim != 4 or image.shape[-1] != 3:
      raise ValueError(f'ImageStream: expected (N, H, W, 3) frames, got shape {image.shape}')
    x = basic_resnet.BasicResNet(
      widths=self.widths,
      stage_blocks=self.stage_blocks,
      stem_stride=2,
      bn_momentum=self.bn_momentum,
      bn_epsilon=self.bn_epsilon,
      dtype=self.dtype,
      name='trunk',
    )(image, train=train)
    return heads.global_pool(x)


class AudioStream(nn.Module):
  """f_A: (N, time, freq, 1) log-mel -> (N, C).

  ResNet-18 whose 7x7 conv1 has stride 1 and N(0, 0.02) init (so 101x40 ends as a 7x3 res5
  map); `freq_conv1x1` treats the frequency positions as channels of a 1x1 conv (a learned
  weighted sum over frequency, with bias); then the maximum over time.
  """

  widths: Sequence[int] = (64, 128, 256, 512)
  stage_blocks: Sequence[int] = (2, 2, 2, 2)
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, spectrogram: jax.Array, *, train: bool) -> jax.Array:
    if spectrogram.ndim != 4 or spectrogram.shape[-1] != 1:
      raise ValueError(
        f'AudioStream: expected (N, time, freq, 1) log-mel, got shape {spectrogram.shape}'
      )
    x = basic_resnet.BasicResNet(
      widths=self.widths,
      stage_blocks=self.stage_blocks,
      stem_stride=1,
      stem_kernel_init=NORMAL_002,
      bn_momentum=self.bn_momentum,
      bn_epsilon=self.bn_epsilon,
      dtype=self.dtype,
      name='trunk',
    )(spectrogram, train=train)
    x = x.astype(jnp.float32).transpose(0, 1, 3, 2)  # (N, time, C, freq)
    freq = x.shape[-1]
    x = nn.Dense(
      1,
      dtype=jnp.float32,
      kernel_init=torch_linear_kernel_init,
      bias_init=torch_linear_bias_init(freq),
      name='freq_conv1x1',
    )(x)[..., 0]
    return x.max(axis=1)


class Fusion(nn.Module):
  """Psi: concat -> Linear(hidden) -> ReLU -> Linear(features); weights N(0, 0.02), float32."""

  hidden: int = 1024
  features: int = 512

  @nn.compact
  def __call__(self, descriptors: Sequence[jax.Array]) -> jax.Array:
    x = jnp.concatenate([d.astype(jnp.float32) for d in descriptors], axis=-1)
    x = nn.Dense(
      self.hidden,
      kernel_init=NORMAL_002,
      bias_init=torch_linear_bias_init(x.shape[-1]),
      name='fc1',
    )(x)
    x = nn.relu(x)
    return nn.Dense(
      self.features,
      kernel_init=NORMAL_002,
      bias_init=torch_linear_bias_init(self.hidden),
      name='fc2',
    )(x)


class ImageAudioNet(nn.Module):
  """The student Phi and its image-only / audio-only variants.

  Attributes:
    num_classes: C, the classifier's width (400 while distilling from a Kinetics teacher).
    modalities: the streams used, a non-empty subset of ('image', 'audio') in that order.
    embed_dim: D, Psi's output width; must equal the teacher's descriptor width (512 for
      R(2+1)D-18).
    fusion_hidden: Psi's hidden width (1024).
    widths, stage_blocks: both streams' ResNet stages (ResNet-18: (64, 128, 256, 512) and
      (2, 2, 2, 2); the CPU demo's tiny student: (16, 32, 64, 128) and (1, 1, 1, 1)).
    bn_momentum, bn_epsilon: BatchNorm running-average momentum (Flax convention), epsilon.
    dtype: the streams' compute dtype; Psi, the classifier and every output are float32.
  """

  num_classes: int
  modalities: Sequence[str] = MODALITIES
  embed_dim: int = 512
  fusion_hidden: int = 1024
  widths: Sequence[int] = (64, 128, 256, 512)
  stage_blocks: Sequence[int] = (2, 2, 2, 2)
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self, inputs: Mapping[str, jax.Array], *, train: bool
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    modalities = tuple(self.modalities)
    if not modalities or modalities != tuple(m for m in MODALITIES if m in modalities):
      raise ValueError(
        f'ImageAudioNet.modalities={modalities}; expected a non-empty subset of {MODALITIES} '
        'in that order'
      )
    missing = [m for m in modalities if m not in inputs]
    if missing:
      raise KeyError(f'ImageAudioNet: inputs lack {missing}; got keys {sorted(inputs)}')
    streams = {'image': ImageStream, 'audio': AudioStream}
    aux = {}
    for m in modalities:
      aux[m] = streams[m](
        widths=self.widths,
        stage_blocks=self.stage_blocks,
        bn_momentum=self.bn_momentum,
        bn_epsilon=self.bn_epsilon,
        dtype=self.dtype,
        name=f'{m}_stream',
      )(inputs[m], train=train)
    aux['fused'] = Fusion(self.fusion_hidden, self.embed_dim, name='fusion')(
      [aux[m] for m in modalities]
    )
    logits = nn.Dense(
      self.num_classes,
      kernel_init=torch_linear_kernel_init,
      bias_init=torch_linear_bias_init(self.embed_dim),
      name='classifier',
    )(aux['fused'])
    return logits, aux
