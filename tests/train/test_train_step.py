"""Pieces of the classification task that need no model: negatives, curriculum, silence masks, metrics."""

import jax
import jax.numpy as jnp
import numpy as np

from avsf_jax.tasks import classification


def _batch(n=4):
  audio = jnp.arange(n, dtype=jnp.float32)[:, None, None, None] * jnp.ones((n, 2, 2, 1))
  return {
    'audio': audio,
    'audio_negative': -audio - 100.0,
    'audio_negative_is_hard': jnp.array([1.0, 1.0, 0.0, 1.0][:n]),
    'has_audio': jnp.array([1.0, 0.0, 1.0, 1.0][:n]),
  }


def test_easy_negatives_are_the_previous_clip_audio():
  negative, ok = classification.select_negatives(_batch(), jnp.float32(0.0), jax.random.PRNGKey(0))
  np.testing.assert_array_equal(negative[:, 0, 0, 0], [3.0, 0.0, 1.0, 2.0])
  np.testing.assert_array_equal(ok, [1.0, 1.0, 0.0, 1.0])  # rolled has_audio


def test_easy_negatives_stay_within_device_sized_groups():
  negative, ok = classification.select_negatives(
    _batch(), jnp.float32(0.0), jax.random.PRNGKey(0), group=2
  )
  np.testing.assert_array_equal(negative[:, 0, 0, 0], [1.0, 0.0, 3.0, 2.0])
  np.testing.assert_array_equal(ok, [0.0, 1.0, 1.0, 1.0])


def test_hard_negatives_only_where_the_pipeline_has_one():
  negative, ok = classification.select_negatives(_batch(), jnp.float32(1.0), jax.random.PRNGKey(0))
  np.testing.assert_array_equal(negative[:, 0, 0, 0], [-100.0, -101.0, 1.0, -103.0])
  np.testing.assert_array_equal(ok, [1.0, 1.0, 0.0, 1.0])


def test_hard_fraction_is_about_a_quarter():
  n = 4000
  batch = {
    'audio': jnp.zeros((n, 1, 1, 1)),
    'audio_negative': jnp.ones((n, 1, 1, 1)),
    'audio_negative_is_hard': jnp.ones(n),
    'has_audio': jnp.ones(n),
  }
  negative, _ = classification.select_negatives(batch, jnp.float32(0.25), jax.random.PRNGKey(1))
  assert abs(float(negative.mean()) - 0.25) < 0.03


def test_audible_masks_missing_and_near_silent_audio():
  audio = jnp.stack([jnp.zeros((2, 2, 1)), jnp.full((2, 2, 1), -2.44), jnp.zeros((2, 2, 1))])
  mask = classification.audible(audio, jnp.array([1.0, 1.0, 0.0]), threshold=-2.0)
  np.testing.assert_array_equal(mask, [1.0, 0.0, 0.0])
