"""Layers against hand-computed references: BN groups, PyTorch padding, laterals, non-local."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avsf_jax.models import convolution, fusion, layers, nonlocal_block


def _normal(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _apply_bn(module, x, variables=None):
  variables = variables or module.init(jax.random.key(0), x)
  return module.apply(variables, x, mutable=['batch_stats'])


# -- Grouped BatchNorm -----------------------------------------------------------------------


@pytest.mark.parametrize('group_size', [0, 8, 16])
def test_bn_with_one_group_equals_flax_batchnorm(group_size):
  """A group covering the whole batch (or group_size=0) is plain BN, running stats included."""
  x = _normal((8, 3, 4, 4, 5)) * 2.0 + 1.0
  ours = layers.BatchNorm(use_running_average=False, group_size=group_size, momentum=0.9)
  plain = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
  y_ours, s_ours = _apply_bn(ours, x)
  y_plain, s_plain = plain.apply(plain.init(jax.random.key(0), x), x, mutable=['batch_stats'])
  np.testing.assert_allclose(y_ours, y_plain, atol=1e-5)
  np.testing.assert_allclose(
    s_ours['batch_stats']['mean'], s_plain['batch_stats']['mean'], atol=1e-6
  )
  np.testing.assert_allclose(s_ours['batch_stats']['var'], s_plain['batch_stats']['var'], atol=1e-5)


def test_bn_groups_are_independent_and_normalised_separately():
  x = _normal((8, 2, 3, 3, 4))
  bn = layers.BatchNorm(use_running_average=False, group_size=4)
  y, state = _apply_bn(bn, x)
  # Each group of 4 clips is normalised on its own statistics.
  for g in range(2):
    group = np.asarray(y[4 * g : 4 * g + 4]).reshape(-1, 4)
    np.testing.assert_allclose(group.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(group.var(axis=0), 1.0, atol=1e-3)
  # Changing the second group leaves the first group's outputs untouched.
  x2 = x.at[4:].set(_normal((4, 2, 3, 3, 4), seed=5) * 3.0)
  y2, _ = _apply_bn(bn, x2)
  np.testing.assert_array_equal(y2[:4], y[:4])
  assert not np.allclose(y2[4:], y[4:])
  # Running statistics describe the whole batch: mean of group means, total variance.
  flat = np.asarray(x).reshape(-1, 4)
  np.testing.assert_allclose(state['batch_stats']['mean'], 0.1 * flat.mean(axis=0), atol=1e-6)
  np.testing.assert_allclose(state['batch_stats']['var'], 0.9 + 0.1 * flat.var(axis=0), atol=1e-5)


def test_bn_rejects_a_batch_that_is_not_a_multiple_of_the_group():
  bn = layers.BatchNorm(use_running_average=False, group_size=4)
  with pytest.raises(ValueError, match='multiple of bn_group_size=4'):
    _apply_bn(bn, _normal((6, 2, 2, 2, 3)))


def test_bn_keeps_f32_statistics_under_bf16():
  x = _normal((4, 2, 2, 2, 3)).astype(jnp.bfloat16)
  bn = layers.BatchNorm(use_running_average=False, dtype=jnp.bfloat16)
  y, state = _apply_bn(bn, x)
  assert y.dtype == jnp.bfloat16
  assert state['batch_stats']['mean'].dtype == jnp.float32
  np.testing.assert_allclose(
    state['batch_stats']['mean'], 0.1 * np.asarray(x, np.float32).reshape(-1, 3).mean(0), atol=1e-6
  )


# -- PyTorch-compatible padding --------------------------------------------------------------


def _reference_conv1d(x, w, stride, pad):
  """Plain numpy cross-correlation with symmetric zero padding (PyTorch Conv1d semantics)."""
  x = np.pad(x, (pad, pad))
  k = len(w)
  return np.array([np.dot(x[i : i + k], w) for i in range(0, len(x) - k + 1, stride)])


@pytest.mark.parametrize('size,kernel,stride', [(8, 3, 2), (7, 7, 2), (10, 5, 1), (32, 5, 8)])
def test_conv_padding_is_symmetric_like_pytorch(size, kernel, stride):
  x = np.random.default_rng(1).normal(size=size).astype(np.float32)
  conv = layers.Conv(1, (kernel,), (stride,))
  variables = conv.init(jax.random.key(0), x[None, :, None])
  w = np.asarray(variables['params']['conv']['kernel'])[:, 0, 0]
  y = conv.apply(variables, x[None, :, None])[0, :, 0]
  np.testing.assert_allclose(y, _reference_conv1d(x, w, stride, kernel // 2), rtol=1e-5, atol=1e-5)


def test_max_pool_pads_with_minus_infinity():
  x = -1.0 - jnp.arange(16.0).reshape(1, 1, 4, 4, 1)  # all negative
  y = layers.max_pool(x, (1, 3, 3), (1, 2, 2))
  assert y.shape == (1, 1, 2, 2, 1)
  # Windows centred on even pixels; the top-left one covers the padding row and column, and
  # its max is x[0, 0] = -1: zero padding would have given 0.
  np.testing.assert_array_equal(y[0, 0, :, :, 0], [[-1.0, -2.0], [-5.0, -6.0]])


# -- Fast->Slow laterals ---------------------------------------------------------------------


def _lateral(kind, slow, fast, alpha=4):
  conv = functools.partial(layers.Conv)
  norm = functools.partial(layers.BatchNorm, use_running_average=True)
  module = fusion.FastToSlow(kind, alpha, 5, 2, conv, norm)
  return module.apply(module.init(jax.random.key(0), slow, fast), slow, fast)


def test_time_strided_sample_takes_every_alpha_th_fast_frame():
  slow = jnp.zeros((1, 2, 1, 1, 3))
  fast = jnp.arange(8.0).reshape(1, 8, 1, 1, 1) * jnp.ones((1, 1, 1, 1, 2))
  out = _lateral('time_strided_sample', slow, fast)
  np.testing.assert_array_equal(out[0, :, 0, 0, 3:], [[0.0, 0.0], [4.0, 4.0]])
  np.testing.assert_array_equal(out[..., :3], 0.0)


def test_time_to_channel_packs_alpha_frames_in_order():
  slow = jnp.ones((1, 2, 1, 1, 4))
  fast = jnp.arange(8.0).reshape(1, 8, 1, 1, 1)  # one channel, frame index as value
  out = _lateral('time_to_channel_concat', slow, fast)
  np.testing.assert_array_equal(out[0, :, 0, 0, 4:], [[0, 1, 2, 3], [4, 5, 6, 7]])
  summed = _lateral('time_to_channel_sum', slow, fast)
  np.testing.assert_array_equal(summed[0, :, 0, 0], [[1, 2, 3, 4], [5, 6, 7, 8]])
  with pytest.raises(ValueError, match='alpha \\* C_fast == C_slow'):
    _lateral('time_to_channel_sum', jnp.ones((1, 2, 1, 1, 3)), fast)


def test_time_strided_conv_output_width_and_frames():
  slow = jnp.ones((2, 4, 3, 3, 16))
  fast = _normal((2, 32, 3, 3, 4))
  out = _lateral('time_strided_conv', slow, fast, alpha=8)
  assert out.shape == (2, 4, 3, 3, 16 + 8)
  with pytest.raises(ValueError, match='do not line up'):
    _lateral('time_strided_conv', slow, _normal((2, 30, 3, 3, 4)), alpha=8)


# -- Non-local -------------------------------------------------------------------------------


@pytest.mark.parametrize('instantiation', ['dot_product', 'softmax'])
def test_nonlocal_matches_a_numpy_reference(instantiation):
  """'dot_product' (PySlowFast's NL configs): theta.phi divided by the number of (pooled) key
  positions, here 2 x 2 x 2 = 8, no softmax; 'softmax': scaled by inner ** -0.5, softmax."""
  x = _normal((2, 2, 4, 4, 6))
  conv = functools.partial(layers.Conv)
  norm = functools.partial(layers.BatchNorm, use_running_average=True)
  block = nonlocal_block.NonLocal(
    inner=3, pool=(1, 2, 2), conv=conv, norm=norm, instantiation=instantiation
  )
  variables = block.init(jax.random.key(0), x)
  np.testing.assert_array_equal(block.apply(variables, x), x)  # identity at init
  params = jax.tree_util.tree_map(lambda v: v, variables['params'])
  params['bn']['scale'] = jnp.full_like(params['bn']['scale'], 0.7)
  for name in ('theta', 'phi', 'g', 'out'):
    params[name]['conv']['bias'] = _normal(params[name]['conv']['bias'].shape, seed=3)
  y = block.apply({**variables, 'params': params}, x)

  def lin(name, v):
    p = params[name]['conv']
    return v @ np.asarray(p['kernel']).reshape(p['kernel'].shape[-2:]) + np.asarray(p['bias'])

  xn = np.asarray(x)
  pooled = xn.reshape(2, 2, 2, 2, 2, 2, 6).max(axis=(3, 5))
  theta = lin('theta', xn).reshape(2, -1, 3)
  phi = lin('phi', pooled).reshape(2, -1, 3)
  g = lin('g', pooled).reshape(2, -1, 3)
  if instantiation == 'dot_product':
    a = np.einsum('nqd,nkd->nqk', theta, phi) / 8.0
  else:
    a = np.einsum('nqd,nkd->nqk', theta, phi) / np.sqrt(3)
    a = np.exp(a - a.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
  z = lin('out', np.einsum('nqk,nkd->nqd', a, g).reshape(2, 2, 4, 4, 3))
  expected = xn + z * 0.7 / np.sqrt(1 + 1e-5)
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_nonlocal_instantiation_is_checked():
  block = nonlocal_block.NonLocal(
    inner=2, pool=(1, 1, 1), conv=layers.Conv, norm=layers.BatchNorm, instantiation='gaussian'
  )
  with pytest.raises(ValueError, match='instantiation'):
    block.init(jax.random.key(0), jnp.zeros((1, 1, 2, 2, 4)))


@pytest.mark.parametrize(
  'kernel,strides,frames',
  [
    ((1, 3, 3), (1, 2, 2), 16),
    ((1, 1, 1), (1, 1, 1), 16),
    ((1, 1, 1), (1, 2, 2), 16),
    ((1, 1, 1), (2, 2, 2), 7),
    ((3, 1, 1), (1, 1, 1), 16),
    ((4, 1, 1), (1, 1, 1), 9),
    ((7, 1, 1), (1, 1, 1), 3),
    ((5, 1, 1), (8, 1, 1), 16),
    ((5, 7, 7), (1, 2, 2), 16),
    ((5, 7, 7), (1, 2, 2), 2),
    ((3, 3, 3), (1, 1, 1), 5),
    ((4, 3, 3), (1, 2, 2), 7),
    ((2, 3, 3), (1, 1, 1), 6),
    ((3, 3, 3), (2, 2, 2), 16),
  ],
)
def test_video_conv_lowerings_equal_a_3d_convolution(kernel, strides, frames):
  """Every lowering (frames as batch, shifted matmuls, grouped taps) is the 3-D convolution,
  for odd and even temporal kernels and clips shorter than the kernel."""
  x = _normal((2, frames, 6, 6, 5))
  conv = layers.Conv(7, kernel, strides)
  variables = conv.init(jax.random.key(0), x)
  w = variables['params']['conv']['kernel']
  reference = jax.lax.conv_general_dilated(
    x,
    w,
    strides,
    convolution.torch_padding(kernel),
    dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'),
    precision='highest',
  )
  assert conv.apply(variables, x).shape == reference.shape
  np.testing.assert_allclose(conv.apply(variables, x), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('strides', [(1, 1), (2, 2), (1, 2)])
def test_pointwise_conv_on_audio_equals_a_2d_convolution(strides):
  x = _normal((2, 9, 8, 5))
  conv = layers.Conv(7, (1, 1), strides)
  variables = conv.init(jax.random.key(0), x)
  reference = jax.lax.conv_general_dilated(
    x,
    variables['params']['conv']['kernel'],
    strides,
    'VALID',
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    precision='highest',
  )
  np.testing.assert_allclose(conv.apply(variables, x), reference, rtol=1e-5, atol=1e-5)


def test_lowering_field_switches_between_xla_and_the_lowered_convolutions():
  x = _normal((1, 8, 6, 6, 3))

  def convolutions(lowering):
    conv = layers.Conv(4, (5, 3, 3), (1, 2, 2), lowering=lowering)
    variables = conv.init(jax.random.key(0), x)
    jaxpr = jax.make_jaxpr(conv.apply)(variables, x)
    return conv, variables, [e for e in jaxpr.eqns if e.primitive.name == 'conv_general_dilated']

  lowered, variables, (eqn,) = convolutions('lowered')
  assert len(eqn.params['window_strides']) == 2  # the grouped-taps lowering: one 2-D conv
  plain, _, (eqn,) = convolutions('xla')
  assert len(eqn.params['window_strides']) == 3  # one 3-D XLA convolution
  np.testing.assert_allclose(
    plain.apply(variables, x), lowered.apply(variables, x), rtol=1e-5, atol=1e-5
  )
  # 'auto' is the lowering on this CPU backend, XLA's convolution on GPU and TPU.
  assert convolution.resolve('auto') == ('lowered' if jax.default_backend() == 'cpu' else 'xla')
  _, _, (eqn,) = convolutions('auto')
  assert len(eqn.params['window_strides']) == (2 if jax.default_backend() == 'cpu' else 3)


def test_model_conv_lowering_reaches_every_convolution():
  from avsf_jax import models  # noqa: PLC0415

  model = models.AVSlowFast(
    num_classes=3, depth=14, slow_width=8, beta_inv=4, alpha=2, bn_group_size=0
  )
  inputs = models.example_inputs(model, num_frames=2, crop_size=32, audio_frames=16, mel_bins=8)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), inputs, train=False))

  def ranks(lowering):
    jaxpr = jax.make_jaxpr(
      lambda v: model.clone(conv_lowering=lowering).apply(v, inputs, train=False)
    )(variables)
    return collect_conv_ranks(jaxpr.jaxpr)

  kernels = [
    path
    for path, _ in jax.tree_util.tree_leaves_with_path(variables['params'])
    if '/'.join(str(getattr(k, 'key', k)) for k in path).endswith('conv/kernel')
  ]
  assert len(ranks('xla')) == len(kernels)  # every Conv is one XLA convolution
  assert 3 in ranks('xla') and 3 not in ranks('lowered')  # no 3-D convolution when lowered


def collect_conv_ranks(jaxpr) -> list[int]:
  out = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'conv_general_dilated':
      out.append(len(eqn.params['window_strides']))
    for value in eqn.params.values():
      inner = getattr(value, 'jaxpr', None)
      if inner is not None:
        out += collect_conv_ranks(getattr(inner, 'jaxpr', inner))
  return out


@pytest.mark.parametrize('dilation', [(1, 2, 2), (2, 1, 1)])
@pytest.mark.parametrize('lowering', ['xla', 'lowered'])
def test_dilated_conv_matches_the_3d_convolution(dilation, lowering):
  x = _normal((2, 5, 9, 9, 3))
  kernel_size = (1, 3, 3) if dilation[0] == 1 else (3, 1, 1)
  conv = layers.Conv(4, kernel_size, dilation=dilation, lowering=lowering)
  variables = conv.init(jax.random.key(1), x)
  kernel = variables['params']['conv']['kernel']
  pad = [(d * (k // 2), d * (k // 2)) for k, d in zip(kernel_size, dilation)]
  reference = jax.lax.conv_general_dilated(
    x,
    kernel,
    (1, 1, 1),
    pad,
    rhs_dilation=dilation,
    dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'),
    precision='highest',
  )
  out = conv.apply(variables, x)
  assert out.shape == x.shape[:-1] + (4,)
  np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)
