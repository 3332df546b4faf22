"""avsf_jax.tasks.detection: the masked box BCE by hand, and padded boxes giving zero loss and
zero gradient, through the RoI head's parameters too."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avsf_jax.models import detection_head
from avsf_jax.tasks import detection


def _bce(x, y):
  return max(x, 0.0) - x * y + np.log1p(np.exp(-abs(x)))


def test_masked_bce_is_the_mean_over_valid_boxes_and_classes():
  logits = np.array([[[2.0, -1.0], [0.5, 0.0]], [[np.nan, np.inf], [-3.0, 4.0]]], np.float32)
  labels = np.array([[[1, 0], [0, 1]], [[1, 1], [1, 0]]], np.float32)
  mask = np.array([[True, True], [False, True]])
  terms = [_bce(2.0, 1), _bce(-1.0, 0), _bce(0.5, 0), _bce(0.0, 1), _bce(-3.0, 1), _bce(4.0, 0)]
  loss = detection.masked_box_bce(logits, labels, mask)
  assert float(loss) == pytest.approx(sum(terms) / 6.0, rel=1e-6)
  assert float(detection.masked_box_bce(logits, labels, np.zeros((2, 2), bool))) == 0.0


def test_padded_boxes_get_zero_gradient_even_with_non_finite_logits():
  logits = jnp.array([[[2.0, -1.0], [np.nan, np.inf]]])
  labels = jnp.array([[[1.0, 0.0], [1.0, 1.0]]])
  mask = jnp.array([[True, False]])
  grad = jax.jit(jax.grad(detection.masked_box_bce))(logits, labels, mask)
  sig = 1.0 / (1.0 + np.exp(-np.array([2.0, -1.0])))
  np.testing.assert_allclose(grad[0, 0], (sig - [1.0, 0.0]) / 2.0, rtol=1e-6)
  np.testing.assert_array_equal(grad[0, 1], [0.0, 0.0])


def test_padding_changes_neither_loss_nor_parameter_gradient():
  """The same two real boxes, once alone and once padded to 4 slots holding junk boxes and
  labels: identical loss and identical gradients of the head's parameters."""
  rng = np.random.default_rng(0)
  features = {
    'slow': jnp.asarray(rng.normal(size=(1, 2, 6, 8, 4)), jnp.float32),
    'fast': jnp.asarray(rng.normal(size=(1, 4, 6, 8, 2)), jnp.float32),
  }
  real = np.array([[[8.0, 8.0, 60.0, 90.0], [70.0, 10.0, 120.0, 50.0]]], np.float32)
  junk = np.array([[[0.0, 0.0, 128.0, 96.0], [500.0, -50.0, 10.0, 20.0]]], np.float32)
  labels = np.array([[[1, 0, 1], [0, 0, 1]]], np.float32)
  head = detection_head.RoIHead(num_classes=3, dropout_rate=0.0)
  params = jax.jit(head.init, static_argnames='train')(
    jax.random.key(0), features, real, train=False
  )['params']

  def loss_fn(p, boxes, box_labels, mask):
    logits = head.apply({'params': p}, features, boxes, train=False)
    batch = {'box_labels': box_labels, 'box_mask': mask}
    return detection.loss_and_metrics(logits, batch)[0]

  value_and_grad = jax.jit(jax.value_and_grad(loss_fn))
  loss_a, grad_a = value_and_grad(params, real, labels, np.ones((1, 2), bool))
  padded = np.concatenate([real, junk], axis=1)
  padded_labels = np.concatenate([labels, np.ones_like(labels)], axis=1)
  mask = np.array([[True, True, False, False]])
  loss_b, grad_b = value_and_grad(params, padded, padded_labels, mask)
  assert float(loss_b) == pytest.approx(float(loss_a), rel=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grad_a, grad_b)
  assert float(jnp.abs(grad_a['projection']['kernel']).sum()) > 0.0


def test_scores_are_sigmoid_probabilities():
  np.testing.assert_allclose(detection.scores(jnp.array([0.0, np.log(3.0)])), [0.5, 0.75])


def test_shape_errors_name_the_batch_keys():
  with pytest.raises(ValueError, match=r'box_mask \(N, M\)'):
    detection.masked_box_bce(jnp.zeros((1, 2, 3)), jnp.zeros((1, 2, 3)), jnp.zeros((1, 3)))
