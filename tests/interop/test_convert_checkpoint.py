"""The converter end to end: files on disk -> export -> predictions equal PyTorchVideo's."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from avsf_jax import export
from avsf_jax.interop import checkpoint_io, convert
from avsf_jax.tools import convert_checkpoint
from tests.helpers import REPO, load_config
from tests.interop import test_pytorchvideo_parity as parity

CROP = 64
SLOWFAST_4X16 = 'configs/kinetics_r50.py:slowfast_4x16'


@pytest.fixture(scope='module')
def ptv_slowfast():
  model = parity.create_slowfast(
    slowfast_fusion_conv_kernel_size=(5, 1, 1),
    slowfast_fusion_conv_stride=(8, 1, 1),
    head_pool_kernel_sizes=((4, 2, 2), (32, 2, 2)),
  )
  parity._randomise_batchnorm(model, seed=3)
  return model.eval()


def _batch(seed=0, n=2):
  rng = np.random.default_rng(seed)
  return {
    'slow': rng.normal(size=(n, 4, CROP, CROP, 3)).astype(np.float32),
    'fast': rng.normal(size=(n, 32, CROP, CROP, 3)).astype(np.float32),
  }


def _torch_logits(model, batch):
  with torch.no_grad():
    return model(parity._torch_inputs(batch)).numpy()


def _run_cli(*args):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  return subprocess.run(
    [sys.executable, '-m', 'avsf_jax.tools.convert_checkpoint', *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


def _ptv_to_caffe2(state, stage_depths=(3, 4, 6, 3)):
  """PyTorchVideo names -> the Caffe2 SlowFast release's blob names (independent spelling)."""
  suffix = {'weight': 's', 'bias': 'b', 'running_mean': 'rm', 'running_var': 'riv'}
  blobs = {'lr': np.float32(0.1), 'model_iter': np.int64(1000)}  # non-weight blobs
  for name, value in state.items():
    if name.endswith('num_batches_tracked'):
      continue
    parts = name.split('.')
    leaf = parts[-1]
    if parts[0] == 'blocks' and parts[1] == '6':
      blobs[f'pred_{"w" if leaf == "weight" else "b"}'] = value
      continue
    block = int(parts[1])
    if parts[2] == 'multipathway_fusion':
      base = (
        't_pool1_subsample'
        if block == 0
        else (f't_res{block + 1}_{stage_depths[block - 1] - 1}_branch2c_bn_subsample')
      )
      if parts[3] == 'norm':
        blobs[f'{base}_bn_{suffix[leaf]}'] = value
      else:
        blobs[f'{base}_w'] = value
      continue
    prefix = 't_' if parts[3] == '1' else ''
    if block == 0:
      if parts[4] == 'conv':
        blobs[f'{prefix}conv1_w'] = value
      else:
        blobs[f'{prefix}res_conv1_bn_{suffix[leaf]}'] = value
      continue
    res = f'{prefix}res{block + 1}_{parts[5]}'
    kind = parts[6] if parts[6] != 'branch2' else parts[7]
    branch = {
      'branch1_conv': ('branch1', False),
      'branch1_norm': ('branch1', True),
      'conv_a': ('branch2a', False),
      'norm_a': ('branch2a', True),
      'conv_b': ('branch2b', False),
      'norm_b': ('branch2b', True),
      'conv_c': ('branch2c', False),
      'norm_c': ('branch2c', True),
    }[kind]
    blobs[f'{res}_{branch[0]}_bn_{suffix[leaf]}' if branch[1] else f'{res}_{branch[0]}_w'] = value
  return blobs


