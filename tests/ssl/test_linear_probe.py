"""Probe mechanics (spec 5.4 T4): a frozen backbone stays bit-identical, BN statistics included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avsf_jax.models import probe
from avsf_jax.tasks import linear_probe
from tests.ssl import helpers

INPUTS = ('slow', 'fast', 'audio')


def test_recipes_are_the_papers():
  linear = linear_probe.RECIPES['linear']
  assert (linear.steps, linear.learning_rate, linear.batch_size) == (320_000, 0.01, 64)
  assert (linear.momentum, linear.weight_decay, linear.mode) == (0.9, 0.0, 'linear')
  ucf, hmdb = linear_probe.RECIPES['fine_tune_ucf101'], linear_probe.RECIPES['fine_tune_hmdb51']
  assert (ucf.steps, ucf.learning_rate, ucf.batch_size) == (80_000, 0.005, 16)
  assert (hmdb.steps, hmdb.learning_rate, hmdb.batch_size) == (30_000, 0.01, 16)
  # Half-period cosine: 0.01 -> 0.005 at half time -> 0 at the end.
  schedule = linear_probe.learning_rate_schedule(linear)
  assert [float(schedule(s)) for s in (0, 160_000, 320_000)] == pytest.approx([0.01, 0.005, 0.0])
  assert float(schedule(80_000)) == pytest.approx(0.01 * (1 + np.cos(np.pi / 4)) / 2)


def test_trainable_mask_selects_only_the_new_fc_in_linear_mode():
  params = {'backbone': {'a': {'kernel': 1.0}, 'probe_fc': 2.0}, 'probe_fc': {'kernel': 3.0}}
  assert linear_probe.trainable_mask(params, 'linear') == {
    'backbone': {'a': {'kernel': False}, 'probe_fc': False},
    'probe_fc': {'kernel': True},
  }
  assert all(jax.tree.leaves(linear_probe.trainable_mask(params, 'fine_tune_all')))
  with pytest.raises(ValueError, match='mode'):
    linear_probe.trainable_mask(params, 'partial')


def _bytes(tree):
  return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


@pytest.mark.slow
def test_linear_probe_steps_change_only_the_fc():
  """Real tiny AVSlowFast: after 3 steps every backbone
  parameter and BN statistic is bit-identical while the FC has moved."""
  model = probe.ProbeModel(backbone=helpers.tiny_backbone(), num_classes=3)
  batch = helpers.batch(n=4, num_classes=3)
  inputs = {k: batch[k] for k in INPUTS}
  variables = helpers.random_variables(model, inputs)
  params, stats = variables['params'], variables['batch_stats']
  # pool5: Slow 8 x 32 + Fast 2 x 32 + Audio 4 x 32 = 448 features.
  assert params['probe_fc']['kernel'].shape == (448, 3)
  recipe = linear_probe.Recipe('linear', steps=10, learning_rate=0.01, batch_size=4)
  tx = linear_probe.make_optimizer(params, recipe)
  step_fn = linear_probe.make_train_step(model, tx, params)
  new_params, new_stats, opt_state = params, stats, tx.init(params)
  losses = []
  for step in range(3):
    new_params, new_stats, opt_state, metrics = step_fn(
      new_params, new_stats, opt_state, batch, jax.random.key(0), jnp.asarray(step)
    )
    losses.append(float(metrics['loss']))
  assert _bytes(new_params['backbone']) == _bytes(params['backbone'])
  assert _bytes(new_stats) == _bytes(stats)
  fc, fc0 = new_params['probe_fc'], params['probe_fc']
  assert not np.allclose(fc['kernel'], fc0['kernel']) and not np.allclose(fc['bias'], fc0['bias'])
  assert losses[-1] < losses[0]


def test_linear_mode_runs_the_backbone_in_inference_mode():
  """Inference-mode BN normalises each clip on its own: replacing clips 2 and 3 leaves the
  logits of clips 0 and 1 bit-identical in linear mode (batch statistics would change them),
  but not in fine_tune_all mode."""
  batch = helpers.batch(n=4, num_classes=3)
  inputs = {k: batch[k] for k in INPUTS}
  other = {k: v.at[2:].set(-3.0 * v[2:]) for k, v in inputs.items()}
  for mode, independent in (('linear', True), ('fine_tune_all', False)):
    model = probe.ProbeModel(backbone=helpers.StubBackbone(), num_classes=3, mode=mode)
    variables = helpers.random_variables(model, inputs)
    probe_logits = jax.jit(
      lambda x, m=model, v=variables: m.apply(v, x, train=True, mutable=['batch_stats'])[0][0]
    )
    a, b = probe_logits(inputs), probe_logits(other)
    assert not np.allclose(a[2:], b[2:])
    assert np.array_equal(a[:2], b[:2]) == independent, mode


def test_fine_tune_all_changes_the_backbone_and_its_statistics():
  model = probe.ProbeModel(backbone=helpers.StubBackbone(), num_classes=3, mode='fine_tune_all')
  batch = helpers.batch(n=4, num_classes=3)
  variables = helpers.random_variables(model, {k: batch[k] for k in INPUTS})
  params, stats = variables['params'], variables['batch_stats']
  recipe = linear_probe.Recipe('fine_tune_all', steps=10, learning_rate=0.5, batch_size=4)
  tx = linear_probe.make_optimizer(params, recipe)
  new_params, new_stats, _, _ = linear_probe.make_train_step(model, tx, params)(
    params, stats, tx.init(params), batch, jax.random.key(0), jnp.asarray(0)
  )
  # Every layer between the input and the pooled features moves (the stub's AVS projections
  # and classification head do not feed the probe, so they get no gradient).
  for layer in ('slow', 'slow_bn', 'fast', 'audio'):
    for new, old in zip(
      jax.tree.leaves(new_params['backbone'][layer]), jax.tree.leaves(params['backbone'][layer])
    ):
      assert not np.array_equal(new, old), layer
  assert all(
    not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new_stats), jax.tree.leaves(stats))
  )


def test_features_mode_stacks_augmented_copies_and_drops_padding():
  model = probe.ProbeModel(backbone=helpers.StubBackbone(), num_classes=3)
  batch = helpers.batch(n=4, num_classes=3)
  variables = helpers.random_variables(model, {k: batch[k] for k in INPUTS})

  def batches_of_copy(k):
    first = helpers.batch(n=4, seed=10 + k, num_classes=3)
    last = dict(helpers.batch(n=4, seed=20 + k, num_classes=3), _mask=np.array([1, 1, 0, 0]))
    return [first, last]

  features, labels = linear_probe.extract_features(model, variables, batches_of_copy, 2)
  assert features.shape == (2 * 6, 6 + 2 + 5) and labels.shape == (12,)
  direct = linear_probe.feature_function(model)(variables, batches_of_copy(1)[1])
  np.testing.assert_allclose(features[10:], direct[:2], rtol=1e-6)
  np.testing.assert_array_equal(labels[6:10], batches_of_copy(1)[0]['label'])


def test_logistic_regression_first_step_by_hand_and_separable_data():
  x = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], np.float32)
  y = np.array([0, 1, 2])
  fit = linear_probe.fit_logistic_regression(
    x, y, 3, steps=1, learning_rate=0.3, l2=0.0, standardise=False
  )
  # From zero weights the softmax is uniform: grad W = X^T (1/3 - Y) / N, grad b = mean(1/3 - Y).
  residual = 1.0 / 3.0 - np.eye(3)[y]
  np.testing.assert_allclose(fit.kernel, -0.3 * x.T @ residual / 3, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(fit.bias, -0.3 * residual.mean(axis=0), atol=1e-7)
  rng = np.random.default_rng(0)
  centres = np.array([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]])
  labels = rng.integers(0, 3, size=90)
  points = centres[labels] + rng.normal(size=(90, 2))
  fit = linear_probe.fit_logistic_regression(points, labels, 3, steps=200)
  assert np.mean(np.argmax(fit.logits(points), axis=-1) == labels) == 1.0
