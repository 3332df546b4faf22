"""The `detection` task on the seam, on a tiny detector: batch spec, the loss (masked box BCE
of the model's own logits; padded slots change neither loss nor gradient), per-box scores,
the evaluator on a hand-computed case, and the export round trip `predict(clip, boxes)`."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from avsf_jax import export, tasks
from avsf_jax.input import ava_pipeline
from avsf_jax.input.prepare import ava_files
from avsf_jax.tasks import detection
from tests import helpers

KEYS = ('v,0902', 'v,0903')
BOX_A, BOX_B, BOX_C = (0.1, 0.1, 0.4, 0.6), (0.5, 0.2, 0.9, 0.9), (0.6, 0.0, 0.7, 0.1)


def _info():
  truth = [
    ava_files.BoxRow('v', 902, BOX_A, 1, person_id=0),
    ava_files.BoxRow('v', 903, BOX_B, 1, person_id=1),
    ava_files.BoxRow('v', 903, BOX_B, 2, person_id=1),
    ava_files.BoxRow('v', 904, BOX_A, 2, person_id=0),  # excluded keyframe
  ]
  return ava_pipeline.AvaDatasetInfo(
    num_train_examples=4,
    num_eval_examples=2,
    num_classes=80,
    class_names=('a', 'b'),
    multi_label=True,
    evaluated_class_ids=(1, 2),
    eval_video_ids=('v',),
    groundtruth=tuple(truth),
    excluded_keys=('v,0904',),
    frame_size=(0, 0),
  )


def _config(pathways=('slow', 'fast')):
  config = helpers.load_config('configs/ava.py:demo')
  config.model.pathways = pathways
  config.model.dropout_rate = 0.0
  config.input.num_frames = 2
  config.input.crop_size = 32
  config.detection.test_size = (32, 48)
  config.detection.max_boxes = 3
  config.audio.num_frames = 16
  config.audio.num_mel_bins = 20
  return config


def test_registered_and_batch_spec():
  task = tasks.create(_config(('slow', 'fast', 'audio')), _info())
  assert isinstance(task, detection.Detection) and tasks.TASKS['detection'] is detection.Detection
  spec = {k: v.shape for k, v in task.input_spec(train=False).items()}
  assert spec == {
    'slow': (2, 32, 48, 3),
    'fast': (4, 32, 48, 3),
    'audio': (16, 20, 1),
    'boxes': (3, 4),
  }
  assert task.input_spec(train=True)['slow'].shape == (2, 32, 32, 3)
  bad = _config()
  bad.model.num_classes = 60
  with pytest.raises(ValueError, match='num_classes=60'):
    tasks.create(bad, _info())


class _BoxModel(nn.Module):
  """A stand-in with the detector's interface (inputs with 'boxes', BN, dropout, aux), so the
  task's loss is tested without compiling a backbone; the real detector runs below."""

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    clip = nn.BatchNorm(use_running_average=not train, name='bn')(inputs['slow'].mean((1, 2, 3)))
    clip = jnp.broadcast_to(clip[:, None], (*inputs['boxes'].shape[:2], 3))
    features = jnp.concatenate([inputs['boxes'] / 32.0, clip], axis=-1)
    features = nn.Dropout(0.5, deterministic=not train)(features)
    return nn.Dense(80, name='head')(features), {'drop_pathway_keep': jnp.ones(())}


def _batch(rng):
  k = jax.random.split(rng, 3)
  return {
    'slow': jax.random.normal(k[0], (2, 2, 32, 32, 3)),
    'fast': jax.random.normal(k[1], (2, 4, 32, 32, 3)),
    'boxes': jnp.array([[[2.0, 3, 20, 30], [10, 0, 31, 16], [0, 0, 0, 0]]] * 2),
    'box_mask': jnp.array([[True, True, False], [True, False, False]]),
    'box_labels': (jax.random.uniform(k[2], (2, 3, 80)) < 0.1).astype(jnp.float32),
  }


