"""`interop/ava_convert.py`: a PySlowFast AVA checkpoint (the zoo's SLOWFAST_32x2_R101_50_50
layout, a synthetic state dict with PySlowFast's key names) onto the detector of the named
config `configs/ava.py:slowfast_32x2_r101_50_50`, shapes only traced (no model is run)."""

import flax.traverse_util
import numpy as np
import pytest

from avsf_jax.interop import ava_convert, convert
from tests import helpers

BN = ('weight', 'bias', 'running_mean', 'running_var')


def _pyslowfast_keys(blocks=(3, 4, 23, 3), nonlocal_blocks=(6, 13, 20)) -> list[str]:
  """PySlowFast's parameter names of a SlowFast R101 + NL AVA model, written from its
  `SlowFast` builder (stems `s1`, stages `s2`..`s5` per pathway, Fast->Slow fusions
  `s1_fuse`..`s4_fuse`, non-local blocks in Slow res4, `head.projection`)."""
  keys = []
  for p in (0, 1):
    keys += [f's1.pathway{p}_stem.conv.weight'] + [f's1.pathway{p}_stem.bn.{b}' for b in BN]
    for stage, count in zip((2, 3, 4, 5), blocks, strict=True):
      for i in range(count):
        base = f's{stage}.pathway{p}_res{i}'
        for part in ('a', 'b', 'c') + (('1',) if i == 0 else ()):
          branch = 'branch1' if part == '1' else f'branch2.{part}'
          keys += [f'{base}.{branch}.weight'] + [f'{base}.{branch}_bn.{b}' for b in BN]
  for fuse in range(1, 5):
    keys += [f's{fuse}_fuse.conv_f2s.weight'] + [f's{fuse}_fuse.bn.{b}' for b in BN]
  for i in nonlocal_blocks:
    base = f's4.pathway0_nonlocal{i}'
    for conv in ('theta', 'phi', 'g', 'out'):
      keys += [f'{base}.conv_{conv}.weight', f'{base}.conv_{conv}.bias']
    keys += [f'{base}.bn.{b}' for b in BN]
  return keys + ['head.projection.weight', 'head.projection.bias']


def _torch_shape(shape):
  if len(shape) == 2:  # Linear (O, I)
    return shape[::-1]
  if len(shape) == 5:  # Conv3d (O, I, t, h, w)
    return (shape[4], shape[3], *shape[:3])
  return shape


@pytest.mark.slow
def test_slowfast_32x2_r101_50_50_state_dict_converts_onto_the_detector():
  config = helpers.load_config('configs/ava.py:slowfast_32x2_r101_50_50')
  assert config.model.roi_aligned is False and config.model.num_classes == 80
  flat = flax.traverse_util.flatten_dict(ava_convert.abstract_detector_variables(config))
  name_map = ava_convert.pyslowfast_detector_name_map(None)
  ours = {name_map(path): path for path in flat}
  keys = _pyslowfast_keys()
  assert sorted(ours) == sorted(keys)  # one tensor of ours for every PySlowFast name
  head = ours['head.projection.weight']
  assert head == ('params', 'head', 'projection', 'kernel') and flat[head].shape == (2304, 80)
  # Constant views for the 60M backbone values; random values where the mapping is checked.
  state = {k: np.broadcast_to(np.float32(0.5), _torch_shape(flat[ours[k]].shape)) for k in keys}
  rng = np.random.default_rng(0)
  checked = ('head.projection.weight', 'head.projection.bias', 's5.pathway1_res2.branch2.b.weight')
  for k in checked:
    state[k] = rng.standard_normal(state[k].shape).astype(np.float32)
  state['s1.pathway0_stem.bn.num_batches_tracked'] = np.array(7)  # ignored, as PySlowFast's
  variables, report = ava_convert.convert_detector(config, state)
  assert report.complete and report.converted == len(flat)
  out = flax.traverse_util.flatten_dict(variables)
  np.testing.assert_array_equal(out[head], state['head.projection.weight'].T)
  np.testing.assert_array_equal(out[ours['head.projection.bias']], state['head.projection.bias'])
  conv = state['s5.pathway1_res2.branch2.b.weight']  # the dilated 1x3x3 of Fast res5
  assert conv.shape[2:] == (1, 3, 3)
  np.testing.assert_array_equal(
    out[ours['s5.pathway1_res2.branch2.b.weight']], conv.transpose(2, 3, 4, 1, 0)
  )
  del state['head.projection.bias']
  with pytest.raises(convert.ConversionError, match='head/projection/bias'):
    ava_convert.convert_detector(config, state)


