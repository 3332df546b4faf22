"""Listen to Look's tasks on the shared loop: distillation, clip fine-tuning and skimming.

Tiny shapes throughout (16x16 frames, 4-frame teacher clips, 12x8 log-mels, widths <= 8); one
real `train.train_step` per task, through the loop's own optimizer wrapping.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from avsf_jax import export, tasks, train
from avsf_jax.input import info as info_lib
from avsf_jax.models import build, ltl_models
from avsf_jax.tasks import distillation
from tests import helpers

INFO = info_lib.DatasetInfo(
  num_train_examples=8,
  num_eval_examples=4,
  num_classes=8,
  class_names=tuple(f'c{i}' for i in range(8)),
  multi_label=False,
)


def _clip_config(variant):
  config = helpers.load_config(f'configs/listen_to_look.py:{variant}')
  config.input.crop_size = config.input.test_crop_size = 16
  config.input.num_frames = 4
  config.audio.num_frames, config.audio.num_mel_bins = 12, 8
  # The teacher: a tiny R(2+1)D (D = 8) here; the demo's SlowFast teacher (`slowfast_clip`)
  # is tested in tests/models/test_slowfast_clip.py and run by `make demo-ltl`.
  tiny_teacher = {
    'name': 'r2plus1d',
    'num_classes': 8,
    'widths': (4, 4, 4, 8),
    'stem_mid': 4,
    'dtype': 'float32',
  }
  if config.model.name == 'imgaud':
    config.model.widths = (4, 4, 4, 8)
    config.model.embed_dim = 8
    config.model.fusion_hidden = 8
  else:
    config.model = ml_collections.ConfigDict(tiny_teacher)
  config.distill.teacher = ml_collections.ConfigDict(tiny_teacher)
  return config


def _clip_batch(n=4, seed=0):
  rng = np.random.default_rng(seed)
  return {
    'image': rng.standard_normal((n, 16, 16, 3)).astype(np.float32),
    'audio': rng.standard_normal((n, 12, 8, 1)).astype(np.float32),
    'video': rng.standard_normal((n, 4, 16, 16, 3)).astype(np.float32),
    'label': np.arange(n, dtype=np.int32) % 8,
  }


def _state(task, model, tx, rng=0):
  variables = jax.jit(functools.partial(task.init_variables, model))(jax.random.key(rng))
  return train.TrainState(
    step=jnp.zeros((), jnp.int32),
    params=variables['params'],
    batch_stats=variables['batch_stats'],
    opt_state=tx.init(variables['params']),
  )


def _step(task, model, state, tx, batch):
  step = functools.partial(train.train_step, task=task, model=model, tx=tx, schedule=lambda s: 0.1)
  return jax.jit(step)(state, batch, jax.random.key(1))


@pytest.mark.slow  # ~25 s of CPU: compiles the student's and the teacher's gradients
def test_distillation_step_trains_the_student_only_and_logs_both_terms(tmp_path):
  config = _clip_config('demo_distillation')
  task = tasks.create(config, INFO)
  model = task.build_model()
  # The teacher comes from an export (params at its root, as clip_finetune writes them).
  teacher = ltl_models.build(config.distill.teacher)
  video = jnp.zeros((1, 4, 16, 16, 3))
  teacher_vars = jax.jit(functools.partial(teacher.init, train=False))(
    jax.random.key(5), {'video': video}
  )
  teacher_vars = jax.tree.map(lambda x: x + 0.01, teacher_vars)  # not a fresh init
  path = export.write(
    tmp_path / 'teacher',
    apply_fn=lambda v, x: teacher.apply(v, x, train=False)[0],
    variables=teacher_vars,
    model_config=config.distill.teacher.to_dict(),
    class_names=list(INFO.class_names),
    input_spec={'video': [4, 16, 16, 3]},
    preprocessing={},
    platforms=('cpu',),
  )
  config.distill.teacher_export = str(path)
  task = tasks.create(config, INFO)
  tx = train._freeze_untrainable(optax.sgd(0.1, momentum=0.9), task)
  state = _state(task, model, tx)
  for a, b in zip(
    jax.tree.leaves(state.params['teacher']), jax.tree.leaves(teacher_vars['params'])
  ):
    np.testing.assert_array_equal(a, b)
  batch = _clip_batch()
  before = jax.device_get(state)
  new, metrics = _step(task, model, state, tx, batch)
  after = jax.device_get(new)
  # Teacher: parameters and BN statistics bit-identical; student: every stream moved.
  for a, b in zip(
    jax.tree.leaves(before.params['teacher']), jax.tree.leaves(after.params['teacher'])
  ):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(
    jax.tree.leaves(before.batch_stats['teacher']), jax.tree.leaves(after.batch_stats['teacher'])
  ):
    np.testing.assert_array_equal(a, b)
  for name in ('image_stream', 'audio_stream', 'fusion', 'classifier'):
    moved = [
      np.any(a != b)
      for a, b in zip(
        jax.tree.leaves(before.params['student'][name]),
        jax.tree.leaves(after.params['student'][name]),
      )
    ]
    assert any(moved), name
  # The loss is L1 (summed over D) + 100 KL over the batch: a numpy reference from the same
  # train-mode forward pass.
  (logits, aux), _ = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))(
    {'params': before.params, 'batch_stats': before.batch_stats},
    {k: batch[k] for k in ('image', 'audio', 'video')},
  )
  t_logits, t_desc = np.asarray(aux['teacher_logits']), np.asarray(aux['teacher_descriptor'])
  expected_tl, _ = jax.jit(functools.partial(teacher.apply, train=False))(
    teacher_vars, {'video': batch['video']}
  )
  np.testing.assert_allclose(t_logits, expected_tl, rtol=1e-5, atol=1e-6)
  omega = np.exp(t_logits - t_logits.max(1, keepdims=True))
  omega /= omega.sum(1, keepdims=True)
  log_phi = np.asarray(jax.nn.log_softmax(logits))
  kl = float(np.mean(-(omega * log_phi).sum(1)))
  l1 = float(np.mean(np.abs(t_desc - np.asarray(aux['fused'])).sum(1)))
  np.testing.assert_allclose(metrics['kl'], kl, rtol=1e-5)
  np.testing.assert_allclose(metrics['l1'], l1, rtol=1e-5)
  np.testing.assert_allclose(metrics['loss'], l1 + 100 * kl, rtol=1e-5)
  assert set(metrics) >= {'l1', 'kl', 'total', 'student_top1', 'teacher_top1'}
  # An export of the run (`python -m avsf_jax.export`) is the student alone: its variables at
  # the root, its logits, the preview preprocessing.
  variables = {'params': after.params, 'batch_stats': after.batch_stats}
  kept = task.export_variables(variables)
  assert 'teacher' not in kept['params'] and 'classifier' in kept['params']
  inputs = {k: batch[k] for k in ('image', 'audio')}
  exported = jax.jit(task.export_function(model))(kept, inputs)
  full, _ = jax.jit(functools.partial(model.apply, train=False))(
    variables, {**inputs, 'video': batch['video']}
  )
  np.testing.assert_allclose(exported, full, rtol=1e-6, atol=1e-6)
  assert set(task.export_input_spec()) == {'image', 'audio'}  # no teacher clip
  pre = task.export_preprocessing()
  assert (pre['image_size'], pre['audio_mean']) == (config.input.crop_size, config.audio.mean)


def test_distillation_rejects_a_teacher_export_of_another_shape():
  config = _clip_config('demo_distillation')
  config.distill.teacher_export = 'EXPORT'
  task = tasks.create(config, INFO)
  model = task.build_model()
  abstract = jax.eval_shape(
    functools.partial(super(type(task), task).init_variables, model), jax.random.key(0)
  )
  wrong = jax.tree.map(lambda x: np.zeros(x.shape + (1,), x.dtype), abstract)
  task.__dict__['teacher_variables'] = {k: wrong[k]['teacher'] for k in ('params', 'batch_stats')}
  with pytest.raises(ValueError, match="teacher_export='EXPORT'.*do not fit"):
    jax.eval_shape(functools.partial(task.init_variables, model), jax.random.key(0))


def test_a_slowfast_classifier_export_fits_a_slowfast_clip_teacher():
  """The variables of a project SlowFast classifier (the root of its export) are the
  `slowfast_clip` teacher's 'net': `wrap_slowfast_export` moves them there and they fit the
  teacher (shapes only: `jax.eval_shape`); unwrapped, they are refused by name."""
  config = _clip_config('demo_distillation')
  backbone = helpers.load_config('configs/listen_to_look.py:demo_teacher').model.backbone
  config.distill.teacher = ml_collections.ConfigDict(
    {'name': 'slowfast_clip', 'num_classes': 8, 'backbone': backbone.to_dict()}
  )
  config.distill.teacher_export = 'EXPORT'
  classifier = build.build_model({**backbone.to_dict(), 'num_classes': 8})
  video = jnp.zeros((1, 4, 16, 16, 3))
  theirs = jax.eval_shape(
    functools.partial(classifier.init, train=False),
    jax.random.key(0),
    {'slow': video[:, ::2], 'fast': video},
  )
  theirs = {
    c: jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), theirs[c])
    for c in ('params', 'batch_stats')
  }

  task = tasks.create(config, INFO)
  model = task.build_model()
  task.__dict__['teacher_variables'] = distillation.wrap_slowfast_export(
    config.distill.teacher, theirs
  )
  got = jax.eval_shape(functools.partial(task.init_variables, model), jax.random.key(1))
  for collection in ('params', 'batch_stats'):
    assert jax.tree.map(np.shape, got[collection]['teacher']['net']) == jax.tree.map(
      np.shape, theirs[collection]
    )
  # Already wrapped (the demo's own clip_finetune teacher export): left as it is.
  wrapped = task.__dict__['teacher_variables']
  assert distillation.wrap_slowfast_export(config.distill.teacher, wrapped) is wrapped
  task.__dict__['teacher_variables'] = theirs
  with pytest.raises(ValueError, match="teacher_export='EXPORT'.*do not fit"):
    jax.eval_shape(functools.partial(task.init_variables, model), jax.random.key(1))


def test_distillation_config_errors_name_the_fields():
  config = _clip_config('demo_distillation')
  config.distill.teacher.num_classes = 5
  with pytest.raises(ValueError, match='distill.teacher.num_classes=5'):
    tasks.create(config, INFO)
  config = _clip_config('demo_distillation')
  config.model.widthz = (1,)
  with pytest.raises(ValueError, match="no fields \\['widthz'\\]"):
    tasks.create(config, INFO).build_model()


def test_clip_finetune_inputs_follow_the_model():
  for variant, keys in (
    ('demo_finetune', {'image', 'audio'}),
    ('demo_teacher', {'video'}),
    ('demo_audio_undistilled', {'audio'}),
  ):
    spec = tasks.create(_clip_config(variant), INFO).input_spec(train=True)
    assert set(spec) == keys, variant
  assert spec['audio'].shape == (12, 8, 1)
  # The demo's own teacher, a SlowFast clip model, reads the 16-frame clip too.
  config = helpers.load_config('configs/listen_to_look.py:demo_teacher')
  assert config.model.name == 'slowfast_clip'
  spec = tasks.create(config, INFO).input_spec(train=True)
  assert {k: v.shape for k, v in spec.items()} == {'video': (16, 48, 48, 3)}


@pytest.mark.slow
def test_clip_finetune_loss_is_cross_entropy_and_evaluate_counts_real_clips():
  """One step of the image-only student (the teacher and the two-stream student take the same
  code path: `model_inputs` of their spec, then cross-entropy)."""
  config = _clip_config('demo_image_undistilled')
  task = tasks.create(config, INFO)
  model = task.build_model()
  tx = optax.sgd(0.1)
  state = _state(task, model, tx)
  batch = _clip_batch()
  (logits, _), _ = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))(
    {'params': state.params, 'batch_stats': state.batch_stats}, task.model_inputs(batch)
  )
  logp = np.asarray(jax.nn.log_softmax(logits))
  expected = -np.mean(logp[np.arange(4), batch['label']])
  _, metrics = _step(task, model, state, tx, batch)
  np.testing.assert_allclose(metrics['loss'], expected, rtol=1e-5)

  def predict_fn(variables, b):
    del variables
    return {'logits': b['fake_logits']}

  fake = np.eye(8, dtype=np.float32)[[0, 1, 5, 3]]  # 3 of 4 right ...
  batches = [
    {'fake_logits': fake, 'label': np.arange(4), '_mask': np.ones(4)},
    {'fake_logits': fake, 'label': np.arange(4), '_mask': np.asarray([1, 0, 0, 0])},
  ]
  results, out = task.evaluate(predict_fn, None, batches)
  assert results == {'top1': 80.0, 'clips': 5}  # ... plus 1 real of the padded batch
  assert len(out['label']) == 5


def _skim_config(**skim):
  config = helpers.load_config('configs/listen_to_look.py:demo_skimming')
  config.model.update(hidden=16, key_dim=8, fusion_hidden=8, feature_dim=4, num_steps=3)
  config.skim.update(image_dim=5, audio_dim=3, length=12, min_len=6, max_len=12, **skim)
  return config


def test_skimming_groups_learning_rates_and_freezes_psi():
  config = _skim_config()
  config.optim.weight_decay = 0.0
  task = tasks.create(config, INFO)
  model = task.build_model()
  params = jax.jit(functools.partial(task.init_variables, model))(jax.random.key(0))['params']
  mask = task.trainable(params)
  assert not any(jax.tree.leaves(mask['fusion']))
  assert all(jax.tree.leaves(mask['classifier'])) and all(jax.tree.leaves(mask['lstm']))
  tx = task.optimizer(lambda s: 0.5)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(grads, params)
  # First Nesterov step: -(1 + momentum) * lr * factor * g.
  for group, factor in (('lstm', 1.0), ('classifier', 0.1), ('fusion', 0.0)):
    for u in jax.tree.leaves(updates[group]):
      np.testing.assert_allclose(u, -1.9 * 0.5 * factor, rtol=1e-6)


def _banks(n, seed, length=12):
  rng = np.random.default_rng(seed)
  batch = {
    'image': rng.standard_normal((n, length, 5)).astype(np.float32),
    'audio': rng.standard_normal((n, length, 3)).astype(np.float32),
    'mask': np.ones((n, length), np.float32),
    'label': np.arange(n, dtype=np.int32) % 8,
  }
  batch['mask'][0, 8:] = 0
  return batch


@pytest.mark.slow
def test_skimming_step_keeps_psi_bit_identical_and_copies_the_student():
  config = _skim_config()
  config.skim.student_export = 'STUDENT'
  rng = np.random.default_rng(0)

  def dense(i, o):
    return {
      'kernel': rng.standard_normal((i, o)).astype(np.float32),
      'bias': rng.standard_normal(o).astype(np.float32),
    }

  # The student's Psi reads z^I (5) + z^A (5) -> 8 -> 4, FC_cls 4 -> 8: it does not fit banks of
  # 5 + 3, and the copy refuses it, naming the group; with banks of 5 + 5 it is copied.
  student = {'fusion': {'fc1': dense(10, 8), 'fc2': dense(8, 4)}, 'classifier': dense(4, 8)}
  task = tasks.create(config, INFO)
  task._student_params = student
  with pytest.raises(ValueError, match="student_export='STUDENT'.*'fusion'"):
    jax.eval_shape(functools.partial(task.init_variables, task.build_model()), jax.random.key(0))
  config.skim.audio_dim = 5
  task = tasks.create(config, INFO)
  task._student_params = student
  model = task.build_model()
  tx = train._freeze_untrainable(task.optimizer(lambda s: 0.1), task)
  state = _state(task, model, tx)
  for group in ('fusion', 'classifier'):
    for a, b in zip(jax.tree.leaves(state.params[group]), jax.tree.leaves(student[group])):
      np.testing.assert_array_equal(a, b)
  batch = _banks(4, 0)
  batch['audio'] = np.random.default_rng(1).standard_normal((4, 12, 5)).astype(np.float32)
  new, metrics = _step(task, model, state, tx, batch)
  for a, b in zip(jax.tree.leaves(state.params['fusion']), jax.tree.leaves(new.params['fusion'])):
    np.testing.assert_array_equal(a, b)
  assert np.any(
    np.asarray(new.params['classifier']['kernel'])
    != np.asarray(state.params['classifier']['kernel'])
  )
  assert np.isfinite(metrics['loss']) and 'summary_top1' in metrics


@pytest.mark.parametrize('kind', ['skimming', 'non_recurrent', 'lstm'])
def test_skimming_evaluate_reports_video_metrics_and_hit_rate(kind):
  config = _skim_config()
  if kind != 'skimming':
    config.model = ml_collections.ConfigDict(
      {
        'name': kind,
        'num_classes': 8,
        'fusion_hidden': 8,
        'feature_dim': 4,
        **({'num_picks': 3, 'key_dim': 8} if kind == 'non_recurrent' else {'hidden': 16}),
      }
    )
  task = tasks.create(config, INFO)
  model = task.build_model()
  variables = jax.jit(functools.partial(task.init_variables, model))(jax.random.key(0))
  batch = _banks(4, 2)
  batch['segment'] = np.asarray([[0, 12]] * 2 + [[0, 0]] * 2, np.int32)
  batch['start_index'] = np.zeros(4, np.int32)
  batch['_mask'] = np.ones(4, np.float32)
  predict_fn = jax.jit(lambda v, b: task.predict(model, v, b))
  results, out = task.evaluate(predict_fn, variables, [batch])
  probs = np.asarray(jax.nn.softmax(out['logits']))
  assert results['top1'] == 100.0 * np.mean(probs.argmax(1) == batch['label'])
  if kind == 'lstm':
    assert 'hit_rate' not in results
  else:
    # Every pick is inside [0, 12) for videos 0-1 and outside the empty segment of 2-3.
    assert results['hit_rate'] == 0.5
  if kind == 'skimming':
    assert len([k for k in results if k.startswith('early_stop_')]) == 3


@pytest.mark.slow
def test_skimming_export_round_trip_gives_picks_and_scores(tmp_path):
  config = _skim_config()
  config.input.dataset = 'ltl_banks'
  task = tasks.create(config, INFO)
  model = task.build_model()
  variables = jax.jit(functools.partial(task.init_variables, model))(jax.random.key(3))
  spec = task.input_spec(train=False)
  path = export.write(
    tmp_path / 'skim',
    apply_fn=task.export_function(model),
    variables=variables,
    model_config=config.model.to_dict(),
    class_names=list(INFO.class_names),
    input_spec={k: list(v.shape) for k, v in spec.items()},
    preprocessing={'hop_s': 0.5},
    platforms=('cpu',),
  )
  loaded = export.load(path)
  batch = _banks(3, 4)
  out = loaded.predict({k: batch[k] for k in ('image', 'audio', 'mask')})
  direct = jax.jit(lambda v, b: task.predict(model, v, b))(variables, batch)
  np.testing.assert_array_equal(out['indices'], direct['indices'])
  np.testing.assert_allclose(out['scores'], jax.nn.softmax(direct['logits']), rtol=1e-5, atol=1e-6)
  # Video 0 has 8 valid pairs: its 3 picks are distinct and valid.
  picks = np.asarray(out['indices'][0])
  assert len(set(picks.tolist())) == 3 and picks.max() < 8
