"""Pretraining losses and held-out metrics: hand-computed values, and no label in the loss."""

import functools
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avsf_jax.models import rotation_head
from avsf_jax.tasks import pretraining
from tests.ssl import helpers


def test_curriculum_is_easy_for_the_first_half_then_one_quarter_hard():
  """Paper A.8: easy only for the first 60k of 120k iterations, then 1/4 hard."""
  start = pretraining.hard_from_step(120_000, easy_until=0.5)
  assert start == 60_000
  probability = [
    float(pretraining.hard_negative_probability(s, hard_from=start, hard_fraction=0.25))
    for s in (0, 59_999, 60_000, 119_999)
  ]
  assert probability == [0.0, 0.0, 0.25, 0.25]


def test_objective_is_rotation_cross_entropy_plus_avs_by_hand():
  # AVS at one junction: positives coincide (d+ = 0), negatives swapped (d- = sqrt(0.5)).
  v = jnp.array([[0.5, 0.0], [0.0, 0.5]])
  avs = {'pool5': {'visual': v, 'audio': v, 'audio_negative': v[::-1]}}
  avs_hand = 0.5 * (0.99 - math.sqrt(0.5)) ** 2  # mean over 2 equal examples, / 2
  # ROT: uniform logits -> ln 4; [2, 0, 0, 0] with k = 0 -> ln(e^2 + 3) - 2.
  logits = jnp.array([[0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]])
  rotation = jnp.array([3, 0])
  rot_hand = (math.log(4.0) + math.log(math.e**2 + 3.0) - 2.0) / 2
  settings = pretraining.PretrainingSettings(rotation_weight=2.0, avs_weight=1.0)
  loss, metrics = pretraining.pretext_objective(logits, rotation, avs, None, settings)
  assert float(metrics['avs_loss_pool5']) == pytest.approx(avs_hand, rel=1e-5)
  assert float(metrics['rotation_loss']) == pytest.approx(rot_hand, rel=1e-6)
  assert float(metrics['rotation_accuracy']) == 0.5  # argmax of a tie is 0, not 3
  assert float(loss) == pytest.approx(2.0 * rot_hand + avs_hand, rel=1e-5)
  # AVS only (no rotation head) and ROT only (no AVS junctions).
  loss, _ = pretraining.pretext_objective(None, None, avs, None, settings)
  assert float(loss) == pytest.approx(avs_hand, rel=1e-5)
  loss, _ = pretraining.pretext_objective(logits, rotation, {}, None, settings)
  assert float(loss) == pytest.approx(2.0 * rot_hand, rel=1e-6)


def test_held_out_accuracies_by_hand():
  logits = np.array([[0, 5, 0, 0], [0, 0, 5, 0], [0, 0, 0, 5], [5, 0, 0, 0]], np.float32)
  assert pretraining.rotation_accuracy(logits, [1, 2, 0, 0]) == 0.75
  assert pretraining.rotation_accuracy(logits, [1, 2, 0, 0], mask=[1, 1, 1, 0]) == pytest.approx(
    2 / 3
  )
  d_positive, d_negative = [0.1, 0.5, 0.3, 0.2], [0.2, 0.4, 0.9, 0.2]
  assert pretraining.sync_ranking_accuracy(d_positive, d_negative) == 0.5  # ties do not count
  assert pretraining.sync_ranking_accuracy(d_positive, d_negative, mask=[1, 1, 0, 0]) == 0.5
  assert pretraining.sync_ranking_accuracy(d_positive, d_negative, mask=[1, 0, 1, 0]) == 1.0
  metrics = pretraining.pretext_metrics(
    {
      'rotation_logits': logits,
      'rotation': [1, 2, 0, 0],
      'valid': [1, 1, 1, 1],
      'd_positive': d_positive,
      'd_hard': d_negative,
      'd_easy': [0.0, 1.0, 1.0, 1.0],
      'hard_valid': [1, 1, 1, 1],
      'easy_valid': [1, 1, 1, 0],
    }
  )
  assert metrics == {
    'rotation_accuracy': 0.75,
    'sync_hard_accuracy': 0.5,
    'sync_easy_accuracy': pytest.approx(2 / 3),
  }


