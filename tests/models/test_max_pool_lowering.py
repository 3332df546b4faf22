"""Max pooling's CPU lowering: the same values and the same gradients as XLA's reduce-window."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avsf_jax.models import layers


def _values_and_gradient(x, g, window, strides, lowering):
  y, vjp = jax.vjp(lambda v: layers.max_pool(v, window, strides, lowering=lowering), x)
  return y, vjp(g)[0]


@pytest.mark.parametrize(
  'shape, window, strides',
  [
    ((2, 3, 8, 10, 4), (1, 3, 3), (1, 2, 2)),  # the stems: the even-length pair form
    ((1, 5, 7, 6, 2), (3, 2, 3), (1, 2, 2)),  # odd length, even window: shifted slices
  ],
)
def test_lowered_max_pool_matches_xla_values_and_gradients_with_ties(shape, window, strides):
  # Integers from a small range: most windows hold several equal maxima, so the test also
  # checks that the gradient goes to the first maximum in row-major order, as XLA's does
  # (a tie sent elsewhere moves a whole gradient entry; summation order moves an ulp).
  x = jax.random.randint(jax.random.key(0), shape, -3, 3).astype(jnp.float32)
  shape_out = jax.eval_shape(lambda v: layers.max_pool(v, window, strides, lowering='xla'), x)
  g = jax.random.normal(jax.random.key(1), shape_out.shape)
  run = jax.jit(_values_and_gradient, static_argnums=(2, 3, 4))
  y_xla, grad_xla = run(x, g, window, strides, 'xla')
  y, grad = run(x, g, window, strides, 'lowered')
  np.testing.assert_array_equal(y, y_xla)
  np.testing.assert_allclose(grad, grad_xla, rtol=1e-6, atol=1e-6)
  pool = lambda v: layers.max_pool(v, window, strides, lowering='lowered')
  assert 'reduce_window' not in str(jax.make_jaxpr(pool)(x))


def test_max_pool_hand_computed_gradient_goes_to_the_first_maximum():
  x = jnp.array([[1.0, 5.0, 5.0, 2.0], [5.0, 0.0, 1.0, 1.0]]).reshape(1, 2, 4, 1)
  # 3x3 windows, stride 2, -inf padding, centred on (0, 0) and (0, 2): both maxima are the 5
  # at (0, 1), the first of (0, 1) and (1, 0) in the one, of (0, 1) and (0, 2) in the other.
  y, grad = _values_and_gradient(
    x, jnp.array([1.0, 10.0]).reshape(1, 1, 2, 1), (3, 3), (2, 2), 'lowered'
  )
  np.testing.assert_array_equal(y[0, :, :, 0], [[5.0, 5.0]])
  np.testing.assert_array_equal(grad[0, :, :, 0], [[0, 11, 0, 0], [0, 0, 0, 0]])
