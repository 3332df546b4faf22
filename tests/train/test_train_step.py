"""Pieces of the train step that need no model: negatives, curriculum, silence masks, metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avsf_jax import metrics, train


def _batch(n=4):
  audio = jnp.arange(n, dtype=jnp.float32)[:, None, None, None] * jnp.ones((n, 2, 2, 1))
  return {
    'audio': audio,
    'audio_negative': -audio - 100.0,
    'audio_negative_is_hard': jnp.array([1.0, 1.0, 0.0, 1.0][:n]),
    'has_audio': jnp.array([1.0, 0.0, 1.0, 1.0][:n]),
  }


def test_easy_negatives_are_the_previous_clip_audio():
  negative, ok = train.select_negatives(_batch(), jnp.float32(0.0), jax.random.PRNGKey(0))
  np.testing.assert_array_equal(negative[:, 0, 0, 0], [3.0, 0.0, 1.0, 2.0])
  np.testing.assert_array_equal(ok, [1.0, 1.0, 0.0, 1.0])  # rolled has_audio


def test_easy_negatives_stay_within_device_sized_groups():
  negative, ok = train.select_negatives(_batch(), jnp.float32(0.0), jax.random.PRNGKey(0), group=2)
  np.testing.assert_array_equal(negative[:, 0, 0, 0], [1.0, 0.0, 3.0, 2.0])
  np.testing.assert_array_equal(ok, [0.0, 1.0, 1.0, 1.0])


def test_hard_negatives_only_where_the_pipeline_has_one():
  negative, ok = train.select_negatives(_batch(), jnp.float32(1.0), jax.random.PRNGKey(0))
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
  negative, _ = train.select_negatives(batch, jnp.float32(0.25), jax.random.PRNGKey(1))
  assert abs(float(negative.mean()) - 0.25) < 0.03


def test_audible_masks_missing_and_near_silent_audio():
  audio = jnp.stack([jnp.zeros((2, 2, 1)), jnp.full((2, 2, 1), -2.44), jnp.zeros((2, 2, 1))])
  mask = train.audible(audio, jnp.array([1.0, 1.0, 0.0]), threshold=-2.0)
  np.testing.assert_array_equal(mask, [1.0, 0.0, 0.0])


def test_classification_results_top1_top5_and_per_class():
  scores = np.array(
    [
      [0.9, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0],  # label 0: top-1 hit
      [0.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # label 0: ranked last, outside the top 5
      [0.5, 0.4, 0.0, 0.0, 0.0, 0.1, 0.0],  # label 5: ranked third
    ]
  )
  r = metrics.classification_results(scores, np.array([0, 0, 5]), 7)
  assert r['top1'] == pytest.approx(100.0 / 3)
  assert r['top5'] == pytest.approx(200.0 / 3)
  assert r['per_class_top1'][0] == 50.0 and r['per_class_top1'][5] == 0.0
  assert np.isnan(r['per_class_top1'][1]) and r['num_examples'] == 3


def test_mean_average_precision():
  scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.1, 0.2]])
  targets = np.array([[1, 0], [0, 1], [1, 0]])
  # class 0: ranks 1 (hit), 2 (miss), 3 (hit) -> AP = (1 + 2/3) / 2; class 1: rank 1 -> 1.
  expected = 100 * ((1 + 2 / 3) / 2 + 1.0) / 2
  assert abs(metrics.mean_average_precision(scores, targets) - expected) < 1e-9