@pytest.mark.slow
def test_pytorchvideo_file_converts_to_an_export_that_predicts_like_pytorchvideo(
  ptv_slowfast, tmp_path
):
  path = tmp_path / 'slowfast.pyth'
  torch.save({'model_state': ptv_slowfast.state_dict(), 'epoch': 3}, path)
  out = tmp_path / 'export'
  result = _run_cli(
    '--source=pytorchvideo',
    f'--config={SLOWFAST_4X16}',
    f'--config.input.test_crop_size={CROP}',
    '--config.model.head_pooling=global',  # PyTorchVideo's head at a small crop: its logits
    f'--input={path}',
    f'--output={out}',
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'tensors converted' in result.stdout
  loaded = export.load(out)
  assert loaded.input_spec == {'slow': [4, CROP, CROP, 3], 'fast': [32, CROP, CROP, 3]}
  assert len(loaded.class_names) == 400 and loaded.class_names[0] == 'abseiling'
  batch = _batch()
  theirs = _torch_logits(ptv_slowfast, batch)
  ours = np.asarray(loaded.predict(batch))
  np.testing.assert_allclose(ours, theirs, atol=1e-4 * np.max(np.abs(theirs)), rtol=0)
  # Refuses to overwrite without --overwrite, and leaves the export intact.
  again = _run_cli(
    '--source=pytorchvideo', f'--config={SLOWFAST_4X16}', f'--input={path}', f'--output={out}'
  )
  assert again.returncode != 0 and 'exists' in again.stderr
  assert export.load(out).metadata['converted_from']['file'] == str(path)


@pytest.mark.slow
def test_caffe2_blob_pickle_converts_and_matches(ptv_slowfast, tmp_path):
  state = {k: v.numpy() for k, v in ptv_slowfast.state_dict().items()}
  path = tmp_path / 'SLOWFAST_4x16_R50.pkl'
  with open(path, 'wb') as f:
    pickle.dump({'blobs': _ptv_to_caffe2(state)}, f)
  config = load_config(SLOWFAST_4X16)
  config.input.crop_size = CROP
  config.model.head_pooling = 'global'  # the Caffe2 model's logits at a small crop
  variables, report = convert_checkpoint.convert_file(config, 'caffe2', str(path))
  assert report.complete, report.summary()
  from avsf_jax import models

  model = models.build_model(config.model)
  batch = _batch(seed=1)
  ours = np.asarray(model.apply(variables, batch, train=False)[0])
  theirs = _torch_logits(ptv_slowfast, batch)
  np.testing.assert_allclose(ours, theirs, atol=1e-4 * np.max(np.abs(theirs)), rtol=0)


@pytest.mark.slow
def test_mismatched_configs_list_every_offending_tensor(ptv_slowfast, tmp_path):
  path = tmp_path / 'slowfast.pyth'
  torch.save(ptv_slowfast.state_dict(), path)
  slow_only = load_config('configs/kinetics_r50.py:slow_only_4x16')
  with pytest.raises(convert.ConversionError) as error:
    convert_checkpoint.convert_file(slow_only, 'pytorchvideo', str(path))
  message = str(error.value)
  assert 'unexpected (source, unused)' in message
  assert 'blocks.0.multipathway_blocks.1.conv.weight' in message  # the Fast stem
  assert 'blocks.0.multipathway_fusion.conv_fast_to_slow.weight' in message
  assert 'mis-shaped' in message and 'slow_res2/block0/conv_a/conv/kernel' in message

  other_classes = load_config(SLOWFAST_4X16)
  other_classes.model.num_classes = 10
  variables, report = convert_checkpoint.convert_file(
    other_classes, 'pytorchvideo', str(path), allow_partial=True
  )
  assert report.mismatched == [
    'params/head/fc/bias (10,) <- blocks.6.proj.bias (400,)',
    'params/head/fc/kernel (2304, 10) <- blocks.6.proj.weight (400, 2304)',
  ]
  assert variables['params']['head']['fc']['kernel'].shape == (2304, 10)
  np.testing.assert_array_equal(
    variables['params']['slow_stem']['conv']['kernel'],
    np.transpose(
      ptv_slowfast.state_dict()['blocks.0.multipathway_blocks.0.conv.weight'].numpy(),
      (2, 3, 4, 1, 0),
    ),
  )


class _RunsCode:
  def __reduce__(self):
    return (os.system, ('touch /tmp/avsf_pwned',))


def test_malicious_pickles_are_refused(tmp_path):
  marker = '/tmp/avsf_pwned'
  if os.path.exists(marker):
    os.remove(marker)
  pkl = tmp_path / 'evil.pkl'
  pkl.write_bytes(pickle.dumps({'blobs': {'conv1_w': np.ones(3)}, 'x': _RunsCode()}))
  with pytest.raises(checkpoint_io.UnsafeCheckpointError, match='posix.system|os.system'):
    checkpoint_io.load_checkpoint(str(pkl))
  pyth = tmp_path / 'evil.pyth'
  torch.save({'model_state': {'w': torch.ones(2)}, 'x': _RunsCode()}, pyth)
  with pytest.raises(checkpoint_io.UnsafeCheckpointError, match='refusing to load'):
    checkpoint_io.load_checkpoint(str(pyth))
  assert not os.path.exists(marker)