@pytest.fixture(scope='module')
def pretext():
  model = rotation_head.PretextModel(backbone=helpers.StubBackbone())
  batch = helpers.batch(n=4)
  inputs = {k: batch[k] for k in ('slow', 'fast', 'audio')}
  return model, helpers.random_variables(model, inputs), batch


def test_no_class_label_reaches_the_loss(pretext):
  model, variables, batch = pretext
  parameters = inspect.signature(pretraining.pretext_objective).parameters
  assert not any('label' in name for name in parameters)
  assert 'label' not in pretraining.pretext_batch({**batch, 'label_verb': 1})
  settings = pretraining.PretrainingSettings(hard_from_step=0)  # hard negatives in play too

  @jax.jit
  def loss(b):
    return pretraining.pretraining_loss(
      model,
      variables['params'],
      variables['batch_stats'],
      b,
      jax.random.key(1),
      jnp.asarray(3),
      settings=settings,
    )

  value, (_, metrics) = loss(batch)
  scrambled = dict(batch, label=jnp.asarray([3, 1, 0, 2]), label_verb=jnp.arange(4))
  value2, (_, metrics2) = loss(scrambled)
  assert float(value) > 0.0 and np.isfinite(float(value))
  assert float(value2) == float(value)
  assert {k: float(v) for k, v in metrics2.items()} == {k: float(v) for k, v in metrics.items()}
  assert set(metrics) >= {'rotation_loss', 'avs_loss_res3', 'avs_loss_pool5', 'avs_pairs'}
  # The rotation label does reach it.
  value3, _ = loss(dict(batch, rotation=(batch['rotation'] + 1) % 4))
  assert float(value3) != float(value)


def test_predictions_rank_hard_and_easy_negatives_consistently(pretext):
  """The audio embedding depends on the audio alone (as in AVSlowFast, whose Audio pathway never
  sees the video, with eval-mode BN), so an `audio_negative` equal to the positive gives
  d_hard = d_positive, and one equal to the next clip's audio gives d_hard = d_easy."""
  model, variables, batch = pretext
  predict = jax.jit(functools.partial(pretraining.pretext_predictions, model))
  same = predict(variables, dict(batch, audio_negative=batch['audio']))
  np.testing.assert_allclose(same['d_hard'], same['d_positive'], rtol=1e-5)
  rolled = dict(batch, audio_negative=jnp.roll(batch['audio'], 1, axis=0))
  out = predict(variables, rolled)
  np.testing.assert_allclose(out['d_hard'], out['d_easy'], rtol=1e-5)
  assert out['rotation_logits'].shape == (4, 4)
  np.testing.assert_array_equal(out['easy_valid'], [1, 1, 1, 1])
  silent = dict(rolled, has_audio=jnp.asarray([1.0, 0.0, 1.0, 1.0]))
  out = predict(variables, silent)
  np.testing.assert_array_equal(out['easy_valid'], [1, 0, 0, 1])  # clip 2's negative is clip 1
  np.testing.assert_array_equal(out['hard_valid'], [1, 0, 1, 1])


class FusedStub(helpers.StubBackbone):
  """The stub, declaring an audio fusion at res3 (its `drop_pathway_keep` is 1: audio fused)."""

  audio_fusion_junctions: tuple = ('res3',)


@pytest.mark.slow
def test_junctions_after_the_first_fusion_count_only_when_drop_pathway_drops():
  """Spec 1.3 / the supervised loss: with audio fused at res3 and DropPathway keeping it, the
  pool5 pairs (whose visual side holds the positive audio) are out of the loss; res3 stays."""
  v = jnp.array([[0.5, 0.0], [0.0, 0.5]])
  pair = {'visual': v, 'audio': v, 'audio_negative': v[::-1]}
  avs = {'res3': pair, 'pool5': pair}
  one = 0.5 * (0.99 - math.sqrt(0.5)) ** 2
  settings = pretraining.PretrainingSettings()
  loss, _ = pretraining.pretext_objective(None, None, avs, None, settings)
  assert float(loss) == pytest.approx(2 * one, rel=1e-5)
  weights = {'res3': jnp.ones(()), 'pool5': jnp.zeros(())}
  loss, _ = pretraining.pretext_objective(None, None, avs, None, settings, weights)
  assert float(loss) == pytest.approx(one, rel=1e-5)
  # Through the training loss: the fused stub keeps audio, so pool5 is gated off.
  batch = helpers.batch(n=4)
  inputs = {k: batch[k] for k in ('slow', 'fast', 'audio')}
  out = {}
  for backbone in (helpers.StubBackbone(), FusedStub()):
    model = rotation_head.PretextModel(backbone=backbone, rotation=False)
    variables = helpers.random_variables(model, inputs)  # the same values for both
    value, _, metrics = _loss(model, variables, batch, settings, step=0)
    out[type(backbone).__name__] = value, metrics
  plain, plain_metrics = out['StubBackbone']
  fused, fused_metrics = out['FusedStub']
  assert plain_metrics['avs_loss_pool5'] > 0.0 and fused_metrics['avs_loss_pool5'] == 0.0
  assert fused_metrics['avs_loss_res3'] == pytest.approx(plain_metrics['avs_loss_res3'])
  assert plain == pytest.approx(
    plain_metrics['avs_loss_res3'] + plain_metrics['avs_loss_pool5'], rel=1e-5
  )
  assert fused == pytest.approx(plain_metrics['avs_loss_res3'], rel=1e-5)


