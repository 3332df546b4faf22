"""torchvision `resnet18` and `r2plus1d_18` state dicts -> Listen to Look's student and teacher.

- `resnet18_trunk`: one `basic_resnet.BasicResNet`'s variables from an (ImageNet) `resnet18`
  state dict (`conv1`, `bn1`, `layer<k>.<i>.conv1/bn1/conv2/bn2/downsample.{0,1}`; `fc` is
  unused). The audio trunk's 1-channel stride-1 conv1 either keeps its N(0, 0.02) init (the
  spec's reading of the official code) or takes the ImageNet kernel averaged over RGB.
- `imgaud_from_resnet18`: both streams of an `imgaud.ImageAudioNet` initialised that way; Psi,
  `freq_conv1x1` and the classifier keep their init.
- `r2plus1d_18`: every variable of `r2plus1d.R2Plus1D` from torchvision's `r2plus1d_18` (the
  Kinetics-400 teacher): `stem.{0,1,3,4}`, `layer<k>.<i>.conv{1,2}.0.{0,1,3}` (spatial conv, its
  BN, temporal conv), `conv{1,2}.1` (the block BNs), `downsample.{0,1}`, `fc`.
Conversions are complete or fail: every variable needs a tensor of the right shape and every
tensor must be used (`convert.ConversionError` lists each offender).
"""

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from avsf_jax.interop import convert

AUDIO_CONV1_INITS = ('init', 'rgb_mean')
_HEAD_KEYS = frozenset({'fc.weight', 'fc.bias'})


def _block_name(module: str) -> str:
  """'layer2_block0' -> 'layer2.0'."""
  m = re.fullmatch(r'(layer\d)_block(\d+)', module)
  if not m:
    raise KeyError(module)
  return f'{m.group(1)}.{m.group(2)}'


def _resnet18_module(mod: tuple[str, ...]) -> str | None:
  if mod in (('conv1',), ('bn1',)):
    return mod[0]
  if len(mod) == 2:
    part = {'downsample': 'downsample.0', 'downsample_bn': 'downsample.1'}.get(mod[1], mod[1])
    return f'{_block_name(mod[0])}.{part}'
  return None


_R2PLUS1D_STEM = {
  'stem_spatial': 'stem.0',
  'stem_spatial_bn': 'stem.1',
  'stem_temporal': 'stem.3',
  'stem_temporal_bn': 'stem.4',
}
_R2PLUS1D_FACTORISED = {'spatial': '0', 'spatial_bn': '1', 'temporal': '3'}


def _r2plus1d_module(mod: tuple[str, ...]) -> str | None:
  if len(mod) == 1:
    return _R2PLUS1D_STEM.get(mod[0], 'fc' if mod[0] == 'fc' else None)
  block = _block_name(mod[0])
  if len(mod) == 3 and mod[1] in ('conv1', 'conv2'):
    return f'{block}.{mod[1]}.0.{_R2PLUS1D_FACTORISED[mod[2]]}'
  if len(mod) == 2:
    part = {
      'bn1': 'conv1.1',
      'bn2': 'conv2.1',
      'downsample': 'downsample.0',
      'downsample_bn': 'downsample.1',
    }[mod[1]]
    return f'{block}.{part}'
  return None


def _numpy_state(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Torch tensors or arrays -> float32 numpy (num_batches_tracked and the like dropped later)."""
  out = {}
  for name, value in state.items():
    if hasattr(value, 'detach'):
      value = value.detach().cpu().numpy()
    out[name] = np.asarray(value)
  return out


def _check(report: convert.ConversionReport, what: str, allowed_unexpected=frozenset()) -> None:
  unexpected = [n for n in report.unexpected if n not in allowed_unexpected]
  if report.missing or report.mismatched or unexpected:
    report.unexpected = unexpected
    raise convert.ConversionError(f'{what}: incomplete conversion\n{report.summary()}')


def resnet18_trunk(
  state: Mapping[str, Any], trunk_variables: Mapping[str, Any], *, conv1: str = 'copy'
) -> dict[str, Any]:
  """A `BasicResNet`'s {'params', 'batch_stats'} from a torchvision `resnet18` state dict.

  Args:
    state: `resnet18().state_dict()` (torch tensors or numpy arrays).
    trunk_variables: the trunk's initialised variables (for shapes, and the conv1 kernel when
      it is not converted).
    conv1: 'copy' (the image stream: the 3-channel kernel as is), 'init' (keep the trunk's
      own conv1 kernel) or 'rgb_mean' (the kernel averaged over its RGB input channels, for a
      1-channel spectrogram input).
  """
  if conv1 not in ('copy', *AUDIO_CONV1_INITS):
    raise ValueError(f"resnet18_trunk: conv1={conv1!r}; one of 'copy', {AUDIO_CONV1_INITS}")
  state = _numpy_state(state)
  allowed = set(_HEAD_KEYS)
  if conv1 == 'rgb_mean':
    state['conv1.weight'] = state['conv1.weight'].mean(axis=1, keepdims=True)
  elif conv1 == 'init':
    allowed.add('conv1.weight')

  def module(mod):
    if conv1 == 'init' and mod == ('conv1',):
      return None
    return _resnet18_module(mod)

  variables = {k: trunk_variables[k] for k in ('params', 'batch_stats')}
  out, report = convert.convert(variables, state, convert._with_leaf(module), fallback=variables)
  if conv1 == 'init':
    report.missing = [m for m in report.missing if not m.startswith('params/conv1/kernel')]
  _check(report, 'resnet18 -> BasicResNet', frozenset(allowed))
  return out


def imgaud_from_resnet18(
  variables: Mapping[str, Any], state: Mapping[str, Any], *, audio_conv1: str = 'init'
) -> dict[str, Any]:
  """An `ImageAudioNet`'s variables with each stream's trunk taken from ImageNet `resnet18`.

  `audio_conv1` is 'init' (N(0, 0.02), the spec's reading of the official code) or
  'rgb_mean'. Everything outside the trunks (freq_conv1x1, Psi, classifier) is unchanged.
  """
  if audio_conv1 not in AUDIO_CONV1_INITS:
    raise ValueError(
      f'imgaud_from_resnet18: audio_conv1={audio_conv1!r}; one of {AUDIO_CONV1_INITS}'
    )
  out = {k: dict(v) for k, v in variables.items()}
  streams = [s for s in ('image_stream', 'audio_stream') if s in variables['params']]
  if not streams:
    raise ValueError(
      'imgaud_from_resnet18: the variables hold neither image_stream nor audio_stream'
    )
  for stream in streams:
    trunk = {c: variables[c][stream]['trunk'] for c in ('params', 'batch_stats')}
    converted = resnet18_trunk(
      state, trunk, conv1='copy' if stream == 'image_stream' else audio_conv1
    )
    for c in ('params', 'batch_stats'):
      out[c][stream] = {**variables[c][stream], 'trunk': converted[c]}
  return out


def r2plus1d_18(state: Mapping[str, Any], abstract_variables: Mapping[str, Any]) -> dict[str, Any]:
  """Every {'params', 'batch_stats'} variable of `R2Plus1D` from torchvision's `r2plus1d_18`."""
  variables = {k: abstract_variables[k] for k in ('params', 'batch_stats')}
  out, report = convert.convert(
    variables, _numpy_state(state), convert._with_leaf(_r2plus1d_module)
  )
  _check(report, 'r2plus1d_18 -> R2Plus1D')
  return out
