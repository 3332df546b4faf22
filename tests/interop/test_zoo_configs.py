"""configs/pytorchvideo.py and configs/pyslowfast.py against the real PyTorchVideo builders.

(Conversion checks use the hub builders' own head pools: pooling windows hold no tensors.)
Each PyTorchVideo variant is built at its `pytorchvideo.models.hub` arguments (random
weights); every tensor of its state dict must map onto our variables with the right shape
and vice versa (abstract shapes, no forward pass for the R101 models), Slow R50's logits
must match, and a config that differs from the checkpoint (lateral kernel 7 for an R101,
too few temporal res4 blocks) fails listing each offending tensor. The builders import
`torchvision.ops.RoIAlign` for detection heads only; test_pytorchvideo_parity stubs it.
"""

import dataclasses

import jax
import numpy as np
import pytest
import torch

from avsf_jax import models
from avsf_jax.interop import convert
from avsf_jax.models import stats
from tests.helpers import load_config

# Installs the torchvision stub that PyTorchVideo's builders import (see `_hub`).
from tests.interop.test_pytorchvideo_parity import _randomise_batchnorm, _torch_inputs

CROP = 64  # res5 is 2x2; the heads' pooling windows shrink to match


def _hub():
  """`pytorchvideo.models.hub` (resnet, slowfast), imported after the torchvision stub."""
  from pytorchvideo.models.hub import resnet, slowfast  # noqa: PLC0415

  return resnet, slowfast


def _convert(ptv_model, config):
  state = {k: v.numpy() for k, v in ptv_model.state_dict().items()}
  model = models.build_model(config.model)
  inputs = models.example_inputs(model, batch=1, num_frames=config.input.num_frames, crop_size=CROP)
  abstract = stats.abstract_variables(model, inputs)
  variables, report = convert.convert(abstract, state, convert.pytorchvideo_name_map(state))
  return model, variables, report


@pytest.fixture(scope='module')
def slowfast_r101():
  """The hub's slowfast_r101 (head pools shrunk to the 64-pixel view), random BN statistics."""
  with torch.no_grad():
    ptv = _hub()[1].slowfast_r101(head_pool_kernel_sizes=((8, 2, 2), (32, 2, 2)))
  _randomise_batchnorm(ptv, seed=7)
  return ptv.eval()


def _assert_same_logits(ptv, model, variables, x):
  ours, _ = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  with torch.no_grad():
    theirs = ptv(_torch_inputs(x)).numpy()
  scale = np.max(np.abs(theirs))
  assert scale > 1e-3
  np.testing.assert_allclose(ours, theirs, atol=1e-4 * scale, rtol=0)


@pytest.mark.slow  # compiles a whole R101 SlowFast: ~10-20 s
def test_slowfast_r101_logits_match_pytorchvideo(slowfast_r101):
  config = load_config('configs/pytorchvideo.py:slowfast_r101')
  model, variables, report = _convert(slowfast_r101, config)
  assert report.complete, report.summary()
  assert report.converted == len(
    [k for k in slowfast_r101.state_dict() if not k.endswith('num_batches_tracked')]
  )
  rng = np.random.default_rng(7)
  x = {
    k: rng.normal(size=v.shape).astype(np.float32)
    for k, v in models.example_inputs(model, batch=1, num_frames=8, crop_size=CROP).items()
  }
  _assert_same_logits(slowfast_r101, model, variables, x)


def test_slowfast_16x8_r101_converts_every_tensor():
  with torch.no_grad():
    ptv_16x8 = _hub()[1].slowfast_16x8_r101_50_50()
  _, _, report = _convert(ptv_16x8, load_config('configs/pytorchvideo.py:slowfast_16x8_r101_50_50'))
  assert report.complete, report.summary()
  # PySlowFast's 16x8 R101 is the same network (same names up to the source format).
  ours = models.build_model(load_config('configs/pyslowfast.py:SLOWFAST_16x8_R101_50_50').model)
  ptv = models.build_model(load_config('configs/pytorchvideo.py:slowfast_16x8_r101_50_50').model)
  names = {f.name for f in dataclasses.fields(ours)} - {'parent', 'name'}
  differing = {k for k in names if getattr(ours, k) != getattr(ptv, k)}
  assert differing == {'head_position_average'}


