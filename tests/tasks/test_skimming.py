"""The skimming recipe (spec §3.3): batches, loss, parameter groups and their learning rates."""

import functools

import jax
import numpy as np
import optax
import pytest

from avsf_jax.models import skimming as skimming_model
from avsf_jax.tasks import skimming


def _video(n, offset=0.0, d_i=3, d_a=2):
  rows = np.arange(n, dtype=np.float32)[:, None] + offset
  return rows + np.zeros((1, d_i), np.float32), -rows + np.zeros((1, d_a), np.float32)


def test_random_max_len_is_uniform_over_200_to_500_inclusive():
  rng = np.random.default_rng(0)
  draws = np.array([skimming.random_max_len(rng) for _ in range(20000)])
  assert draws.min() == 200 and draws.max() == 500
  assert abs(draws.mean() - 350) < 2


def test_training_batch_crops_a_contiguous_window_and_repeats_short_videos():
  rng = np.random.default_rng(1)
  batch = skimming.make_batch(
    [_video(30), _video(3, 100.0)], [4, 7], num_steps=5, max_len=10, rng=rng, buckets=(8, 16)
  )
  assert batch['image'].shape == (2, 16, 3) and batch['audio'].shape == (2, 16, 2)
  start = batch['offset'][0]
  assert 0 <= start <= 20
  np.testing.assert_array_equal(batch['image'][0, :10, 0], np.arange(start, start + 10))
  np.testing.assert_array_equal(batch['audio'][0, :10, 0], -np.arange(start, start + 10))
  np.testing.assert_array_equal(batch['mask'][0], [1] * 10 + [0] * 6)
  # 3 pairs, T = 5: the last pair is repeated and the mask covers max(T, length) = 5.
  np.testing.assert_array_equal(batch['image'][1, :6, 0], [100, 101, 102, 102, 102, 0])
  np.testing.assert_array_equal(batch['mask'][1], [1] * 5 + [0] * 11)
  np.testing.assert_array_equal(batch['length'], [10, 5])
  np.testing.assert_array_equal(batch['label'], [4, 7])


def test_crop_windows_cover_every_start():
  rng = np.random.default_rng(2)
  starts = {
    int(skimming.make_batch([_video(13)], [0], num_steps=2, max_len=10, rng=rng)['offset'][0])
    for _ in range(200)
  }
  assert starts == {0, 1, 2, 3}


def test_validation_batch_uses_the_longest_video():
  batch = skimming.make_batch([_video(12), _video(7)], [0, 1], num_steps=4)
  assert batch['image'].shape[1] == 12
  np.testing.assert_array_equal(batch['mask'].sum(1), [12, 7])
  np.testing.assert_array_equal(batch['image'][0, :, 0], np.arange(12))


def test_bucket_length_and_errors():
  assert skimming.bucket_length(17, (16, 32, 64)) == 32
  assert skimming.bucket_length(16, (16, 32)) == 16
  assert skimming.bucket_length(17, None) == 17
  with pytest.raises(ValueError, match='largest bucket 32'):
    skimming.bucket_length(33, (16, 32))
  with pytest.raises(ValueError, match='video 0'):
    skimming.make_batch([(np.zeros((3, 2)), np.zeros((4, 2)))], [0], num_steps=2)


def test_loss_is_the_summary_cross_entropy_plus_an_optional_last_step_term():
  rng = np.random.default_rng(3)
  logits = rng.standard_normal((4, 5)).astype(np.float32)
  steps = rng.standard_normal((4, 3, 5)).astype(np.float32)
  labels = np.array([0, 4, 2, 2])

  def ce(z):
    z = z - z.max(-1, keepdims=True)
    return np.mean(np.log(np.exp(z).sum(-1)) - z[np.arange(4), labels])

  loss, metrics = skimming.skimming_loss(logits, steps, labels)
  np.testing.assert_allclose(loss, ce(logits), rtol=1e-6)
  loss2, _ = skimming.skimming_loss(logits, steps, labels, last_step_weight=1.0)
  np.testing.assert_allclose(loss2, ce(logits) + ce(steps[:, -1]), rtol=1e-6)
  np.testing.assert_allclose(metrics['summary_top1'], np.mean(logits.argmax(-1) == labels))
  # Baselines without step predictions: the summary term alone.
  loss3, metrics3 = skimming.skimming_loss(logits, None, labels)
  np.testing.assert_allclose(loss3, ce(logits), rtol=1e-6)
  assert 'last_step_ce' not in metrics3
  with pytest.raises(ValueError, match='needs step_logits'):
    skimming.skimming_loss(logits, None, labels, last_step_weight=1.0)


