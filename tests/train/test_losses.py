"""Losses: values against hand-computed references."""

import jax.numpy as jnp
import numpy as np
import pytest

from avsf_jax import losses


def _unit(v):
  v = np.asarray(v, np.float32)
  return 0.5 * v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_softmax_cross_entropy_matches_log_softmax():
  logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
  labels = jnp.array([0, 2])
  expected = -np.mean([2.0 - np.log(np.exp(2) + 1 + np.exp(-1)), -np.log(3.0)])
  np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels), expected, rtol=1e-6)


def test_classification_sums_heads_and_reports_accuracy_per_head():
  logits = {'verb': jnp.array([[5.0, 0.0]]), 'noun': jnp.array([[0.0, 0.0, 0.0]])}
  batch = {'label_verb': jnp.array([0]), 'label_noun': jnp.array([1])}
  loss, m = losses.classification(logits, batch, multi_label=False)
  verb = -np.log(np.exp(5) / (np.exp(5) + 1))
  np.testing.assert_allclose(loss, verb + np.log(3.0), rtol=1e-5)
  assert float(m['accuracy_verb']) == 1.0
  np.testing.assert_allclose(m['classification_loss_noun'], np.log(3.0), rtol=1e-6)


def test_sigmoid_cross_entropy_for_multi_label():
  logits = jnp.array([[0.0, 2.0]])
  targets = jnp.array([[1.0, 0.0]])
  loss, m = losses.classification(logits, {'label': targets}, multi_label=True)
  expected = np.mean([np.log(2.0), np.log1p(np.exp(2.0))])
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  assert 'accuracy' not in m


def test_avs_loss_is_the_spec_formula():
  v = _unit([[1, 0], [0, 1]])
  a_pos = _unit([[1, 1], [0, 1]])
  a_neg = _unit([[-1, 0], [1, 1]])
  d_pos = np.linalg.norm(v - a_pos, axis=-1)
  d_neg = np.linalg.norm(v - a_neg, axis=-1)
  expected = np.mean(d_pos**2 + np.maximum(0, 0.99 - d_neg) ** 2) / 2
  got = losses.avs_contrastive(v, a_pos, a_neg, margin=0.99)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  assert expected > 0


def test_avs_loss_masks_silent_pairs_and_duplicate_negatives():
  v = _unit([[1, 0], [0, 1], [1, 1]])
  a_pos = _unit([[1, 0.2], [0, 1], [1, 0]])
  a_neg = _unit([[0, 1], [0, 1], [-1, 0]])  # example 1: negative == positive audio
  mask = jnp.array([1.0, 1.0, 0.0])  # example 2: silent
  got = losses.avs_contrastive(
    v, a_pos, a_neg, margin=0.99, pair_mask=mask, duplicate_distance=0.01
  )
  d = lambda x, y: np.linalg.norm(x - y, axis=-1)
  term0 = d(v[0], a_pos[0]) ** 2 + max(0, 0.99 - d(v[0], a_neg[0])) ** 2
  term1 = d(v[1], a_pos[1]) ** 2  # hinge dropped: near-duplicate negative
  np.testing.assert_allclose(got, (term0 + term1) / 2 / 2, rtol=1e-5)


def test_avs_loss_is_zero_when_every_pair_is_masked():
  v = _unit([[1, 0]])
  assert float(losses.avs_contrastive(v, v, -v, margin=0.99, pair_mask=jnp.zeros(1))) == 0.0


def test_avs_total_sums_junctions():
  v, a, n = _unit([[1, 0]]), _unit([[1, 1]]), _unit([[0, 1]])
  one = losses.avs_contrastive(v, a, n, margin=0.5)
  avs = {j: {'visual': v, 'audio': a, 'audio_negative': n} for j in ('res3', 'pool5')}
  total, m = losses.avs_total(avs, margin=0.5, pair_mask=None, duplicate_distance=0.0)
  np.testing.assert_allclose(total, 2 * one, rtol=1e-6)
  assert set(m) == {'avs_loss_res3', 'avs_loss_pool5'}


@pytest.mark.parametrize('label_smoothing', [0.1])
def test_label_smoothing_raises_loss_of_confident_correct_prediction(label_smoothing):
  logits = jnp.array([[10.0, 0.0, 0.0]])
  plain = losses.softmax_cross_entropy(logits, jnp.array([0]))
  smooth = losses.softmax_cross_entropy(logits, jnp.array([0]), label_smoothing)
  assert float(smooth) > float(plain) + 0.1
