"""IMGAUD2VID loss (Eqs. 2-4): hand-computed values, a numpy reference, masking and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avsf_jax.tasks import distillation

LN2, LN3 = np.log(2.0), np.log(3.0)
# One compilation per call signature instead of one per operation.
_loss = jax.jit(distillation.distillation_loss, static_argnames=('kl_weight',))


def _hand_case():
  student_logits = np.array([[0.0, 0.0], [LN3, 0.0]], np.float32)  # softmax (1/2, 1/2), (3/4, 1/4)
  teacher_logits = np.array([[LN3, 0.0], [0.0, 0.0]], np.float32)  # softmax (3/4, 1/4), (1/2, 1/2)
  student_desc = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], np.float32)
  teacher_desc = np.array([[1.0, 0.0, 5.0], [-1.0, 1.0, 0.5]], np.float32)
  return student_logits, student_desc, teacher_logits, teacher_desc


def test_hand_computed_terms():
  total, terms = _loss(*_hand_case())
  # Clip 0: -(3/4 + 1/4) log(1/2) = ln 2. Clip 1: -(1/2 log 3/4 + 1/2 log 1/4) = 2 ln 2 - ln3 / 2.
  kl = (LN2 + 2 * LN2 - 0.5 * LN3) / 2
  l1 = (4.0 + 2.5) / 2  # |0| + |-2| + |2| and |-1| + |1| + |0.5|, summed over D
  np.testing.assert_allclose(terms['kl'], kl, rtol=1e-6)
  np.testing.assert_allclose(terms['l1'], l1, rtol=1e-6)
  np.testing.assert_allclose(total, l1 + 100.0 * kl, rtol=1e-6)
  np.testing.assert_allclose(terms['total'], total)


def test_mask_averages_over_real_clips_only():
  _, terms = _loss(*_hand_case(), mask=np.array([1.0, 0.0]))
  np.testing.assert_allclose(terms['kl'], LN2, rtol=1e-6)
  np.testing.assert_allclose(terms['l1'], 4.0, rtol=1e-6)


def test_matches_numpy_reference():
  rng = np.random.default_rng(0)
  s_logits, t_logits = rng.normal(size=(2, 6, 10)).astype(np.float32) * 3
  s_desc, t_desc = rng.normal(size=(2, 6, 32)).astype(np.float32)
  total, terms = _loss(s_logits, s_desc, t_logits, t_desc, kl_weight=7.0)

  def log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))

  kl = -(np.exp(log_softmax(t_logits)) * log_softmax(s_logits)).sum(-1).mean()
  l1 = np.abs(t_desc - s_desc).sum(-1).mean()
  np.testing.assert_allclose(terms['kl'], kl, rtol=1e-5)
  np.testing.assert_allclose(terms['l1'], l1, rtol=1e-5)
  np.testing.assert_allclose(total, l1 + 7.0 * kl, rtol=1e-5)


def test_gradients_reach_the_student_only():
  s_logits, s_desc, t_logits, t_desc = map(jnp.asarray, _hand_case())

  def loss(*args):
    return _loss(*args)[0]

  g_s_logits, g_s_desc, g_t_logits, g_t_desc = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(
    s_logits, s_desc, t_logits, t_desc
  )
  np.testing.assert_array_equal(g_t_logits, 0.0)
  np.testing.assert_array_equal(g_t_desc, 0.0)
  # d/ds of lambda * mean CE: lambda * (softmax(s) - softmax(t)) / N.
  expected = 100.0 * (jax.nn.softmax(s_logits) - jax.nn.softmax(t_logits)) / 2
  np.testing.assert_allclose(g_s_logits, expected, rtol=1e-5, atol=1e-6)
  # d/dPsi of mean sum |t - Psi|: sign(Psi - t) / N, wherever Psi != t (a kink at equality).
  differ = np.asarray(s_desc != t_desc)
  np.testing.assert_allclose(np.asarray(g_s_desc)[differ], (np.sign(s_desc - t_desc) / 2)[differ])


def test_width_mismatch_is_explained():
  s_logits, s_desc, t_logits, t_desc = _hand_case()
  with pytest.raises(ValueError, match='embed_dim'):
    _loss(s_logits, s_desc[:, :2], t_logits, t_desc)
  with pytest.raises(ValueError, match="teacher's classes"):
    _loss(s_logits[:, :1], s_desc, t_logits, t_desc)