def test_optimizer_groups_get_lr_x1_x0_1_and_zero():
  """First Nesterov step: -lr·factor·(1 + momentum)·(g + wd·p); after epoch 15 the lr is x0.1."""
  params = {
    'fusion': {'fc1': {'kernel': np.ones((2, 2), np.float32)}},
    'classifier': {'kernel': np.ones((2, 3), np.float32), 'bias': np.zeros(3, np.float32)},
    'lstm': {'ih_v': np.ones((2, 4), np.float32)},
    'image_key_bn': {'scale': np.ones(2, np.float32)},
  }
  groups = skimming.param_groups(params)
  assert groups['fusion']['fc1']['kernel'] == 'fusion'
  assert groups['classifier']['bias'] == 'classifier'
  assert groups['lstm']['ih_v'] == groups['image_key_bn']['scale'] == 'default'
  opt = skimming.make_optimizer(steps_per_epoch=2)
  grads = {k: {n: np.full_like(v, 0.5) for n, v in g.items()} for k, g in params.items()}
  grads['fusion'] = {'fc1': {'kernel': np.full((2, 2), 0.5, np.float32)}}
  state = opt.init(params)
  updates, state = opt.update(grads, state, params)
  expect = lambda lr, p: -lr * 1.9 * (0.5 + 1e-4 * p)
  np.testing.assert_allclose(updates['lstm']['ih_v'], expect(0.01, 1.0), rtol=1e-6)
  np.testing.assert_allclose(updates['image_key_bn']['scale'], expect(0.01, 1.0), rtol=1e-6)
  np.testing.assert_allclose(updates['classifier']['kernel'], expect(0.001, 1.0), rtol=1e-6)
  np.testing.assert_allclose(updates['classifier']['bias'], expect(0.001, 0.0), rtol=1e-6)
  np.testing.assert_array_equal(updates['fusion']['fc1']['kernel'], 0.0)


def test_schedule_is_x0_1_at_epochs_15_and_20():
  schedule = skimming.learning_rate_schedule(0.01, steps_per_epoch=10)
  np.testing.assert_allclose(
    [schedule(0), schedule(149), schedule(150), schedule(199), schedule(200), schedule(249)],
    [0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001],
    rtol=1e-6,
  )
  assert isinstance(skimming.make_optimizer(steps_per_epoch=1), optax.GradientTransformation)


def _tiny_model_and_batch():
  model = skimming_model.Skimming(
    num_classes=3, num_steps=2, hidden=8, key_dim=4, fusion_hidden=6, feature_dim=5
  )
  rng = np.random.default_rng(4)
  videos = [
    (rng.standard_normal((n, 3)).astype(np.float32), rng.standard_normal((n, 2)).astype(np.float32))
    for n in (4, 6)
  ]
  batch = skimming.make_batch(videos, [0, 2], num_steps=2)
  # Initialising needs no 'start' RNG (the start position only matters once trained); shapes
  # come from an abstract init, values from numpy (a real init compiles every RNG draw).
  inputs = {k: batch[k] for k in skimming.MODEL_INPUTS}
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), inputs)
  variables = jax.tree.map(
    lambda x: (0.5 * rng.standard_normal(x.shape) + (x.ndim == 1)).astype(np.float32), shapes
  )
  return model, variables, batch


@pytest.mark.slow
def test_seam_loss_updates_batch_stats_and_is_the_summary_cross_entropy():
  model, variables, batch = _tiny_model_and_batch()
  value, (stats, metrics) = skimming.loss(
    model, variables['params'], variables['batch_stats'], batch, jax.random.key(1), 3
  )
  logits, aux = model.apply(
    variables,
    {k: batch[k] for k in skimming.MODEL_INPUTS},
    train=True,
    rngs={'start': jax.random.fold_in(jax.random.key(1), 3)},
    mutable=['batch_stats'],
  )[0]
  expect, _ = skimming.skimming_loss(logits, aux['step_logits'], batch['label'])
  np.testing.assert_allclose(value, expect, rtol=1e-6)
  assert not np.allclose(
    stats['image_key_bn']['mean'], variables['batch_stats']['image_key_bn']['mean']
  )
  assert float(metrics['loss']) == float(value)


def test_predict_and_video_results():
  model, variables, batch = _tiny_model_and_batch()
  out = skimming.predict(model, variables, batch)
  assert out['running_logits'].shape == (2, 2, 3) and out['indices'].shape == (2, 2)
  np.testing.assert_allclose(out['running_logits'][:, -1], out['logits'], atol=1e-6)
  again = skimming.predict(model, variables, batch)
  np.testing.assert_array_equal(out['indices'], again['indices'])  # a fixed start key
  results = skimming.video_results(out, batch['label'], 3)
  top1 = 100 * np.mean(np.argmax(out['logits'], -1) == batch['label'])
  assert results['avgpool_top1'] == top1 == results['early_stop_2_top1']
  assert set(results) >= {'avgpool_mAP', 'lstm_top1', 'lstm_mAP', 'early_stop_1_top1'}


def test_evaluation_with_sparse_indexing_uses_the_rebuilt_banks():
  import ml_collections  # noqa: PLC0415

  model, variables, batch = _tiny_model_and_batch()
  dense = skimming.sparse_batch(batch, ml_collections.ConfigDict({'eval_subsample': 1}))
  assert dense is batch
  skim = ml_collections.ConfigDict({'eval_subsample': 2, 'interpolation': 'exact_grid'})
  sparse = skimming.sparse_batch(batch, skim)
  # exact_grid, s = 2, on video 0 (4 pairs padded to 6): the even rows stay, an odd row is
  # the mean of its neighbours, the last sample is held, and the mask zeroes the padding.
  r = batch['image'][0]
  expect = np.stack([r[0], (r[0] + r[2]) / 2, r[2], (r[2] + r[4]) / 2, r[4], r[4]])
  expect *= batch['mask'][0][:, None]
  np.testing.assert_allclose(sparse['image'][0], expect, atol=1e-6)
  np.testing.assert_array_equal(sparse['label'], batch['label'])
  out = skimming.predict(model, variables, sparse)
  assert not np.allclose(out['logits'], skimming.predict(model, variables, batch)['logits'])