@pytest.mark.slow
def test_sync_ranking_reads_pool5_with_the_audio_laterals_off():
  """The held-out ranking runs the backbone as the pool5 loss trains it: no audio fusion, only
  the pool5 projections, on the same variables (traced, not compiled)."""
  backbone = helpers.tiny_backbone(
    audio_fusion='a_fs', audio_fusion_junctions=('res3', 'res4'), avs_inputs='fusion'
  )
  ranking = pretraining.ranking_backbone(backbone)
  assert ranking.audio_fusion_junctions == () and ranking.avs_junctions == ('pool5',)
  stub = helpers.StubBackbone()
  assert pretraining.ranking_backbone(stub) is stub
  model = rotation_head.PretextModel(backbone=backbone)
  batch = helpers.batch(n=4)
  variables = helpers.random_variables(model, {k: batch[k] for k in ('slow', 'fast', 'audio')})
  out = jax.eval_shape(functools.partial(pretraining.pretext_predictions, model), variables, batch)
  assert {k: v.shape for k, v in out.items()} == {
    'valid': (4,),
    'rotation_logits': (4, 4),
    'rotation': (4,),
    'd_positive': (4,),
    'd_hard': (4,),
    'd_easy': (4,),
    'hard_valid': (4,),
    'easy_valid': (4,),
  }


def test_unrotate_undoes_the_pipelines_rotation_exactly():
  """`sync_arrays` / `input/rotation.py` turn each clip by `np.rot90(clip, k, axes=(1, 2))`."""
  rng = np.random.default_rng(0)
  upright = rng.normal(size=(4, 2, 5, 5, 3)).astype(np.float32)
  k = np.asarray([0, 1, 2, 3])
  rotated = np.stack([np.rot90(upright[i], k[i], axes=(1, 2)) for i in range(4)])
  assert not np.array_equal(rotated[1], upright[1])
  np.testing.assert_array_equal(pretraining.unrotate(jnp.asarray(rotated), jnp.asarray(k)), upright)


def _loss(model, variables, batch, settings, step):
  """(loss, new batch_stats, metrics as floats) of `pretraining_loss` with key 1."""
  value, (stats, metrics) = pretraining.pretraining_loss(
    model,
    variables['params'],
    variables['batch_stats'],
    batch,
    jax.random.key(1),
    jnp.asarray(step),
    settings=settings,
  )
  return float(value), stats, {k: float(v) for k, v in metrics.items()}


def _hard_only_loss(model, variables, batch, avs_on):
  settings = pretraining.PretrainingSettings(
    hard_from_step=0, avs_hard_fraction=1.0, avs_on=avs_on
  )  # every negative is the clip's own `audio_negative`: no pair reads another clip's audio
  return _loss(model, variables, batch, settings, step=5)