@pytest.mark.slow
def test_convert_checkpoint_routes_a_detection_config_to_the_detector(tmp_path):
  """`tools.convert_checkpoint` with a detection config (`configs/ava.py:demo`: depth 14, no
  NL) converts a PySlowFast AVA `.pyth` through `ava_convert` (the RoI head's projection
  included), refuses a source without a detector mapping naming the file, lists a missing
  tensor, keeps it at its initial value with `allow_partial`, and writes an export."""
  import torch  # noqa: PLC0415

  from avsf_jax import export  # noqa: PLC0415
  from avsf_jax.tools import convert_checkpoint  # noqa: PLC0415

  config = helpers.load_config('configs/ava.py:demo')
  flat = flax.traverse_util.flatten_dict(ava_convert.abstract_detector_variables(config))
  name_map = ava_convert.pyslowfast_detector_name_map(None)
  ours = {name_map(path): path for path in flat}
  keys = _pyslowfast_keys(blocks=(1, 1, 1, 1), nonlocal_blocks=())
  assert sorted(ours) == sorted(keys)
  rng = np.random.default_rng(1)
  state = {
    k: rng.standard_normal(_torch_shape(flat[ours[k]].shape)).astype(np.float32) for k in keys
  }
  path = tmp_path / 'ava.pyth'
  torch.save({'model_state': {k: torch.from_numpy(v) for k, v in state.items()}}, path)
  variables, report = convert_checkpoint.convert_file(config, 'pyslowfast', str(path))
  assert report.complete and report.converted == len(flat)
  out = flax.traverse_util.flatten_dict(variables)
  head = ('params', 'head', 'projection', 'kernel')
  assert out[head].shape == (288, 80)  # 256 slow + 32 fast channels at res5
  np.testing.assert_array_equal(out[head], state['head.projection.weight'].T)
  stem = ours['s1.pathway1_stem.conv.weight']
  np.testing.assert_array_equal(
    out[stem], state['s1.pathway1_stem.conv.weight'].transpose(2, 3, 4, 1, 0)
  )
  mean = ours['s5.pathway0_res0.branch2.c_bn.running_mean']
  np.testing.assert_array_equal(out[mean], state['s5.pathway0_res0.branch2.c_bn.running_mean'])

  with pytest.raises(convert.ConversionError, match=r'ava\.pyth: --source=pytorchvideo'):
    convert_checkpoint.convert_file(config, 'pytorchvideo', str(path))
  partial = tmp_path / 'partial.pyth'
  torch.save(
    {k: torch.from_numpy(v) for k, v in state.items() if k != 'head.projection.bias'}, partial
  )
  with pytest.raises(convert.ConversionError, match=r'(?s)partial\.pyth: .*head/projection/bias'):
    convert_checkpoint.convert_file(config, 'pyslowfast', str(partial))
  kept, report = convert_checkpoint.convert_file(
    config, 'pyslowfast', str(partial), allow_partial=True
  )
  assert not report.complete and report.converted == len(flat) - 1
  kept = flax.traverse_util.flatten_dict(kept)
  np.testing.assert_array_equal(kept[('params', 'head', 'projection', 'bias')], np.zeros(80))
  np.testing.assert_array_equal(kept[head], out[head])

  written = export.write_from_config(
    tmp_path / 'export', config, variables, [f'class_{i}' for i in range(80)]
  )
  loaded = export.load(written)
  assert loaded.input_spec['boxes'] == [config.detection.max_boxes, 4]
  np.testing.assert_array_equal(
    loaded.variables['params']['head']['projection']['kernel'], out[head]
  )
