"""A tiny AVSlowFast and batches for the self-supervised tests (fields as tests/train/tiny_config)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from avsf_jax import models

T, ALPHA, CROP, AUDIO = 2, 4, 32, (32, 16)


def tiny_backbone(**overrides) -> models.AVSlowFast:
  """Depth 14, slow width 8, beta_inv 4, alpha 4, whole-batch BN: a forward pass in a second."""
  fields = dict(
    num_classes=4,
    depth=14,
    slow_width=8,
    beta_inv=4,
    alpha=ALPHA,
    fusion_kernel=3,
    audio_fusion_inner=8,
    avs_dim=8,
    bn_group_size=0,
  )
  fields.update(overrides)
  return models.AVSlowFast(**fields)


def batch(n: int = 4, seed: int = 0, num_classes: int = 4) -> dict[str, jnp.ndarray]:
  """A training batch as the pipeline makes it, with class labels and rotation labels."""
  rng = np.random.default_rng(seed)
  return {
    'slow': jnp.asarray(rng.normal(size=(n, T, CROP, CROP, 3)), jnp.float32),
    'fast': jnp.asarray(rng.normal(size=(n, T * ALPHA, CROP, CROP, 3)), jnp.float32),
    'audio': jnp.asarray(rng.normal(size=(n, *AUDIO, 1)), jnp.float32),
    'audio_negative': jnp.asarray(rng.normal(size=(n, *AUDIO, 1)), jnp.float32),
    'audio_negative_is_hard': jnp.ones((n,), jnp.float32),
    'has_audio': jnp.ones((n,), jnp.float32),
    'rotation': jnp.asarray(rng.integers(0, 4, size=n), jnp.int32),
    'label': jnp.asarray(rng.integers(0, num_classes, size=n), jnp.int32),
  }


def random_variables(model, inputs, seed: int = 0) -> dict:
  """Random params and unit/zero BN statistics of the right shapes, without compiling `init`
  (its hundreds of threefry draws compile far slower on CPU than a forward pass)."""
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), inputs)
  rng = np.random.default_rng(seed)
  params = jax.tree.map(
    lambda s: jnp.asarray(rng.normal(scale=0.2, size=s.shape), s.dtype), shapes['params']
  )
  stats = jax.tree_util.tree_map_with_path(
    lambda p, s: (
      jnp.asarray(rng.uniform(0.5, 1.5, size=s.shape), s.dtype)
      if 'var' in jax.tree_util.keystr(p)
      else jnp.asarray(rng.normal(scale=0.1, size=s.shape), s.dtype)
    ),
    shapes['batch_stats'],
  )
  return {'params': params, 'batch_stats': stats}


class StubBackbone(nn.Module):
  """Stands in for `AVSlowFast` in tests of the loss plumbing (compiling the real one takes
  ~20 s on CPU): the same fields and outputs (`(logits, aux)` with 'avs' and 'pooled'), a
  BatchNorm so that batch statistics exist, and audio embeddings that depend on the audio only.
  `oriented`: the visual features weigh each pixel by its row, so they see which way is up
  (plain spatial means do not change when a square frame is rotated).
  """

  num_classes: int = 4
  pathways: tuple = ('slow', 'fast', 'audio')
  avs_junctions: tuple = ('res3', 'pool5')
  audio_fusion_junctions: tuple = ()
  oriented: bool = False

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    def embed(x, name):
      x = nn.Dense(8, name=f'{name}_avs')(x)
      return 0.5 * x / jnp.linalg.norm(x, axis=-1, keepdims=True)

    def visual_mean(x):
      if self.oriented:
        x = x * jnp.arange(1.0, x.shape[2] + 1.0)[:, None, None]
      return x.mean(axis=(1, 2, 3))

    slow = nn.BatchNorm(use_running_average=not train, name='slow_bn')(visual_mean(inputs['slow']))
    pooled = {
      'slow': nn.Dense(6, name='slow')(slow),
      'fast': nn.Dense(2, name='fast')(visual_mean(inputs['fast'])),
    }
    avs = {}
    if 'audio' in self.pathways:
      audio_proj = nn.Dense(5, name='audio')
      pooled['audio'] = audio_proj(inputs['audio'].mean(axis=(1, 3)))
      visual = jnp.concatenate([pooled['slow'], pooled['fast']], axis=-1)
      for j in self.avs_junctions:
        audio_embed = nn.Dense(8, name=f'{j}_audio_avs')

        def embed_audio(a, layer=audio_embed):
          x = layer(a)
          return 0.5 * x / jnp.linalg.norm(x, axis=-1, keepdims=True)

        avs[j] = {'visual': embed(visual, j), 'audio': embed_audio(pooled['audio'])}
        if inputs.get('audio_negative') is not None:
          negative = audio_proj(inputs['audio_negative'].mean(axis=(1, 3)))
          avs[j]['audio_negative'] = embed_audio(negative)
    logits = nn.Dense(self.num_classes, name='head')(jnp.concatenate(list(pooled.values()), -1))
    return logits, {'avs': avs, 'pooled': pooled, 'drop_pathway_keep': jnp.ones(())}
