"""Behaviour of the AVSlowFast family: shapes, gradients, DropPathway, heads, AVS, numerics."""

import functools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from avsf_jax import models
from avsf_jax.models import presets
from tests.helpers import REPO, load_config

T, ALPHA, CROP, AUDIO = 2, 4, 32, (32, 16)


def tiny(**overrides):
  """A narrow two-block-per-stage AVSlowFast that runs in a second on CPU."""
  fields = dict(
    num_classes=5,
    depth=14,
    slow_width=16,
    beta_inv=4,
    alpha=ALPHA,
    fusion_kernel=3,
    lateral_junctions=('pool1', 'res2', 'res3', 'res4'),
    audio_fusion_junctions=('res3', 'res4'),
    audio_fusion_inner=8,
    avs_dim=8,
    bn_group_size=0,
  )
  fields.update(overrides)
  return models.AVSlowFast(**fields)


def inputs(batch=4, seed=0, crop=CROP):
  rng = np.random.default_rng(seed)
  return {
    'slow': jnp.asarray(rng.normal(size=(batch, T, crop, crop, 3)), jnp.float32),
    'fast': jnp.asarray(rng.normal(size=(batch, T * ALPHA, crop, crop, 3)), jnp.float32),
    'audio': jnp.asarray(rng.normal(size=(batch, *AUDIO, 1)), jnp.float32),
  }


@functools.partial(jax.jit, static_argnums=0)
def init(model, x):
  return model.init({'params': jax.random.key(0)}, x, train=False)


def random_variables(model, x, seed=0):
  """Random params (and unit BN statistics) of the right shapes, without compiling `init`.

  Compiling `init` (hundreds of threefry draws) takes far longer on CPU than the forward
  pass; tests that do not depend on the initial distribution use these instead.
  """
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map(
    lambda s: jnp.asarray(rng.normal(scale=0.2, size=s.shape), s.dtype), shapes['params']
  )
  stats = jax.tree_util.tree_map_with_path(
    lambda p, s: (
      jnp.ones(s.shape, s.dtype)
      if 'var' in jax.tree_util.keystr(p)
      else jnp.zeros(s.shape, s.dtype)
    ),
    shapes['batch_stats'],
  )
  return {'params': params, 'batch_stats': stats}


@pytest.fixture(scope='module')
def tiny_variables():
  """`init` of `tiny()`, compiled once for the module."""
  return init(tiny(), inputs())


@functools.partial(jax.jit, static_argnums=0)
def eval_apply(model, variables, x):
  return model.apply(variables, x, train=False)


def _train_apply(model, variables, x, drop_key, dropout_key):
  (logits, aux), _ = model.apply(
    variables,
    x,
    train=True,
    rngs={'dropout': jax.random.key(dropout_key), 'drop_pathway': jax.random.key(drop_key)},
    mutable=['batch_stats'],
  )
  return logits, aux


_jit_train_apply = jax.jit(_train_apply, static_argnums=0)


def train_apply(model, variables, x, drop_key=1, dropout_key=2):
  """Jitted training-mode forward pass (int keys seed the named RNG streams)."""
  return _jit_train_apply(model, variables, x, drop_key, dropout_key)


# -- Shapes of every preset ------------------------------------------------------------------


def _stage_shapes(config_spec, crop=224):
  config = load_config(config_spec)
  model = models.build_model(config.model)
  x = models.example_inputs(
    model,
    num_frames=config.input.num_frames,
    crop_size=crop,
    audio_frames=config.audio.num_frames,
    mel_bins=config.audio.num_mel_bins,
  )
  variables = jax.eval_shape(lambda: init(model, x))
  (logits, _), state = jax.eval_shape(
    lambda v: model.apply(v, x, train=False, mutable=['intermediates']), variables
  )
  shapes = {k: v[0].shape for k, v in state['intermediates'].items()}
  return shapes, logits.shape


