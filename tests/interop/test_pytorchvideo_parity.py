"""Randomly initialised PyTorchVideo models, converted, give the same logits and stage features.

Uses the real `pytorchvideo==0.1.5` builders on the CPU torch wheel (test extras). The
builders import `torchvision.ops.RoIAlign` for detection heads only, so a stub module stands
in for torchvision. Views are 64x64 (the heads' pooling windows shrink to match) to keep the
full-size R50 models fast on 2 CPU cores; every BN gets random statistics and affine
parameters so that each mapped tensor matters.
"""

import sys
import types

import jax
import numpy as np
import pytest
import torch

from avsf_jax import models
from avsf_jax.interop import convert
from avsf_jax.models import stats
from tests.helpers import load_config

if 'torchvision' not in sys.modules:
  _tv = types.ModuleType('torchvision')
  _tv.ops = types.ModuleType('torchvision.ops')
  _tv.ops.RoIAlign = object
  sys.modules['torchvision'] = _tv
  sys.modules['torchvision.ops'] = _tv.ops

from pytorchvideo.models.audio_visual_slowfast import create_audio_visual_slowfast  # noqa: E402
from pytorchvideo.models.slowfast import create_slowfast  # noqa: E402

CROP = 64  # res5 is 2x2


def _randomise_batchnorm(module, seed):
  gen = torch.Generator().manual_seed(seed)
  for m in module.modules():
    if isinstance(m, torch.nn.BatchNorm3d):
      n = m.num_features
      m.weight.data = 0.5 + torch.rand(n, generator=gen)
      m.bias.data = 0.1 * torch.randn(n, generator=gen)
      m.running_mean.data = 0.1 * torch.randn(n, generator=gen)
      m.running_var.data = 0.5 + torch.rand(n, generator=gen)


def _torch_inputs(our_inputs):
  out = []
  for name in ('slow', 'fast', 'audio'):
    if name not in our_inputs:
      continue
    x = torch.from_numpy(np.asarray(our_inputs[name]))
    if name == 'audio':  # (N, T, F, 1) -> (N, 1, T, 1, F)
      out.append(x.permute(0, 3, 1, 2).unsqueeze(3).contiguous())
    else:  # (N, T, H, W, C) -> (N, C, T, H, W)
      out.append(x.permute(0, 4, 1, 2, 3).contiguous())
  return out


def _stage_features(ptv_model, torch_inputs, pathways):
  """Outputs of every pathway's res2..res5 (before fusion), via forward hooks."""
  features, hooks = {}, []
  for stage in range(1, 5):
    for index, pathway in enumerate(pathways):
      block = ptv_model.blocks[stage].multipathway_blocks[index]

      def hook(_, __, out, key=f'{pathway}_res{stage + 1}_out'):
        features[key] = out.detach()

      hooks.append(block.register_forward_hook(hook))
  with torch.no_grad():
    logits = ptv_model(torch_inputs).numpy()
  for h in hooks:
    h.remove()
  return logits, features


def _check_parity(ptv_model, config, seed):
  _randomise_batchnorm(ptv_model, seed)
  ptv_model.eval()
  state = {k: v.numpy() for k, v in ptv_model.state_dict().items()}
  if config.model.head_pooling == 'window' and config.model.head_position_average == 'softmax':
    # The paper configs' test head (softmax per position); PyTorchVideo's hub head pools its
    # one window and returns logits, which the global head returns at these small crops.
    config.model.head_pooling = 'global'
  model = models.build_model(config.model)
  rng = np.random.default_rng(seed)
  inputs = {
    k: rng.normal(size=v.shape).astype(np.float32)
    for k, v in models.example_inputs(
      model, batch=2, num_frames=config.input.num_frames, crop_size=CROP
    ).items()
  }
  abstract = stats.abstract_variables(model, inputs)
  variables, report = convert.convert(abstract, state, convert.pytorchvideo_name_map(state))
  assert report.complete, report.summary()

  (ours, _), inter = jax.jit(
    lambda v, x: model.apply(v, x, train=False, mutable=['intermediates'])
  )(variables, inputs)
  theirs, features = _stage_features(ptv_model, _torch_inputs(inputs), config.model.pathways)
  scale = np.max(np.abs(theirs))
  assert scale > 1e-3
  np.testing.assert_allclose(ours, theirs, atol=1e-4 * scale, rtol=0)
  assert set(features) == set(inter['intermediates'])
  for name, value in features.items():
    value = value.numpy()
    if name.startswith('audio'):  # (N, C, T, 1, F) -> (N, T, F, C)
      expected = value[:, :, :, 0, :].transpose(0, 2, 3, 1)
    else:  # (N, C, T, H, W) -> (N, T, H, W, C)
      expected = np.moveaxis(value, 1, -1)
    mine = np.asarray(inter['intermediates'][name][0])
    np.testing.assert_allclose(mine, expected, atol=1e-4 * np.max(np.abs(expected)), rtol=0)


@pytest.mark.slow
def test_slowfast_4x16_r50_parity():
  ptv = create_slowfast(
    slowfast_fusion_conv_kernel_size=(5, 1, 1),
    slowfast_fusion_conv_stride=(8, 1, 1),
    head_pool_kernel_sizes=((4, 2, 2), (32, 2, 2)),
  )
  _check_parity(ptv, load_config('configs/kinetics_r50.py:slowfast_4x16'), seed=0)


@pytest.mark.slow
def test_slowfast_8x8_r50_parity():
  ptv = create_slowfast(head_pool_kernel_sizes=((8, 2, 2), (32, 2, 2)))
  _check_parity(ptv, load_config('configs/kinetics_r50.py:slowfast_8x8'), seed=1)


@pytest.mark.slow
def test_audiovisual_slowfast_parity():
  ptv = create_audio_visual_slowfast(head_pool_kernel_sizes=((8, 2, 2), (32, 2, 2), (16, 1, 10)))
  config = load_config('configs/kinetics_r50.py:avslowfast_8x8_ptv')
  config.model.head_window = (2, 2)
  config.model.head_position_average = 'logits'  # PyTorchVideo averages logits
  _check_parity(ptv, config, seed=2)