@pytest.mark.slow
def test_avs_on_upright_copy_reads_rot_rotated_and_avs_upright():
  """'upright_copy': ROT is the visual-only pass on the rotated clips (the stub's visual
  features do not depend on the audio, so it equals the one-pass ROT loss), and AVS is the
  one-pass loss of the clips turned back upright; the BN statistics come from both passes."""
  model = rotation_head.PretextModel(backbone=helpers.StubBackbone(oriented=True))
  upright = helpers.batch(n=4)
  inputs = {k: upright[k] for k in ('slow', 'fast', 'audio')}
  variables = helpers.random_variables(model, inputs)
  k = jnp.asarray([0, 1, 2, 3], jnp.int32)
  rotated = dict(upright, rotation=k)
  for key in ('slow', 'fast'):
    rotated[key] = jnp.stack([jnp.rot90(upright[key][i], int(k[i]), axes=(1, 2)) for i in range(4)])
  _, stats, copy = _hard_only_loss(model, variables, rotated, 'upright_copy')
  _, _, one_pass_rotated = _hard_only_loss(model, variables, rotated, 'all')
  _, _, one_pass_upright = _hard_only_loss(model, variables, dict(upright, rotation=k), 'all')
  assert copy['rotation_loss'] == pytest.approx(one_pass_rotated['rotation_loss'], rel=1e-6)
  for junction in ('res3', 'pool5'):
    key = f'avs_loss_{junction}'
    assert copy[key] == pytest.approx(one_pass_upright[key], rel=1e-6)
    assert copy[key] != pytest.approx(one_pass_rotated[key], rel=1e-3)
  assert copy['loss'] == pytest.approx(
    copy['rotation_loss'] + copy['avs_loss_res3'] + copy['avs_loss_pool5'], rel=1e-6
  )

  # BN (momentum 0.99, train mode): two updates, rotated then upright.
  def bn_mean(x):
    rows = jnp.arange(1.0, x.shape[2] + 1.0)[:, None, None]
    return np.asarray((x * rows).mean(axis=(1, 2, 3)).mean(axis=0))

  old = np.asarray(variables['batch_stats']['backbone']['slow_bn']['mean'])
  once = 0.99 * old + 0.01 * bn_mean(rotated['slow'])
  twice = 0.99 * once + 0.01 * bn_mean(upright['slow'])
  assert not np.allclose(bn_mean(rotated['slow']), bn_mean(upright['slow']))
  np.testing.assert_allclose(stats['backbone']['slow_bn']['mean'], twice, rtol=1e-5, atol=1e-7)
  # Held out: the ranking reads the clips upright, ROT reads them rotated (the stub's visual
  # features do not depend on the audio, so the visual-only pass equals the whole model's).
  predict = jax.jit(
    functools.partial(pretraining.pretext_predictions, model, avs_on='upright_copy')
  )
  out = predict(variables, rotated)
  reference = pretraining.pretext_predictions(model, variables, dict(upright, rotation=k))
  for key in ('d_positive', 'd_hard', 'd_easy'):
    np.testing.assert_allclose(out[key], reference[key], rtol=1e-5)
  one_pass = pretraining.pretext_predictions(model, variables, rotated)
  np.testing.assert_allclose(out['rotation_logits'], one_pass['rotation_logits'], rtol=1e-5)
  assert not np.allclose(out['rotation_logits'], reference['rotation_logits'], rtol=1e-3)


def test_upright_copy_traces_on_the_real_backbone():
  """The visual-only ROT pass on an AVSlowFast: its classifier gets the leading rows of the
  kernel, and the BN statistics come back with the structure they came in (traced only)."""
  model = rotation_head.PretextModel(
    backbone=helpers.tiny_backbone(
      audio_fusion='a_fs', audio_fusion_junctions=('res3', 'res4'), avs_inputs='fusion'
    )
  )
  batch = helpers.batch(n=4)
  variables = helpers.random_variables(model, {k: batch[k] for k in ('slow', 'fast', 'audio')})
  settings = pretraining.PretrainingSettings(avs_on='upright_copy')
  loss, (stats, metrics) = jax.eval_shape(
    lambda v, b: pretraining.pretraining_loss(
      model,
      v['params'],
      v['batch_stats'],
      b,
      jax.random.key(1),
      jnp.asarray(0),
      settings=settings,
    ),
    variables,
    batch,
  )
  assert loss.shape == ()
  assert jax.tree.structure(stats) == jax.tree.structure(variables['batch_stats'])
  assert {'rotation_loss', 'avs_loss_res3', 'avs_loss_res4', 'avs_loss_pool5'} <= set(metrics)
  out = jax.eval_shape(
    functools.partial(pretraining.pretext_predictions, model, avs_on='upright_copy'),
    variables,
    batch,
  )
  assert out['rotation_logits'].shape == (4, 4) and out['d_positive'].shape == (4,)
