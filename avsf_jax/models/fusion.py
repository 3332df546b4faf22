"""Connections between pathways: Fast->Slow laterals, Audio->visual fusion, AVS projections."""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Callable[..., nn.Module]

LATERALS = (
  'time_strided_conv',
  'time_to_channel_sum',
  'time_to_channel_concat',
  'time_strided_sample',
)
AUDIO_FUSIONS = ('a_fs', 'a_f_s', 'av_nonlocal')


class FastToSlow(nn.Module):
  """Fast->Slow lateral connection (SlowFast paper, section 3.4 and Table 5b).

  - 'time_strided_conv': a `kernel`x1x1 conv with temporal stride `alpha` to
    `channel_ratio` x the Fast channels, BN, ReLU, concatenated onto Slow (the default).
  - 'time_to_channel_concat' / '_sum': pack each group of `alpha` Fast frames into the
    channels of one frame, then concatenate onto / add to Slow (the sum needs
    alpha * C_fast == C_slow, true for 4x16 with beta=1/8).
  - 'time_strided_sample': keep one Fast frame out of every `alpha`, concatenate.
  """

  kind: str
  alpha: int
  kernel: int
  channel_ratio: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, slow: jax.Array, fast: jax.Array) -> jax.Array:
    n, t_slow = slow.shape[:2]
    if fast.shape[1] != self.alpha * t_slow or fast.shape[2:4] != slow.shape[2:4]:
      raise ValueError(
        f'{self.name}: Fast features {fast.shape} do not line up with Slow {slow.shape} '
        f'for alpha={self.alpha} (need T_fast = alpha * T_slow and equal H, W).'
      )
    if self.kind == 'time_strided_conv':
      y = self.conv(
        fast.shape[-1] * self.channel_ratio, (self.kernel, 1, 1), (self.alpha, 1, 1), name='conv'
      )(fast)
      y = nn.relu(self.norm(name='bn')(y))
      return jnp.concatenate([slow, y], axis=-1)
    if self.kind == 'time_strided_sample':
      return jnp.concatenate([slow, fast[:, :: self.alpha]], axis=-1)
    if self.kind in ('time_to_channel_sum', 'time_to_channel_concat'):
      _, _, h, w, c = fast.shape
      y = fast.reshape(n, t_slow, self.alpha, h, w, c).transpose(0, 1, 3, 4, 2, 5)
      y = y.reshape(n, t_slow, h, w, self.alpha * c)
      if self.kind == 'time_to_channel_concat':
        return jnp.concatenate([slow, y], axis=-1)
      if y.shape[-1] != slow.shape[-1]:
        raise ValueError(
          f'{self.name}: time_to_channel_sum needs alpha * C_fast == C_slow, got '
          f'{self.alpha} * {c} != {slow.shape[-1]}; use time_to_channel_concat.'
        )
      return slow + y
    raise ValueError(f'lateral={self.kind!r}; expected one of {LATERALS}')


class AudioToVisual(nn.Module):
  """Audio->visual lateral used by A->FS (into fused Slow) and A->F->S (into Fast).

  The audio features (N, time, freq, C) are averaged over frequency, then two temporal
  convs of width `kernel` with BN+ReLU: the first to `inner` channels, the second to
  `features` channels with the temporal stride that lands on `num_frames`. Returns
  (N, num_frames, features), to be broadcast over H, W and added to the visual tensor.
  """

  features: int
  inner: int
  kernel: int
  num_frames: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, audio: jax.Array) -> jax.Array:
    a = audio.mean(axis=2)
    t_audio = a.shape[1]
    if t_audio % self.num_frames:
      raise ValueError(
        f'{self.name}: {t_audio} audio frames cannot be strided onto {self.num_frames} visual '
        'frames; the audio frame count must be a multiple of the visual one at each junction.'
      )
    y = nn.relu(self.norm(name='bn_a')(self.conv(self.inner, (self.kernel,), name='conv_a')(a)))
    stride = (t_audio // self.num_frames,)
    y = self.conv(self.features, (self.kernel,), stride, name='conv_b')(y)
    return nn.relu(self.norm(name='bn_b')(y))


class AudioVisualNonLocal(nn.Module):
  """Audiovisual non-local fusion (paper 000, Fig. 2 right).

  Audio (averaged over frequency and over the audio frames that fall in each visual frame)
  forms one query per visual frame; it is matched against every visual position (T, H, W);
  the attention-weighted visual values become a new feature per frame, mapped back to the
  visual width by a 1x1 conv and BN (scale initialised at zero), and returned as a
  (N, T, 1, 1, C) residual that the caller adds (and DropPathway can switch off).
  """

  inner: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, visual: jax.Array, audio: jax.Array) -> jax.Array:
    n, t = visual.shape[:2]
    a = audio.mean(axis=2)
    if a.shape[1] % t:
      raise ValueError(f'{self.name}: {a.shape[1]} audio frames do not divide into {t} frames')
    a = a.reshape(n, t, a.shape[1] // t, a.shape[-1]).mean(axis=2)
    query = self.conv(self.inner, (1,), use_bias=True, name='query')(a)
    key = self.conv(self.inner, (1, 1, 1), use_bias=True, name='key')(visual).reshape(
      n, -1, self.inner
    )
    value = self.conv(self.inner, (1, 1, 1), use_bias=True, name='value')(visual).reshape(
      n, -1, self.inner
    )
    affinity = jnp.einsum('ntd,npd->ntp', query, key) * (self.inner**-0.5)
    attention = jax.nn.softmax(affinity.astype(jnp.float32), axis=-1).astype(value.dtype)
    y = jnp.einsum('ntp,npd->ntd', attention, value)
    y = self.conv(visual.shape[-1], (1,), use_bias=True, name='out')(y)
    y = self.norm(name='bn', scale_init=nn.initializers.zeros)(y)
    return y[:, :, None, None, :]


class AVSProjection(nn.Module):
  """Linear projection to `dim` followed by L2 normalisation scaled by 0.5 (AVS embeddings).

  With both embeddings on a sphere of radius 0.5, their Euclidean distance lies in [0, 1],
  which is the range the contrastive margin of 0.99 is chosen for.
  """

  dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.Dense(self.dim, dtype=jnp.float32, name='dense')(x.astype(jnp.float32))
    norm = jnp.sqrt(jnp.sum(jnp.square(y), axis=-1, keepdims=True))
    return 0.5 * y / jnp.maximum(norm, 1e-6)
