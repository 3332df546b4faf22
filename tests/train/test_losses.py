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


# -- AVS gated by DropPathway (issue 12, item 1) ----------------------------------------------


def test_avs_junction_weights_follow_drop_pathway():
  """Junctions up to the earliest audio fusion (res3) always count; later ones (res4, pool5)
  only where the audio->visual laterals were dropped (keep = 0) this step."""
  junctions, fused_at = ('res3', 'res4', 'pool5'), ('res3', 'res4')
  fused = losses.avs_junction_weights(junctions, jnp.array(1.0), fused_at)
  assert {j: float(w) for j, w in fused.items()} == {'res3': 1.0, 'res4': 0.0, 'pool5': 0.0}
  dropped = losses.avs_junction_weights(junctions, jnp.array(0.0), fused_at)
  assert {j: float(w) for j, w in dropped.items()} == {'res3': 1.0, 'res4': 1.0, 'pool5': 1.0}
  # Per example (or per BN group, expanded to examples): each example on its own.
  mixed = losses.avs_junction_weights(junctions, jnp.array([1.0, 0.0, 1.0, 0.0]), fused_at)
  np.testing.assert_array_equal(mixed['res3'], [1, 1, 1, 1])
  np.testing.assert_array_equal(mixed['res4'], [0, 1, 0, 1])
  np.testing.assert_array_equal(mixed['pool5'], [0, 1, 0, 1])
  # Fusion at res4 only (Table 6, res4 + pool5): res3 and res4 always count, pool5 is gated.
  late = losses.avs_junction_weights(junctions, jnp.array(1.0), ('res4',))
  assert {j: float(w) for j, w in late.items()} == {'res3': 1.0, 'res4': 1.0, 'pool5': 0.0}
  # No audio fusion into the visual pathways (pool5 concatenation only): all count.
  none = losses.avs_junction_weights(junctions, jnp.array(1.0), ())
  assert all(float(w) == 1.0 for w in none.values())
  with pytest.raises(ValueError, match='res6'):
    losses.avs_junction_weights(('res6',), jnp.array(1.0), fused_at)


def test_avs_total_with_junction_weights_counts_only_the_gated_pairs():
  """Two examples, both junctions with the same embeddings (per-example terms t0, t1): res3
  counts both, res4 only example 1 (its laterals were dropped), still over the 2 pairs."""
  v = _unit([[1, 0], [0, 1]])
  a = _unit([[1, 1], [0, 1]])
  n = _unit([[-1, 0], [1, 1]])
  d = lambda x, y: np.linalg.norm(x - y, axis=-1)
  t = d(v, a) ** 2 + np.maximum(0, 0.99 - d(v, n)) ** 2
  avs = {j: {'visual': v, 'audio': a, 'audio_negative': n} for j in ('res3', 'res4')}
  weights = losses.avs_junction_weights(('res3', 'res4'), jnp.array([1.0, 0.0]), ('res3',))
  total, m = losses.avs_total(
    avs, margin=0.99, pair_mask=None, duplicate_distance=0.0, junction_weights=weights
  )
  np.testing.assert_allclose(m['avs_loss_res3'], (t[0] + t[1]) / 4, rtol=1e-5)
  np.testing.assert_allclose(m['avs_loss_res4'], t[1] / 4, rtol=1e-5)
  np.testing.assert_allclose(total, (t[0] + 2 * t[1]) / 4, rtol=1e-5)
  assert t[0] > 0.01  # the gate really removed something
  # Without weights (the first recipe) every junction counts every step.
  ungated, _ = losses.avs_total(avs, margin=0.99, pair_mask=None, duplicate_distance=0.0)
  np.testing.assert_allclose(ungated, (t[0] + t[1]) / 2, rtol=1e-5)


# -- AVS pair masks: the authors' filter_duplicates (issue 12, item 4) ------------------------


def test_filter_duplicates_keeps_pairs_that_vary_and_differ():
  """Variance > 0.01 for both log-mels and cosine similarity < 0.99999, else the pair goes.

  Pairs (2 x 2 log-mels, flattened): 0 kept; 1 positive constant (variance 0); 2 negative
  of variance 0.0064 (entries +-0.08); 3 negative = 2 x positive (cosine 1); 4 negative
  nearly parallel (cosine 0.99999967 > 0.99999); 5 cosine 0.9999 kept.
  """
  base = np.array([1.0, -1.0, 2.0, 0.5])
  positive = np.stack([base, np.full(4, 3.0), base, base, base, base])
  negative = np.stack(
    [
      np.array([0.0, 1.0, -1.0, 2.0]),
      base,
      np.array([0.08, -0.08, 0.08, -0.08]),
      2.0 * base,
      base + np.array([0.0, 0.0, 0.0, 0.002]),
      base + np.array([0.0, 0.0, 0.0, 0.04]),
    ]
  )
  cos = lambda x, y: x @ y / np.linalg.norm(x) / np.linalg.norm(y)
  assert 0.99999 < cos(base, negative[4]) < 1.0 and cos(base, negative[5]) < 0.99999
  assert np.var(negative[2]) == pytest.approx(0.0064)
  mask = losses.filter_duplicates(
    jnp.asarray(positive.reshape(6, 2, 2, 1)), jnp.asarray(negative.reshape(6, 2, 2, 1))
  )
  np.testing.assert_array_equal(mask, [1, 0, 0, 0, 0, 1])
  assert mask.dtype == jnp.float32
  # Dropping a pair removes both its positive and its negative term from the AVS loss.
  v = _unit(np.eye(6)[:, :3] + 0.1)
  e = _unit(np.ones((6, 3)))
  loss = losses.avs_contrastive(v, e, -e, margin=0.99, pair_mask=mask)
  d = lambda x, y: np.linalg.norm(x - y, axis=-1)
  terms = d(v, e) ** 2 + np.maximum(0, 0.99 - d(v, -e)) ** 2
  np.testing.assert_allclose(loss, (terms[0] + terms[5]) / 2 / 2, rtol=1e-5)
