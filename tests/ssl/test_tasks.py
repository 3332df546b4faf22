"""The pretraining and linear-probe tasks on the seam, through the real loop's step, and the
pretraining export read back by `init_from` (tiny stub backbones: no AVSlowFast compile)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from avsf_jax import export, tasks, train
from avsf_jax.input import info as info_lib
from avsf_jax.models import probe, rotation_head, weights
from avsf_jax.tasks import linear_probe, pretraining
from tests import helpers
from tests.ssl import helpers as ssl_helpers

INFO = info_lib.DatasetInfo(
  num_train_examples=480,
  num_eval_examples=120,
  num_classes=4,
  class_names=tuple('abcd'),
  multi_label=False,
)


class StubPretraining(pretraining.Pretraining):
  def build_model(self):
    return rotation_head.PretextModel(
      backbone=ssl_helpers.StubBackbone(), rotation=self.section()['rotation']
    )


class StubProbe(linear_probe.LinearProbe):
  def build_model(self):
    return probe.ProbeModel(
      backbone=ssl_helpers.StubBackbone(), num_classes=4, mode=self.section()['mode']
    )


def _config(variant: str):
  config = helpers.load_config(f'configs/self_supervised.py:{variant}')
  config.model.num_classes = 4
  return config


def _inputs(batch):
  return {k: batch[k] for k in ('slow', 'fast', 'audio')}


def _bytes(tree):
  return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def test_tasks_are_registered_and_their_sections_checked():
  assert tasks.TASKS['pretraining'] is pretraining.Pretraining
  assert tasks.TASKS['linear_probe'] is linear_probe.LinearProbe
  config = _config('demo_avs_rot')
  config.pretraining = {'rotaton': False}
  with pytest.raises(ValueError, match=r'config.pretraining has unknown fields \[.rotaton.\]'):
    pretraining.pretraining_section(config)
  config.pretraining = {'avs_on': 'upright'}
  with pytest.raises(ValueError, match="config.pretraining.avs_on='upright'"):
    pretraining.pretraining_section(config)
  config.pretraining = {'avs_on': 'upright_copy', 'rotation': False}
  with pytest.raises(ValueError, match='avs_on="upright_copy" needs the ROT head'):
    pretraining.pretraining_section(config)
  config = _config('demo_probe')
  config.probe = {'mode': 'frozen'}
  with pytest.raises(ValueError, match='config.probe.mode'):
    linear_probe.probe_section(config)


def test_pretraining_settings_follow_the_curriculum_and_the_config():
  config = _config('demo_avs_rot')
  task = pretraining.Pretraining(config, INFO)
  settings = task.settings()
  # Epochs of 480 clips at batch 16 (30 steps each); hard negatives from half the steps.
  steps = config.optim.num_epochs * 30
  assert steps == int(steps) and settings.hard_from_step == round(steps / 2)
  assert settings.negative_group == 16 // jax.device_count()
  # The demo weighs ROT 0.1 (configs/self_supervised.py: DEMO_ROTATION_WEIGHT); AVS 1.
  assert (settings.avs_hard_fraction, settings.rotation_weight, settings.avs_weight) == (
    0.25,
    0.1,
    1.0,
  )
  assert config.optim.base_lr == 0.3
  # The demo's ROT + AVS reads AVS upright (DEMO_AVS_ON); the full-scale configs keep 'all'.
  assert settings.avs_on == 'upright_copy'
  assert pretraining.Pretraining(_config('demo_avs'), INFO).settings().avs_on == 'all'
  assert pretraining.pretraining_section(_config('pretrain_avs_rot'))['avs_on'] == 'all'
  assert pretraining.Pretraining(_config('demo_avs'), INFO).settings().rotation_weight == 1.0
  spec = task.input_spec(train=True)
  assert spec['slow'].shape == (4, 32, 32, 3) and spec['fast'].shape == (8, 32, 32, 3)
  assert spec['audio'].shape == (32, 40, 1)
  rot = pretraining.Pretraining(_config('demo_rot'), INFO)
  assert sorted(rot.input_spec(train=False)) == ['fast', 'slow']


def test_pretraining_loss_evaluate_and_export_function():
  config = _config('demo_avs_rot')
  task = StubPretraining(config, INFO)
  model = task.build_model()
  batch = ssl_helpers.batch(n=4)
  variables = ssl_helpers.random_variables(model, _inputs(batch))
  loss, (stats, metrics) = jax.jit(task.loss, static_argnums=0)(
    model, variables['params'], variables['batch_stats'], batch, jax.random.key(0), 3
  )
  assert np.isfinite(float(loss)) and set(metrics) >= {'rotation_loss', 'avs_loss', 'loss'}
  assert float(metrics['loss']) == float(loss)
  assert jax.tree.structure(stats) == jax.tree.structure(variables['batch_stats'])
  # The ROT head needs the rotation op's label, and says so.
  no_rotation = {k: v for k, v in batch.items() if k != 'rotation'}
  with pytest.raises(KeyError, match='sync_data.rotation'):
    task.loss(model, variables['params'], variables['batch_stats'], no_rotation, None, 0)

  # The evaluator concatenates the batches and drops padding (`valid`).
  def predict(variables, batch):
    del variables
    return batch

  def prediction(rotation_logits, d_positive, d_hard, d_easy, valid):
    n = len(valid)
    return {
      'rotation_logits': np.asarray(rotation_logits, np.float32),
      'rotation': np.zeros(n, np.int32),
      'd_positive': np.asarray(d_positive),
      'd_hard': np.asarray(d_hard),
      'd_easy': np.asarray(d_easy),
      'valid': np.asarray(valid, np.float32),
      'hard_valid': np.asarray(valid, np.float32),
      'easy_valid': np.asarray(valid, np.float32),
    }

  hit, miss = [1, 0, 0, 0], [0, 1, 0, 0]
  batches = [
    prediction([hit, miss], [0.1, 0.5], [0.2, 0.4], [0.3, 0.9], [1, 1]),
    prediction([hit, miss], [0.1, 0.1], [0.9, 0.0], [0.0, 0.9], [1, 0]),
  ]
  results, outputs = task.evaluate(predict, None, batches)
  # Valid clips: 1 (hit, hard ok, easy ok), 2 (miss, hard no, easy ok), 3 (hit, ok, no).
  assert results == {
    'rotation_accuracy': pytest.approx(2 / 3),
    'sync_hard_accuracy': pytest.approx(2 / 3),
    'sync_easy_accuracy': pytest.approx(2 / 3),
    'num_clips': 3,
  }
  assert outputs['d_positive'].shape == (4,)
  out = task.export_function(model)(variables, _inputs(batch))
  assert out['rotation_logits'].shape == (4, 4) and out['features'].shape == (4, 6 + 2 + 5)


def _probe_state(task, model, batch):
  variables = ssl_helpers.random_variables(model, _inputs(batch))
  tx = train._freeze_untrainable(optax.sgd(0.1, momentum=0.9), task)
  state = train.TrainState(
    step=jnp.zeros((), jnp.int32),
    params=variables['params'],
    batch_stats=variables['batch_stats'],
    opt_state=tx.init(variables['params']),
  )
  step = jax.jit(
    lambda s, b, r: train.train_step(s, b, r, task=task, model=model, tx=tx, schedule=lambda _: 0.1)
  )
  return state, step


@pytest.mark.parametrize('mode', ['linear', 'fine_tune_all'])
def test_probe_through_the_loops_step(mode):
  """Linear: three steps of the loop's `train_step` leave every backbone parameter and BN
  statistic bit-identical and move the FC; fine_tune_all: the backbone moves too."""
  config = _config('demo_probe')
  config.probe = {'mode': mode}
  task = StubProbe(config, INFO)
  model = task.build_model()
  batch = ssl_helpers.batch(n=4, num_classes=4)
  state, step = _probe_state(task, model, batch)
  start = jax.device_get(state)
  backbone_before = _bytes(start.params['backbone']), _bytes(start.batch_stats)
  losses = []
  for _ in range(3):
    state, metrics = step(state, batch, jax.random.key(0))
    losses.append(float(metrics['loss']))
  end = jax.device_get(state)
  assert losses[-1] < losses[0]
  fc_moved = _bytes(end.params['probe_fc']) != _bytes(start.params['probe_fc'])
  assert fc_moved
  backbone_after = _bytes(end.params['backbone']), _bytes(end.batch_stats)
  if mode == 'linear':
    assert backbone_after == backbone_before
    assert task.statistics_model(model) is None  # no precise BN on a frozen backbone
  else:
    assert backbone_after[0] != backbone_before[0] and backbone_after[1] != backbone_before[1]
    assert task.trainable(end.params) is None


def test_probe_predict_scores_every_view():
  task = StubProbe(_config('demo_probe'), INFO)
  model = task.build_model()
  batch = ssl_helpers.batch(n=2, num_classes=4)
  variables = ssl_helpers.random_variables(model, _inputs(batch))
  views = {k: jnp.stack([batch[k], batch[k][::-1]], axis=1) for k in ('slow', 'fast', 'audio')}
  out = task.predict(model, variables, views)['label']
  direct, _ = model.apply(variables, _inputs(batch), train=False)
  assert out.shape == (2, 2, 4)
  np.testing.assert_allclose(out[:, 0], direct, rtol=1e-5)
  np.testing.assert_allclose(out[:, 1], direct[::-1], rtol=1e-5)


def test_pretraining_export_initialises_a_classifier_and_a_probe(tmp_path):
  """The export of a `PretextModel` (backbone under 'backbone', plus the ROT head) loads into
  a classifier (no wrapper) and into a `ProbeModel` (same wrapper); the heads stay fresh."""
  task = StubPretraining(_config('demo_avs_rot'), INFO)
  model = task.build_model()
  batch = ssl_helpers.batch(n=2)
  variables = ssl_helpers.random_variables(model, _inputs(batch), seed=1)
  path = export.write(
    tmp_path / 'ssl_export',
    apply_fn=task.export_function(model),
    variables=variables,
    model_config={},
    class_names=[],
    input_spec={k: list(v.shape[1:]) for k, v in _inputs(batch).items()},
    preprocessing={},
  )
  exported = export.load(path).variables
  classifier = ssl_helpers.StubBackbone()
  fresh = ssl_helpers.random_variables(classifier, _inputs(batch), seed=2)
  merged, report = weights.merge(fresh, exported)
  flat_backbone = jax.tree.leaves(variables['params']['backbone'])
  assert report.loaded == len(flat_backbone) + len(jax.tree.leaves(variables['batch_stats']))
  np.testing.assert_array_equal(
    merged['params']['slow']['kernel'], variables['params']['backbone']['slow']['kernel']
  )
  assert report.unused_from_export == [
    'params/rotation_head/fc/bias',
    'params/rotation_head/fc/kernel',
  ]
  probe_model = probe.ProbeModel(backbone=ssl_helpers.StubBackbone(), num_classes=3)
  fresh_probe = ssl_helpers.random_variables(probe_model, _inputs(batch), seed=3)
  merged, report = weights.merge(fresh_probe, exported)
  assert report.not_in_export == ['params/probe_fc/bias', 'params/probe_fc/kernel']
  assert _bytes(merged['batch_stats']) == _bytes(variables['batch_stats'])
  # And a classifier's export (no wrapper) loads into the probe's backbone.
  merged, report = weights.merge(fresh_probe, fresh)
  assert report.loaded == len(jax.tree.leaves(fresh))
  assert _bytes(merged['params']['backbone']) == _bytes(fresh['params'])


def test_config_variants_follow_the_recipes():
  """Spec 2 (pretraining) and spec 3 (probe, fine-tuning) in `configs/self_supervised.py`."""
  config = helpers.load_config('configs/self_supervised.py:pretrain_avs_rot')
  assert (config.task, config.pretraining.rotation, config.input.batch_size) == (
    'pretraining',
    True,
    1024,
  )
  epochs = config.optim.num_epochs
  # 120k iterations at batch 1024; warm-up 10k; x0.1 at 80k, 100k, 110k; LR 1.6 from 0.001.
  steps_per_epoch = 240_436 / 1024
  assert epochs * steps_per_epoch == pytest.approx(120_000)
  assert config.optim.warmup_epochs * steps_per_epoch == pytest.approx(10_000)
  assert [e * steps_per_epoch for e in config.optim.decay_epochs] == pytest.approx(
    [80_000, 100_000, 110_000]
  )
  assert config.optim.base_lr * config.optim.warmup_start_factor == pytest.approx(0.001)
  assert (config.model.drop_pathway_rate, config.model.bn_group_size) == (0.8, 8)
  assert helpers.load_config('configs/self_supervised.py:pretrain_rot').model.pathways == (
    'slow',
    'fast',
  )
  assert not helpers.load_config('configs/self_supervised.py:pretrain_avs').pretraining.rotation
  probe_config = helpers.load_config('configs/self_supervised.py:probe_hmdb51:3')
  assert (probe_config.task, probe_config.model.num_classes) == ('linear_probe', 51)
  assert probe_config.input.dataset == 'hmdb51/split3'
  assert (probe_config.optim.base_lr, probe_config.input.batch_size) == (0.01, 64)
  assert probe_config.optim.num_epochs * 3_570 / 64 == pytest.approx(320_000)
  assert probe_config.optim.weight_decay == 0.0
  fine = helpers.load_config('configs/self_supervised.py:finetune_ucf101')
  assert (fine.task, fine.optim.base_lr, fine.input.batch_size) == ('classification', 0.005, 16)
  assert fine.optim.num_epochs * 9_537 / 16 == pytest.approx(80_000)
  with pytest.raises(ValueError, match='splits are 1, 2, 3'):
    helpers.load_config('configs/self_supervised.py:probe_ucf101:4')
  with pytest.raises(ValueError, match='unknown variant'):
    helpers.load_config('configs/self_supervised.py:pretrain')
