"""The ROT head: a linear map of the visual pool5 features, checked against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avsf_jax.models import rotation_head


def _pooled(seed=0, slow=6, fast=2, audio=3):
  rng = np.random.default_rng(seed)
  return {
    'slow': jnp.asarray(rng.normal(size=(5, slow)), jnp.float32),
    'fast': jnp.asarray(rng.normal(size=(5, fast)), jnp.float32),
    'audio': jnp.asarray(rng.normal(size=(5, audio)), jnp.float32),
  }


def test_visual_head_is_fc_on_slow_then_fast_and_ignores_audio():
  head = rotation_head.RotationHead()
  pooled = _pooled()
  variables = head.init(jax.random.key(0), pooled, train=False)
  kernel = np.asarray(variables['params']['fc']['kernel'])
  bias = np.asarray(variables['params']['fc']['bias'])
  assert kernel.shape == (8, 4) and np.all(bias == 0)
  assert 0.005 < kernel.std() < 0.02  # N(0, 0.01), like the classifier
  logits = head.apply(variables, pooled, train=True)
  features = np.concatenate([pooled['slow'], pooled['fast']], axis=-1)
  np.testing.assert_allclose(logits, features @ kernel + bias, rtol=1e-6, atol=1e-7)
  louder = dict(pooled, audio=pooled['audio'] * 100.0)
  np.testing.assert_array_equal(head.apply(variables, louder, train=False), logits)


def test_all_features_head_reads_audio_too():
  head = rotation_head.RotationHead(features='all')
  pooled = _pooled()
  variables = head.init(jax.random.key(0), pooled, train=False)
  kernel = np.asarray(variables['params']['fc']['kernel'])
  assert kernel.shape == (11, 4)
  features = np.concatenate([pooled['slow'], pooled['fast'], pooled['audio']], axis=-1)
  np.testing.assert_allclose(
    head.apply(variables, pooled, train=False), features @ kernel, rtol=1e-6, atol=1e-7
  )


def test_r50_sizes_and_errors():
  """R50 AVSlowFast pool5: Slow 2048 + Fast 256 -> 9,220 parameters; with Audio 1024, 13,316."""
  pooled = {
    'slow': jnp.zeros((2, 2048)),
    'fast': jnp.zeros((2, 256)),
    'audio': jnp.zeros((2, 1024)),
  }
  for features, expected in (('visual', 2304 * 4 + 4), ('all', 3328 * 4 + 4)):
    shapes = jax.eval_shape(
      lambda p, f=features: rotation_head.RotationHead(features=f).init(
        jax.random.key(0), p, train=False
      ),
      pooled,
    )
    assert sum(x.size for x in jax.tree.leaves(shapes)) == expected
  with pytest.raises(KeyError, match='slow or fast'):
    rotation_head.RotationHead().init(jax.random.key(0), {'audio': pooled['audio']}, train=False)
  with pytest.raises(ValueError, match='features'):
    rotation_head.RotationHead(features='audio').init(jax.random.key(0), pooled, train=False)