def test_mismatched_r101_config_lists_the_offending_tensors(slowfast_r101):
  """An R101 with the 8x8 R50 lateral kernel (7) and PySlowFast's 6-of-23 temporal res4
  blocks against the hub's slowfast_r101 (kernel 5, every res4 block temporal)."""
  config = load_config('configs/pytorchvideo.py:slowfast_r101')
  config.model.fusion_kernel = 7
  config.model.temporal_kernel_blocks = (3, 4, 6, 3)
  _, _, report = _convert(slowfast_r101, config)
  assert not report.complete
  offenders = [m.split(' ')[0] for m in report.mismatched]
  laterals = [
    f'params/fast_to_slow_{j}/conv/conv/kernel' for j in ('pool1', 'res2', 'res3', 'res4')
  ]
  res4 = [
    f'params/{p}_res4/block{b}/conv_a/conv/kernel' for p in ('fast', 'slow') for b in range(6, 23)
  ]
  assert sorted(offenders) == sorted(laterals + res4)
  summary = report.summary()
  assert '38 mis-shaped' in summary
  assert 'params/fast_to_slow_res2/conv/conv/kernel (7, 1, 1, 32, 64) <- ' in summary
  assert not report.missing and not report.unexpected


@pytest.mark.slow
def test_slow_r50_logits_match_pytorchvideo():
  with torch.no_grad():
    # The hub's slow_r50 arguments, with the head pool shrunk to the 64-pixel view.
    ptv = _hub()[0].create_resnet(
      stem_conv_kernel_size=(1, 7, 7), head_pool_kernel_size=(8, 2, 2), model_depth=50
    )
  _randomise_batchnorm(ptv, seed=5)
  ptv.eval()
  config = load_config('configs/pytorchvideo.py:slow_r50')
  model, variables, report = _convert(ptv, config)
  assert report.complete, report.summary()
  rng = np.random.default_rng(5)
  x = {'slow': rng.normal(size=(2, 8, CROP, CROP, 3)).astype(np.float32)}
  ours, _ = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  with torch.no_grad():
    theirs = ptv(_torch_inputs(x)[0]).numpy()  # create_resnet takes one tensor
  scale = np.max(np.abs(theirs))
  assert scale > 1e-3
  np.testing.assert_allclose(ours, theirs, atol=1e-4 * scale, rtol=0)


@pytest.mark.parametrize(
  'spec',
  [
    'configs/pytorchvideo.py:slow_r50',
    'configs/pytorchvideo.py:slowfast_r50',
    'configs/pytorchvideo.py:audio_visual_slowfast',
    'configs/pyslowfast.py:SLOWFAST_8x8_R101',
    'configs/pyslowfast.py:SLOWFAST_NLN_16x8_R101_50_50',
  ],
)
def test_zoo_configs_build(spec):
  config = load_config(spec)
  model = models.build_model(config.model)
  assert model.fusion_kernel == (5 if 'R101' in spec else 7)
  if 'NLN' in spec:
    assert tuple(model.nonlocal_blocks) == (6, 13, 20)
    assert tuple(model.nonlocal_pool) == (1, 2, 2) and model.nonlocal_instantiation == 'dot_product'
  if 'pyslowfast' in spec:
    assert config.optim.nesterov and config.optim.warmup_start_factor == 0.1
    assert config.input.view_starts == 'pyslowfast'


def test_unknown_zoo_variant_is_an_error():
  with pytest.raises(ValueError, match='unknown variant'):
    load_config('configs/pytorchvideo.py:x3d_m')