def _expected(pathways, t, alpha, audio_width=32):
  expected = {}
  for i, stage in enumerate(('res2', 'res3', 'res4', 'res5')):
    side = 56 // 2**i
    if 'slow' in pathways:
      expected[f'slow_{stage}_out'] = (1, t, side, side, 256 * 2**i)
    if 'fast' in pathways:
      expected[f'fast_{stage}_out'] = (1, alpha * t, side, side, 32 * 2**i)
    if 'audio' in pathways:
      expected[f'audio_{stage}_out'] = (1, 128 // 2**i, 80 // 2**i, audio_width * 4 * 2**i)
  return expected


CONFIG_VARIANTS = [
  'configs/kinetics_r50.py:avslowfast_4x16',
  'configs/kinetics_r50.py:avslowfast_8x8',
  'configs/kinetics_r50.py:slowfast_4x16',
  'configs/kinetics_r50.py:slowfast_8x8',
  'configs/kinetics_r50.py:slow_only_4x16',
  'configs/kinetics_r50.py:fast_only_4x16',
  'configs/kinetics_r50.py:audio_only',
  'configs/kinetics_r50.py:avslowfast_8x8_ptv',
  'configs/kinetics_r101.py:avslowfast_8x8',
  'configs/kinetics_r101.py:slowfast_8x8',
  'configs/kinetics_r101.py:slowfast_16x8',
  'configs/kinetics_r101.py:slowfast_16x8_nl',
]


@pytest.mark.slow
@pytest.mark.parametrize('spec', CONFIG_VARIANTS)
def test_stage_shapes_of_every_preset(spec):
  config = load_config(spec)
  shapes, logits_shape = _stage_shapes(spec)
  audio_width = 64 if spec.endswith('audio_only') else 32
  expected = _expected(
    config.model.pathways, config.input.num_frames, config.model.alpha, audio_width
  )
  assert shapes == expected
  assert logits_shape == (1, 400)


def test_presets_and_config_variants_agree():
  """Every config variant is a preset; the presets no config file names are listed here."""
  variants = {spec.split(':')[1] for spec in CONFIG_VARIANTS}
  assert variants <= set(presets.PRESETS)
  assert set(presets.PRESETS) - variants == {'avslowfast_16x8', 'slow_only_8x8'}


@pytest.mark.slow
def test_head_is_fully_convolutional_at_test_time(tiny_variables):
  logits, _ = eval_apply(tiny(), tiny_variables, inputs(batch=2, crop=48))
  assert logits.shape == (2, 5)
  assert np.all(np.isfinite(logits))


@pytest.mark.slow
def test_window_head_averages_fc_over_training_sized_windows():
  """'window' pooling with 'logits' averaging = PyTorchVideo's head: avg-pool 1x1 windows of
  res5 -> FC -> mean of the logits (the softmax average is in test_fidelity.py)."""
  model = tiny(
    head_pooling='window',
    head_window=(1, 1),
    head_position_average='logits',
    pathways=('slow', 'fast'),
  )
  x = inputs(batch=2, crop=64)
  variables = random_variables(model, x)
  (logits, _), state = jax.jit(
    lambda v, x: model.apply(v, x, train=False, mutable=['intermediates'])
  )(variables, x)
  inter = state['intermediates']
  slow, fast = inter['slow_res5_out'][0], inter['fast_res5_out'][0]
  # Windows of 1x1 over the full time extent: per-position features.
  feats = jnp.concatenate([slow.mean(axis=1), fast.mean(axis=1)], axis=-1)  # (N, H, W, C)
  fc = variables['params']['head']['fc']
  per_position = feats @ fc['kernel'] + fc['bias']
  np.testing.assert_allclose(logits, per_position.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
  global_model = tiny(pathways=('slow', 'fast'))
  global_logits, _ = eval_apply(global_model, variables, x)
  # The FC is linear, so averaging logits over windows equals the FC of the global average.
  np.testing.assert_allclose(logits, global_logits, rtol=1e-5, atol=1e-6)


def test_several_heads():
  model = tiny(num_classes={'verb': 3, 'noun': 7})  # a dict field: not hashable, no static arg
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  logits, _ = apply(random_variables(model, inputs()), inputs())
  assert {k: v.shape for k, v in logits.items()} == {'verb': (4, 3), 'noun': (4, 7)}
  assert not np.allclose(logits['verb'][:, :3], logits['noun'][:, :3])


# -- Gradients and numerics -----------------------------------------------------------------


@pytest.mark.slow
def test_forward_backward_gives_finite_gradients(tiny_variables):
  model = tiny()
  x = inputs()
  variables = tiny_variables
  labels = jnp.array([0, 1, 2, 3])

  def loss_fn(params):
    logits, _ = _train_apply(model, {**variables, 'params': params}, x, 1, 2)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))

  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(variables['params'])
  assert np.isfinite(loss) and loss == pytest.approx(np.log(5), abs=0.05)
  leaves = jax.tree_util.tree_leaves_with_path(grads)
  assert all(np.all(np.isfinite(g)) for _, g in leaves)
  # The zero-initialised final BN scales are the only residual-branch entry with a gradient
  # at init; they, the head and the stems must all receive one.
  nonzero = {jax.tree_util.keystr(p) for p, g in leaves if np.any(g != 0)}
  for name in (
    "['head']['fc']['kernel']",
    "['slow_stem_bn']['scale']",
    "['audio_stem_bn']['scale']",
  ):
    assert name in nonzero
  assert any("['bn_c']['scale']" in n for n in nonzero)