@pytest.mark.slow
def test_loss_is_the_masked_bce_of_the_models_logits_and_ignores_padding():
  task = tasks.create(_config(), _info())
  model = _BoxModel()
  batch = _batch(jax.random.key(1))
  variables = model.init(jax.random.key(0), task.model_inputs(batch), train=False)
  rng = jax.random.key(2)

  @jax.jit
  def loss(params, batch):
    return jax.value_and_grad(task.loss, argnums=1, has_aux=True)(
      model, params, variables['batch_stats'], batch, rng, 0
    )

  (value, (stats, metrics)), grads = loss(variables['params'], batch)
  dropout_rng = jax.random.split(rng)[0]
  (logits, _), _ = model.apply(
    variables,
    task.model_inputs(batch),
    train=True,
    mutable=['batch_stats'],
    rngs={'dropout': dropout_rng},
  )
  per = np.asarray(optax.sigmoid_binary_cross_entropy(logits, batch['box_labels']))
  mask = np.asarray(batch['box_mask'])
  assert float(value) == pytest.approx(per[mask].mean(), rel=1e-5)
  assert float(metrics['boxes_per_clip']) == 1.5
  # Training-mode BN: the running mean moved towards the batch mean.
  assert not np.allclose(stats['bn']['mean'], variables['batch_stats']['bn']['mean'])
  moved = {**batch, 'boxes': batch['boxes'].at[:, 2].set(jnp.array([5.0, 5, 25, 25]))}
  moved['box_labels'] = batch['box_labels'].at[:, 2].set(1.0)
  (value2, _), grads2 = loss(variables['params'], moved)
  assert float(value2) == float(value)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads2)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_rbg_init_draws_the_same_distributions_reproducibly():
  """`detection.init_rng_impl='rbg'` (the demo's: faster to compile) gives the default init's
  tree, the same per-tensor distributions (the head's LeCun-normal kernel, std sqrt(1/7)),
  and the same values for the same key; an unknown value is an error naming the field."""
  model = _BoxModel()
  draws = {}
  for impl in ('default', 'rbg'):
    config = _config()
    config.detection.init_rng_impl = impl
    task = tasks.create(config, _info())
    draws[impl] = task.init_variables(model, jax.random.key(3))
    again = task.init_variables(model, jax.random.key(3))
    for a, b in zip(jax.tree.leaves(draws[impl]), jax.tree.leaves(again)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    kernel = np.asarray(draws[impl]['params']['head']['kernel'])
    assert kernel.shape == (7, 80)
    assert abs(kernel.std() / np.sqrt(1 / 7) - 1) < 0.15 and abs(kernel.mean()) < 0.05
  default, rbg = draws['default'], draws['rbg']
  assert jax.tree.structure(default) == jax.tree.structure(rbg)
  assert not np.array_equal(default['params']['head']['kernel'], rbg['params']['head']['kernel'])
  config = _config()
  config.detection.init_rng_impl = 'philox'
  with pytest.raises(ValueError, match="detection.init_rng_impl='philox'"):
    tasks.create(config, _info()).init_variables(model, jax.random.key(3))


def _random_variables(task, model):
  """Variables of the detector's shapes filled from numpy (no init to compile)."""
  abstract = jax.eval_shape(lambda: task.init_variables(model, jax.random.key(0)))
  rng = np.random.default_rng(0)
  params = jax.tree.map(
    lambda s: (0.2 * rng.standard_normal(s.shape)).astype(np.float32), abstract['params']
  )
  stats = jax.tree.map(lambda s: np.ones(s.shape, np.float32), abstract['batch_stats'])
  return {'params': params, 'batch_stats': stats}


@pytest.mark.slow  # compiles the tiny detector's forward three times (export included)
def test_predict_scores_and_export_round_trip(tmp_path):
  """Per-box sigmoid scores (N, M, 80) from `predict`; the export `predict(clip, boxes,
  audio)` reproduces the jitted export function bit for bit."""
  config = _config(('slow', 'fast', 'audio'))
  task = tasks.create(config, _info())
  model = task.build_model()
  variables = _random_variables(task, model)
  spec = task.input_spec(train=False)
  inputs = {
    k: jax.random.normal(jax.random.key(i), (2, *v.shape)) for i, (k, v) in enumerate(spec.items())
  }
  inputs['boxes'] = jnp.array([[[2.0, 3, 20, 30], [10, 0, 47, 31], [0, 0, 5, 5]]] * 2)
  ours = jax.jit(task.export_function(model))(variables, inputs)
  assert ours.shape == (2, 3, 80)
  logits, _ = jax.jit(lambda v, b: model.apply(v, b, train=False))(variables, inputs)
  np.testing.assert_allclose(ours, 1.0 / (1.0 + np.exp(-np.asarray(logits))), rtol=1e-5)
  scores = jax.jit(lambda v, b: task.predict(model, v, b))(variables, inputs)['scores']
  np.testing.assert_allclose(scores, ours, rtol=1e-6)
  path = export.write(
    tmp_path / 'export',
    apply_fn=task.export_function(model),
    variables=variables,
    model_config=config.model.to_dict(),
    class_names=['a', 'b'],
    input_spec={k: list(v.shape) for k, v in spec.items()},
    preprocessing={},
  )
  loaded = export.load(path)
  assert set(loaded.input_spec) == {'slow', 'fast', 'audio', 'boxes'}
  np.testing.assert_array_equal(np.asarray(loaded.predict(inputs)), np.asarray(ours))
  # The evaluator's view of the export: the batch's extra keys are ignored.
  predicted = task.export_predict(loaded)(None, {**inputs, 'box_mask': np.ones((2, 3), bool)})
  np.testing.assert_array_equal(predicted['scores'], np.asarray(ours))


def _eval_batch(scores):
  boxes = np.array([[BOX_A, BOX_C, BOX_B], [BOX_B, BOX_A, BOX_A]], np.float32)
  return {
    'ori_boxes': boxes,
    'box_mask': np.array([[True, True, False], [True, False, False]]),
    'video_index': np.array([0, 0], np.int32),
    'timestamp': np.array([902, 903], np.int32),
    '_mask': np.array([1.0, 1.0], np.float32),
    'scores': scores,
  }


def test_evaluate_frame_map_by_hand():
  """Class 1: A 0.9 (TP), C 0.8 (FP), B 0.7 (TP): AP = 0.5 * 1 + 0.5 * 2/3. Class 2: B 0.3
  (TP) ranks above C 0.2 and A 0.1 (FPs): AP = 1. Padded slots score 1 and must not count."""
  scores = np.ones((2, 3, 80), np.float32)
  scores[0, 0, :2] = 0.9, 0.1
  scores[0, 1, :2] = 0.8, 0.2
  scores[1, 0, :2] = 0.7, 0.3
  task = tasks.create(_config(), _info())
  batch = _eval_batch(scores)
  results, outputs = task.evaluate(lambda v, b: {'scores': b['scores']}, None, [batch])
  assert results['per_class_ap'] == pytest.approx([0.5 + 0.5 * 2 / 3, 1.0], abs=1e-12)
  assert results['frame_map'] == pytest.approx((0.5 + 0.5 * 2 / 3 + 1.0) / 2, abs=1e-12)
  assert results['num_groundtruth'] == [2, 1]  # the excluded keyframe's GT does not count
  assert results['num_keyframes'] == 2 and results['num_boxes'] == 3
  assert outputs['keys'].tolist() == list(KEYS)
  excluded = dict(batch, timestamp=np.array([902, 904], np.int32))
  with pytest.raises(ValueError, match='excluded keyframes reached the evaluator'):
    task.evaluate(lambda v, b: {'scores': b['scores']}, None, [excluded])
