"""The AVA detector: the dilated stride-1 res5 (against plain torch convolutions), the
Detector's parameter layout (a classification checkpoint maps onto it), and the GFLOPs of the
paper's detectors by abstract tracing (spec `ava.md` 2.1, 2.5)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from avsf_jax.models import avslowfast, detector, layers, resnet, stats
from tests import helpers


def _bottleneck(dilation):
  conv = functools.partial(layers.Conv, lowering='xla')
  norm = functools.partial(layers.BatchNorm, use_running_average=True, group_size=0)
  return resnet.Bottleneck(
    features=8,
    inner=4,
    kernel_a=(3, 1, 1),
    kernel_b=(1, 3, 3),
    strides=(1, 1, 1),
    conv=conv,
    norm=norm,
    dilation=dilation,
  )


def _torch_bottleneck(params, x, dilation):
  """The block written with torch.nn.functional (NCDHW), BN in eval mode at mean 0, var 1."""

  def conv(t, p, padding, dil=(1, 1, 1)):
    kernel = torch.from_numpy(np.asarray(p['conv']['kernel'])).permute(4, 3, 0, 1, 2)
    return torch.nn.functional.conv3d(t, kernel, padding=padding, dilation=dil)

  def bn(t, p):
    scale = torch.from_numpy(np.asarray(p['scale'])) / np.sqrt(1.0 + 1e-5)
    return (
      t * scale[None, :, None, None, None]
      + torch.from_numpy(np.asarray(p['bias']))[None, :, None, None, None]
    )

  t = torch.from_numpy(np.asarray(x)).permute(0, 4, 1, 2, 3)
  y = torch.relu(bn(conv(t, params['conv_a'], (1, 0, 0)), params['bn_a']))
  d = dilation
  y = torch.relu(bn(conv(y, params['conv_b'], (0, d, d), (1, d, d)), params['bn_b']))
  y = bn(conv(y, params['conv_c'], 0), params['bn_c'])
  s = bn(conv(t, params['shortcut'], 0), params['shortcut_bn'])
  return torch.relu(y + s).permute(0, 2, 3, 4, 1).numpy()


@pytest.mark.parametrize('dilation', [1, 2])
def test_dilated_bottleneck_matches_torch(dilation):
  """conv_b with dilation (1, d, d) and padding d, as PySlowFast's res5 of the detectors."""
  x = jax.random.normal(jax.random.key(0), (1, 3, 9, 10, 6))
  block = _bottleneck(None if dilation == 1 else (1, dilation, dilation))
  variables = block.init(jax.random.key(1), x)
  # Random BN scales (bn_c starts at zero, which would hide the branch).
  leaves, tree = jax.tree.flatten(variables['params'])
  keys = jax.random.split(jax.random.key(2), len(leaves))
  params = jax.tree.unflatten(
    tree, [jax.random.normal(k, v.shape) * 0.5 for k, v in zip(keys, leaves)]
  )
  ours = block.apply({**variables, 'params': params}, x)
  ref = _torch_bottleneck(jax.device_get(params), jax.device_get(x), dilation)
  np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-4, rtol=1e-4)


def _tiny(**overrides):
  fields = dict(
    num_classes=80,
    pathways=('slow', 'fast'),
    depth=14,
    slow_width=8,
    alpha=2,
    bn_group_size=0,
    avs_junctions=(),
    conv_lowering='xla',
  )
  fields.update(overrides)
  return fields


def test_stride_one_res5_keeps_the_classification_parameters_and_gives_maps_at_1_16():
  inputs = {'slow': jnp.zeros((1, 2, 64, 64, 3)), 'fast': jnp.zeros((1, 4, 64, 64, 3))}
  classifier = avslowfast.AVSlowFast(**_tiny())
  model = detector.Detector(**_tiny(res5_spatial_stride=1, res5_dilation=2))
  boxes = jnp.array([[[8.0, 8.0, 40.0, 56.0]]])
  a = stats.abstract_variables(classifier, inputs)
  b = stats.abstract_variables(model, {**inputs, 'boxes': boxes})
  shapes = lambda v: jax.tree.map(lambda x: x.shape, v)  # noqa: E731
  backbone_a = {k: v for k, v in a['params'].items() if k != 'head'}
  backbone_b = {k: v for k, v in b['params'].items() if k != 'head'}
  assert shapes(backbone_a) == shapes(backbone_b)
  assert b['params']['head']['projection']['kernel'].shape == (256 + 32, 80)
  _, state = jax.eval_shape(
    lambda v: model.apply(v, {**inputs, 'boxes': boxes}, train=False, mutable=['intermediates']),
    b,
  )
  assert state['intermediates']['slow_res5_out'][0].shape[2:4] == (4, 4)  # 64 / 16
  _, state = jax.eval_shape(
    lambda v: classifier.apply(v, inputs, train=False, mutable=['intermediates']), a
  )
  assert state['intermediates']['slow_res5_out'][0].shape[2:4] == (2, 2)  # 64 / 32


def test_detector_logits_per_box_and_audio_concat_width():
  inputs = {
    'slow': jnp.zeros((2, 2, 32, 32, 3)),
    'fast': jnp.zeros((2, 4, 32, 32, 3)),
    'audio': jnp.zeros((2, 16, 20, 1)),
    'boxes': jnp.zeros((2, 3, 4)),
  }
  model = detector.Detector(
    **_tiny(pathways=('slow', 'fast', 'audio'), res5_spatial_stride=1, res5_dilation=2)
  )
  variables = stats.abstract_variables(model, inputs)
  # Slow 256 + Fast 32 + Audio pool5 128 (slow width 8 * 1/2 * 32).
  assert variables['params']['head']['projection']['kernel'].shape == (256 + 32 + 128, 80)
  logits = jax.eval_shape(lambda v: model.apply(v, inputs, train=False)[0], variables)
  assert logits.shape == (2, 3, 80)
  with pytest.raises(KeyError, match='boxes'):
    jax.eval_shape(
      lambda v: model.apply(v, {k: x for k, x in inputs.items() if k != 'boxes'}, train=False),
      variables,
    )


def _gflops(variant, height, width):
  config = helpers.load_config(f'configs/ava.py:{variant}')
  model = detector.build_detector(config.model)
  t, alpha = config.input.num_frames, config.model.alpha
  inputs = {
    'slow': jnp.zeros((1, t, height, width, 3)),
    'fast': jnp.zeros((1, alpha * t, height, width, 3)),
    'audio': jnp.zeros((1, 128, 80, 1)),
    'boxes': jnp.zeros((1, 1, 4)),
  }
  inputs = {k: v for k, v in inputs.items() if k in model.pathways or k == 'boxes'}
  result = stats.model_stats(model, inputs)
  return result['gflops'] - result['gflops_by_group'].get('head', 0.0)


def test_slowfast_4x16_r50_detector_gflops_at_256x320():
  """AVSlowFast Table 7 / footnote 2: 65.7 GFLOPs for the SlowFast 4x16 R50 detector."""
  assert _gflops('slowfast_4x16', 256, 320) == pytest.approx(65.7, abs=0.1)


@pytest.mark.slow
def test_avslowfast_4x16_r50_detector_gflops_at_256x320():
  """The paper says 67.1 (+1.4); our audio pathway and fusion add 3.4, as on Kinetics (spec
  2.5 documents the gap), so the figure asserted is our derivation's 69.1."""
  assert _gflops('avslowfast_4x16', 256, 320) == pytest.approx(69.1, abs=0.1)
