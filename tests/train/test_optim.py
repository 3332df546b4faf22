"""Optimizer: epochs -> steps, LR scaling and schedule, weight-decay mask, SGD semantics."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from avsf_jax import config_lib, optim


def _config(**overrides):
  config = config_lib.optim_config()
  config.update(overrides)
  return config


def test_epochs_to_steps_rounds_up():
  assert optim.epochs_to_steps(256, 240_000, 1024) == 60_000
  assert optim.epochs_to_steps(1.5, 64, 16) == 6
  assert optim.epochs_to_steps(0.1, 64, 16) == 1


def test_linear_scaling_rule():
  assert optim.peak_learning_rate(_config(), 1024) == pytest.approx(1.6)
  assert optim.peak_learning_rate(_config(), 64) == pytest.approx(0.1)


def test_cosine_after_warmup_restarts_the_cosine_at_the_peak():
  """The option kept from the first recipe: ramp to the peak, then a cosine over the rest."""
  config = _config(schedule='cosine_after_warmup', warmup_epochs=1.0, warmup_start_factor=0.01)
  schedule = optim.learning_rate_schedule(config, steps_per_epoch=10, total_steps=110, peak=1.0)
  assert float(schedule(0)) == pytest.approx(0.01)
  assert float(schedule(5)) == pytest.approx(0.01 + 0.99 * 0.5)
  assert float(schedule(10)) == pytest.approx(1.0)
  assert float(schedule(60)) == pytest.approx(0.5, abs=1e-6)  # half-way through the cosine
  assert float(schedule(110)) == pytest.approx(0.0, abs=1e-6)


def test_cosine_is_pyslowfast_one_half_period_over_the_whole_run():
  """PySlowFast `lr_policy`: eta * 0.5 * (cos(pi * n / n_max) + 1) over all n_max steps, the
  warm-up ramping linearly from 0.1 eta to the cosine's value at its end (not to eta).

  256 epochs of 10 steps, warm-up 34 epochs (the released AVSlowFast config):
  epoch 128 of 256 is exactly half the peak, which the restarting cosine would put at
  epoch 145 (128 + 34 / 2) instead.
  """
  config = _config(schedule='cosine', warmup_epochs=34.0, warmup_start_factor=0.1, end_factor=0.0)
  schedule = optim.learning_rate_schedule(config, steps_per_epoch=10, total_steps=2560, peak=1.6)
  at_warmup_end = 1.6 * 0.5 * (np.cos(np.pi * 340 / 2560) + 1.0)  # 1.5310...
  assert float(schedule(0)) == pytest.approx(0.16)
  assert float(schedule(170)) == pytest.approx(0.16 + 0.5 * (at_warmup_end - 0.16), rel=1e-5)
  assert float(schedule(340)) == pytest.approx(at_warmup_end, rel=1e-5)
  assert at_warmup_end < 1.6 - 0.05  # the warm-up never reaches the peak
  assert float(schedule(1280)) == pytest.approx(0.8, rel=1e-5)
  assert float(schedule(1920)) == pytest.approx(1.6 * 0.5 * (np.cos(0.75 * np.pi) + 1), rel=1e-5)
  assert float(schedule(2560)) == pytest.approx(0.0, abs=1e-6)


def test_cosine_end_factor_floors_the_cosine():
  config = _config(schedule='cosine', warmup_epochs=0.0, end_factor=0.01)
  schedule = optim.learning_rate_schedule(config, steps_per_epoch=1, total_steps=100, peak=1.0)
  assert float(schedule(50)) == pytest.approx(0.01 + 0.99 * 0.5, rel=1e-6)
  assert float(schedule(100)) == pytest.approx(0.01, rel=1e-5)


def test_step_decay_for_fine_tuning():
  config = _config(schedule='steps', warmup_epochs=0.0, decay_epochs=(2.0, 4.0), decay_factor=0.1)
  schedule = optim.learning_rate_schedule(config, steps_per_epoch=10, total_steps=60, peak=1.0)
  assert [float(schedule(s)) for s in (0, 19, 20, 39, 40)] == pytest.approx(
    [1.0, 1.0, 0.1, 0.1, 0.01]
  )


def test_weight_decay_skips_norm_and_bias():
  params = {'conv': {'kernel': jnp.ones((3, 3, 2, 2))}, 'bn': {'scale': jnp.ones(2)}}
  assert optim.decay_mask(params, False) == {'conv': {'kernel': True}, 'bn': {'scale': False}}
  assert optim.decay_mask(params, True)['bn']['scale'] is True


def test_sgd_momentum_with_decay_matches_pytorch_update():
  config = _config(weight_decay=0.1, momentum=0.9, nesterov=False)
  tx = optim.make_optimizer(config, optax.constant_schedule(0.5))
  params = {'w': jnp.array([[1.0, 2.0]]), 'b': jnp.array([1.0])}
  grads = {'w': jnp.array([[0.5, 0.5]]), 'b': jnp.array([0.5])}
  state = tx.init(params)
  buf_w, w = np.zeros((1, 2)), np.array([[1.0, 2.0]])
  buf_b, b = np.zeros(1), np.array([1.0])
  for _ in range(2):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    buf_w = 0.9 * buf_w + (0.5 + 0.1 * w)  # torch.optim.SGD: decay inside, before momentum
    w = w - 0.5 * buf_w
    buf_b = 0.9 * buf_b + 0.5  # no decay on rank-1 leaves
    b = b - 0.5 * buf_b
  np.testing.assert_allclose(params['w'], w, rtol=1e-6)
  np.testing.assert_allclose(params['b'], b, rtol=1e-6)


def test_nesterov_matches_pytorch_update():
  """torch.optim.SGD(nesterov=True): buf = m * buf + g; p -= lr * (g + m * buf)."""
  config = _config(weight_decay=0.1, momentum=0.9, nesterov=True)
  tx = optim.make_optimizer(config, optax.constant_schedule(0.5))
  params = {'w': jnp.array([[1.0, -2.0]])}
  grads = {'w': jnp.array([[0.5, 0.25]])}
  state = tx.init(params)
  buf, w = np.zeros((1, 2)), np.array([[1.0, -2.0]])
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    g = np.array([[0.5, 0.25]]) + 0.1 * w
    buf = 0.9 * buf + g
    w = w - 0.5 * (g + 0.9 * buf)
  np.testing.assert_allclose(params['w'], w, rtol=1e-6)
  plain = optim.make_optimizer(
    _config(weight_decay=0.1, momentum=0.9, nesterov=False), optax.constant_schedule(0.5)
  )
  p2 = {'w': jnp.array([[1.0, -2.0]])}
  s2 = plain.init(p2)
  for _ in range(3):
    u, s2 = plain.update(grads, s2, p2)
    p2 = optax.apply_updates(p2, u)
  assert not np.allclose(p2['w'], w, rtol=1e-3)


def test_clipping_bounds_the_update():
  config = _config(weight_decay=0.0, momentum=0.0, clip_grad_norm=1.0)
  tx = optim.make_optimizer(config, optax.constant_schedule(1.0))
  params = {'w': jnp.zeros(2)}
  updates, _ = tx.update({'w': jnp.array([30.0, 40.0])}, tx.init(params), params)
  np.testing.assert_allclose(updates['w'], [-0.6, -0.8], rtol=1e-6)


def test_unknown_schedule_is_an_error():
  with pytest.raises(ValueError, match='schedule'):
    optim.learning_rate_schedule(
      ml_collections.ConfigDict(dict(_config(), schedule='poly')),
      steps_per_epoch=1,
      total_steps=1,
      peak=1.0,
    )