@pytest.mark.slow
def test_bf16_compute_gives_f32_logits_close_to_f32(tiny_variables):
  x = inputs()
  model32, model16 = tiny(), tiny(dtype=jnp.bfloat16)
  # Make the logits large enough for a relative comparison to mean something.
  variables = jax.tree_util.tree_map(lambda v: v, tiny_variables)
  head = variables['params']['head']['fc']
  head['kernel'] = head['kernel'] * 100.0
  logits32, _ = eval_apply(model32, variables, x)
  logits16, _ = eval_apply(model16, variables, x)
  assert logits16.dtype == jnp.float32
  scale = np.max(np.abs(logits32))
  assert scale > 0.1
  np.testing.assert_allclose(logits16, logits32, atol=0.05 * scale)
  assert not np.array_equal(logits16, logits32)  # bf16 really was used
  (logits_train, _), updates = jax.jit(
    lambda v, x: model16.apply(
      v,
      x,
      train=True,
      rngs={'dropout': jax.random.key(0), 'drop_pathway': jax.random.key(1)},
      mutable=['batch_stats'],
    )
  )(variables, x)
  assert logits_train.dtype == jnp.float32
  stats = jax.tree_util.tree_leaves(updates['batch_stats'])
  assert all(s.dtype == jnp.float32 for s in stats)


def test_model_code_imports_no_tensorflow():
  code = (
    'import sys, avsf_jax.models, avsf_jax.tools.model_stats; print("tensorflow" in sys.modules)'
  )
  out = subprocess.run(
    [sys.executable, '-c', code], capture_output=True, text=True, check=True, cwd=REPO
  )
  assert out.stdout.strip() == 'False'


# -- DropPathway ------------------------------------------------------------------------------


def _zero_audio_fusion(variables):
  """The same network with every audio->visual contribution forced to zero."""
  params = jax.tree_util.tree_map(lambda v: v, variables['params'])
  for name in params:
    if name.startswith('audio_to_slowfast_'):
      params[name]['bn_b']['scale'] = jnp.zeros_like(params[name]['bn_b']['scale'])
      params[name]['bn_b']['bias'] = jnp.zeros_like(params[name]['bn_b']['bias'])
  return {**variables, 'params': params}


def test_drop_pathway_same_key_same_decision_and_rate_is_respected(tiny_variables):
  model = tiny(drop_pathway_rate=0.8)
  x = inputs()
  step = jax.jit(lambda key: _train_apply(model, tiny_variables, x, key, 2)[1]['drop_pathway_keep'])
  keeps = [float(step(k)) for k in range(200)]
  assert keeps[:20] == [float(step(k)) for k in range(20)]
  assert np.mean(keeps) == pytest.approx(0.2, abs=0.08)


@pytest.mark.slow
def test_drop_pathway_rate_0_is_no_drop_and_rate_1_zeroes_the_audio_laterals(tiny_variables):
  x = inputs()
  variables = tiny_variables
  keep_all, _ = train_apply(tiny(drop_pathway_rate=0.0), variables, x)
  reference_keep, _ = train_apply(tiny(drop_pathway_rate=0.0), variables, x, drop_key=7)
  np.testing.assert_array_equal(keep_all, reference_keep)
  dropped, aux = train_apply(tiny(drop_pathway_rate=1.0), variables, x)
  zeroed, _ = train_apply(tiny(drop_pathway_rate=0.0), _zero_audio_fusion(variables), x)
  np.testing.assert_allclose(dropped, zeroed, rtol=1e-6, atol=1e-7)
  assert not np.allclose(dropped, keep_all, atol=1e-6)
  assert float(aux['drop_pathway_keep']) == 0.0
  # Scope 'laterals' keeps the audio features in the head; 'laterals_and_head' zeroes them.
  assert np.any(aux['pooled']['audio'] != 0)
  _, aux_head = train_apply(
    tiny(drop_pathway_rate=1.0, drop_pathway_scope='laterals_and_head'), variables, x
  )
  np.testing.assert_array_equal(aux_head['pooled']['audio'], 0.0)


def test_drop_pathway_is_never_active_in_eval(tiny_variables):
  x = inputs()
  variables = tiny_variables
  logits_drop, aux = eval_apply(tiny(drop_pathway_rate=1.0), variables, x)
  logits_keep, _ = eval_apply(tiny(drop_pathway_rate=0.0), variables, x)
  np.testing.assert_array_equal(logits_drop, logits_keep)
  assert float(aux['drop_pathway_keep']) == 1.0


@pytest.mark.slow
@pytest.mark.parametrize('mode', ['global', 'per_example'])
def test_drop_pathway_decision_on_a_sharded_batch(mode):
  """On a batch sharded over 8 devices, 'global' drops audio for all clips or none, and the
  decision (per clip in 'per_example' mode) is the same as without sharding."""
  assert jax.device_count() == 8
  x = inputs(batch=8)
  # BN groups of one clip keep the clips independent, so each one can be checked alone;
  # random weights make the audio contribution to every clip's logits large.
  variables = random_variables(tiny(bn_group_size=1), x)
  keep_ref, _ = train_apply(tiny(bn_group_size=1, drop_pathway_rate=0.0), variables, x)
  drop_ref, _ = train_apply(tiny(bn_group_size=1, drop_pathway_rate=1.0), variables, x)
  gap = np.max(np.abs(keep_ref - drop_ref), axis=1)
  assert np.all(gap > 1e-3 * np.max(np.abs(keep_ref)))
  mesh = Mesh(np.array(jax.devices()), ('data',))
  sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec('data')))
  model = tiny(bn_group_size=1, drop_pathway_rate=0.5, drop_pathway_mode=mode)
  mixed_seen = False
  for key in range(12):
    logits, aux = train_apply(model, variables, sharded, key)
    assert len(logits.sharding.device_set) == 8
    to_keep = np.max(np.abs(logits - keep_ref), axis=1)
    to_drop = np.max(np.abs(logits - drop_ref), axis=1)
    assert np.all(np.minimum(to_keep, to_drop) < 0.01 * gap)
    kept = to_keep < to_drop
    keep = np.broadcast_to(np.asarray(aux['drop_pathway_keep']), (8,))
    np.testing.assert_array_equal(kept, keep == 1)
    _, aux_unsharded = train_apply(model, variables, x, key)
    np.testing.assert_array_equal(aux_unsharded['drop_pathway_keep'], aux['drop_pathway_keep'])
    if mode == 'global':
      assert kept.all() or not kept.any()
    mixed_seen |= 0 < kept.sum() < 8
  assert mixed_seen == (mode == 'per_example')


# -- AVS projections and negatives -----------------------------------------------------------


@pytest.mark.parametrize('bn_group_size', [0, 2])
def test_avs_embeddings_at_each_junction_with_negatives(bn_group_size):
  model = tiny(avs_junctions=('res3', 'res4', 'pool5'), bn_group_size=bn_group_size)
  x = inputs()
  variables = random_variables(model, x)
  same = {**x, 'audio_negative': x['audio']}
  shuffled = {**x, 'audio_negative': x['audio'][::-1]}
  _, aux_same = eval_apply(model, variables, same)
  _, aux_shuffled = eval_apply(model, variables, shuffled)
  assert set(aux_same['avs']) == {'res3', 'res4', 'pool5'}
  for junction, entry in aux_same['avs'].items():
    for name in ('visual', 'audio', 'audio_negative'):
      np.testing.assert_allclose(np.linalg.norm(entry[name], axis=-1), 0.5, rtol=1e-5)
      assert entry[name].shape == (4, 8)
    np.testing.assert_allclose(entry['audio_negative'], entry['audio'], atol=1e-6)
    np.testing.assert_allclose(
      aux_shuffled['avs'][junction]['audio_negative'], entry['audio'][::-1], atol=1e-6
    )
  # Negatives feed only the AVS projections: the logits do not change.
  logits_plain, _ = eval_apply(model, variables, x)
  logits_neg, _ = eval_apply(model, variables, shuffled)
  np.testing.assert_allclose(logits_plain, logits_neg, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('fusion', ['a_fs', 'a_f_s', 'av_nonlocal'])
def test_audio_fusions_make_logits_depend_on_audio(fusion):
  model = tiny(audio_fusion=fusion, audio_pool5_concat=False)
  x = inputs()
  variables = random_variables(model, x)
  for name, p in variables['params'].items():
    if name.startswith('audio_visual_nonlocal_'):
      p['query']['conv']['kernel'] = p['query']['conv']['kernel'] * 30.0  # sharpen attention
  logits, _ = eval_apply(model, variables, x)
  other, _ = eval_apply(model, variables, {**x, 'audio': x['audio'] * 3.0 + 1.0})
  assert not np.allclose(logits, other, atol=1e-6)
