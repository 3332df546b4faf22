"""Maps foreign SlowFast-family checkpoints onto `AVSlowFast` variables.

Each source format is a *name map*: a function from one of our variable paths (for example
`('params', 'slow_res2', 'block0', 'conv_a', 'conv', 'kernel')`) to the source tensor's name
(`blocks.1.multipathway_blocks.0.res_blocks.0.branch2.conv_a.weight` in PyTorchVideo). The
layout change follows from the two shapes (PyTorch conv `(O, I, t, h, w)` -> ours
`(t, h, w, I, O)`; audio convs drop PyTorchVideo's singleton axis; FC `(O, I)` -> `(I, O)`).
Every variable of ours must find a tensor of the right shape and every source tensor must be
used, or the conversion fails listing each offender by name (unless `allow_partial`).
"""

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import flax.traverse_util
import numpy as np

Path = tuple[str, ...]
NameMap = Callable[[Path], str | None]

PATHWAY_INDEX = {'slow': 0, 'fast': 1, 'audio': 2}
STAGE_NUMBER = {'res2': 2, 'res3': 3, 'res4': 4, 'res5': 5}
JUNCTION_INDEX = {'pool1': 0, 'res2': 1, 'res3': 2, 'res4': 3}
_IGNORED_SOURCE = re.compile(r'(num_batches_tracked|_momentum|lr|iter)$')


class ConversionError(ValueError):
  """Missing, unexpected or mis-shaped tensors; the message lists every one by name."""


@dataclasses.dataclass
class ConversionReport:
  converted: int = 0
  missing: list[str] = dataclasses.field(default_factory=list)
  unexpected: list[str] = dataclasses.field(default_factory=list)
  mismatched: list[str] = dataclasses.field(default_factory=list)

  @property
  def complete(self) -> bool:
    return not (self.missing or self.unexpected or self.mismatched)

  def summary(self) -> str:
    lines = [f'{self.converted} tensors converted']
    for title, names in (
      ('missing (ours, no source tensor)', self.missing),
      ('unexpected (source, unused)', self.unexpected),
      ('mis-shaped', self.mismatched),
    ):
      if names:
        lines.append(f'{len(names)} {title}:')
        lines.extend(f'  {n}' for n in names)
    return '\n'.join(lines)


def _leaf_name(collection: str, leaf: str) -> str:
  if collection == 'batch_stats':
    return {'mean': 'running_mean', 'var': 'running_var'}[leaf]
  return {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias'}[leaf]


def _module_path(path: Path) -> Path:
  """Our module path without the collection, the leaf and `Conv`'s inner 'conv'."""
  module = path[1:-1]
  return module[:-1] if module and module[-1] == 'conv' else module


def to_our_layout(source: np.ndarray, target_shape: tuple[int, ...]) -> np.ndarray:
  """PyTorch/Caffe2 layouts -> ours, decided by the two ranks."""
  s = np.asarray(source, np.float32)
  rank = len(target_shape)
  if rank == 1:
    return s.reshape(-1) if s.size == int(np.prod(target_shape)) else s
  if rank == 2 and s.ndim == 2:  # Linear (O, I) -> (I, O)
    return s.T
  if s.ndim == 5 and rank in (3, 4):  # PyTorchVideo audio Conv3d over (T, 1, F)
    s = s[:, :, :, 0, :] if rank == 4 else s[:, :, :, 0, 0]
  if s.ndim == rank:  # conv (O, I, *k) -> (*k, I, O)
    return np.transpose(s, (*range(2, rank), 1, 0))
  return s


def convert(
  abstract_variables: Mapping[str, Any],
  state: Mapping[str, np.ndarray],
  name_map: NameMap,
  *,
  fallback: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], ConversionReport]:
  """Builds variables shaped like `abstract_variables` from `state` through `name_map`.

  Variables without a (well-shaped) source take their value from `fallback` when given
  (a real `model.init`), which is what `allow_partial` conversions use.
  """
  report = ConversionReport()
  flat_target = flax.traverse_util.flatten_dict(dict(abstract_variables))
  flat_fallback = flax.traverse_util.flatten_dict(dict(fallback)) if fallback else {}
  used: set[str] = set()
  out: dict[Path, np.ndarray] = {}
  for path, leaf in sorted(flat_target.items()):
    shape = tuple(leaf.shape)
    ours = '/'.join(path)
    source_name = name_map(path)
    if source_name is None or source_name not in state:
      report.missing.append(f'{ours} (looked for {source_name})')
    else:
      used.add(source_name)
      value = to_our_layout(state[source_name], shape)
      if value.shape == shape:
        out[path] = value
        report.converted += 1
        continue
      report.mismatched.append(
        f'{ours} {shape} <- {source_name} {tuple(np.shape(state[source_name]))}'
      )
    if path in flat_fallback:
      out[path] = np.asarray(flat_fallback[path])
  report.unexpected = sorted(k for k in state if k not in used and not _IGNORED_SOURCE.search(k))
  return flax.traverse_util.unflatten_dict(out), report


# -- PyTorchVideo ----------------------------------------------------------------------------

_PTV_BLOCK_PARTS = {
  'conv_a': 'branch2.conv_a',
  'bn_a': 'branch2.norm_a',
  'conv_b': 'branch2.conv_b',
  'bn_b': 'branch2.norm_b',
  'conv_c': 'branch2.conv_c',
  'bn_c': 'branch2.norm_c',
  'shortcut': 'branch1_conv',
  'shortcut_bn': 'branch1_norm',
  # The acoustic bottleneck's conv_b is a ModuleList [frequency (1x1x3), time (3x1x1)].
  'conv_b_freq': 'branch2.conv_b.0',
  'bn_b_freq': 'branch2.norm_b.0',
  'conv_b_time': 'branch2.conv_b.1',
  'bn_b_time': 'branch2.norm_b.1',
}


def pytorchvideo_name_map(state_keys) -> NameMap:
  """`create_slowfast` / `create_audio_visual_slowfast` / `create_resnet` state-dict names.

  `create_resnet` (the hub's `slow_r50`) has one pathway and no `multipathway_blocks`
  level: its stem is `blocks.0.{conv,norm}` and its stages `blocks.<n>.res_blocks...`.
  """
  keys = list(state_keys)
  heads = [m.group(1) for k in keys if (m := re.fullmatch(r'blocks\.(\d+)\.proj\.weight', k))]
  head_block = heads[0] if heads else 'HEAD'
  audiovisual = any('block_fast_to_slow' in k for k in keys)
  single_pathway = not any('multipathway_blocks' in k for k in keys)

  def module(mod: Path) -> str | None:
    top = mod[0]
    if single_pathway:
      if m := re.fullmatch(r'(slow|fast)_stem(_bn)?', top):
        return 'blocks.0.norm' if m.group(2) else 'blocks.0.conv'
      if (m := re.fullmatch(r'(slow|fast)_(res[2-5])', top)) and len(mod) == 3:
        block = int(mod[1].removeprefix('block'))
        stage = STAGE_NUMBER[m.group(2)] - 1
        return f'blocks.{stage}.res_blocks.{block}.{_PTV_BLOCK_PARTS[mod[2]]}'
      return f'blocks.{head_block}.proj' if mod == ('head', 'fc') else None
    if m := re.fullmatch(r'(slow|fast|audio)_stem(_bn|_time|_freq)?', top):
      base = f'blocks.0.multipathway_blocks.{PATHWAY_INDEX[m.group(1)]}'
      return {
        None: f'{base}.conv',
        '_bn': f'{base}.norm',
        '_time': f'{base}.conv.convs.0',
        '_freq': f'{base}.conv.convs.1',
      }[m.group(2)]
    if (m := re.fullmatch(r'(slow|fast|audio)_(res[2-5])', top)) and len(mod) == 3:
      block = int(mod[1].removeprefix('block'))
      stage = STAGE_NUMBER[m.group(2)] - 1
      return (
        f'blocks.{stage}.multipathway_blocks.{PATHWAY_INDEX[m.group(1)]}'
        f'.res_blocks.{block}.{_PTV_BLOCK_PARTS[mod[2]]}'
      )
    if m := re.fullmatch(r'fast_to_slow_(\w+)', top):
      base = f'blocks.{JUNCTION_INDEX[m.group(1)]}.multipathway_fusion'
      if audiovisual:
        return f'{base}.block_fast_to_slow.' + {'conv': '0', 'bn': '1'}[mod[1]]
      return f'{base}.' + {'conv': 'conv_fast_to_slow', 'bn': 'norm'}[mod[1]]
    if m := re.fullmatch(r'audio_to_slowfast_(\w+)', top):
      base = f'blocks.{JUNCTION_INDEX[m.group(1)]}.multipathway_fusion.block_audio_to_fastslow'
      return f'{base}.' + {'conv_a': '0', 'bn_a': '1', 'conv_b': '3', 'bn_b': '4'}[mod[1]]
    if mod == ('head', 'fc'):
      return f'blocks.{head_block}.proj'
    return None

  return _with_leaf(module)


# -- PySlowFast ------------------------------------------------------------------------------

_PYSLOWFAST_BLOCK_PARTS = {
  'conv_a': 'branch2.a',
  'bn_a': 'branch2.a_bn',
  'conv_b': 'branch2.b',
  'bn_b': 'branch2.b_bn',
  'conv_c': 'branch2.c',
  'bn_c': 'branch2.c_bn',
  'shortcut': 'branch1',
  'shortcut_bn': 'branch1_bn',
}
_PYSLOWFAST_NONLOCAL_PARTS = {
  'theta': 'conv_theta',
  'phi': 'conv_phi',
  'g': 'conv_g',
  'out': 'conv_out',
  'bn': 'bn',
}


def pyslowfast_name_map(state_keys) -> NameMap:
  """PySlowFast `SlowFast` / `ResNet` (Slow-only) names: `s2.pathway0_res0.branch2.a` etc."""
  del state_keys

  def module(mod: Path) -> str | None:
    top = mod[0]
    if m := re.fullmatch(r'(slow|fast)_stem(_bn)?', top):
      return f's1.pathway{PATHWAY_INDEX[m.group(1)]}_stem.' + ('bn' if m.group(2) else 'conv')
    if m := re.fullmatch(r'(slow|fast)_(res[2-5])', top):
      base = f's{STAGE_NUMBER[m.group(2)]}.pathway{PATHWAY_INDEX[m.group(1)]}'
      if mod[1].startswith('nonlocal'):
        return f'{base}_{mod[1]}.{_PYSLOWFAST_NONLOCAL_PARTS[mod[2]]}'
      block = int(mod[1].removeprefix('block'))
      return f'{base}_res{block}.{_PYSLOWFAST_BLOCK_PARTS[mod[2]]}'
    if m := re.fullmatch(r'fast_to_slow_(\w+)', top):
      return f's{JUNCTION_INDEX[m.group(1)] + 1}_fuse.' + {'conv': 'conv_f2s', 'bn': 'bn'}[mod[1]]
    if mod == ('head', 'fc'):
      return 'head.projection'
    return None

  return _with_leaf(module)


# -- Caffe2 (the original SlowFast release's blob names) -------------------------------------

_C2_SUFFIX = {
  'bn_s': 'bn.weight',
  'bn_b': 'bn.bias',
  'bn_rm': 'bn.running_mean',
  'bn_riv': 'bn.running_var',
  'w': 'weight',
  'b': 'bias',
}


def caffe2_to_pyslowfast(blob_name: str) -> str | None:
  """Caffe2 blob name -> PySlowFast parameter name (None for blobs that hold no weights).

  The scheme of the Caffe2 SlowFast release (as PySlowFast's converter reads it): Slow blobs
  are bare, Fast blobs carry a `t_` prefix; `conv1` / `res_conv1_bn` is the stem;
  `res{stage}_{block}_branch{1,2a,2b,2c}` the bottlenecks; `t_pool1_subsample` and
  `t_res{stage}_{last}_branch2c_bn_subsample` the Fast->Slow laterals after pool1 and
  res{stage}; `nonlocal_conv{stage}_{block}_{theta,phi,g,out,bn}` the non-local blocks;
  `pred` the classifier. Suffixes: `_w`, `_b`, `_bn_s`, `_bn_b`, `_bn_rm`, `_bn_riv`.
  """
  m = re.fullmatch(r'(.*?)_(bn_s|bn_b|bn_rm|bn_riv|w|b)', blob_name)
  if not m:
    return None
  body, suffix = m.groups()
  leaf = _C2_SUFFIX[suffix]
  bn = suffix.startswith('bn_')
  param = leaf.removeprefix('bn.')
  if m2 := re.fullmatch(r'(t_)?pool1_subsample', body):
    return f's1_fuse.{"bn" if bn else "conv_f2s"}.{param}' if m2.group(1) else None
  if m2 := re.fullmatch(r't_res(\d)_\d+_branch2c_bn_subsample', body):
    return f's{m2.group(1)}_fuse.{"bn" if bn else "conv_f2s"}.{param}'
  if m2 := re.fullmatch(r'(t_)?(res_conv1|conv1)', body):
    pathway = 1 if m2.group(1) else 0
    return f's1.pathway{pathway}_stem.{"bn" if bn else "conv"}.{param}'
  if m2 := re.fullmatch(r'(t_)?res(\d)_(\d+)_branch(1|2a|2b|2c)', body):
    pathway = 1 if m2.group(1) else 0
    branch = {'1': 'branch1', '2a': 'branch2.a', '2b': 'branch2.b', '2c': 'branch2.c'}[m2.group(4)]
    part = f'{branch}_bn' if bn else branch
    return f's{m2.group(2)}.pathway{pathway}_res{m2.group(3)}.{part}.{param}'
  if m2 := re.fullmatch(r'nonlocal_conv(\d)_(\d+)_(theta|phi|g|out)', body):
    return f's{m2.group(1)}.pathway0_nonlocal{m2.group(2)}.conv_{m2.group(3)}.{param}'
  if m2 := re.fullmatch(r'nonlocal_conv(\d)_(\d+)', body):
    return f's{m2.group(1)}.pathway0_nonlocal{m2.group(2)}.bn.{param}' if bn else None
  if body == 'pred':
    return f'head.projection.{param}'
  return None


def caffe2_state(blobs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Renames Caffe2 blobs to PySlowFast names; blobs that name no weight are dropped."""
  state = {}
  for name, value in blobs.items():
    target = caffe2_to_pyslowfast(name)
    if target is not None:
      state[target] = value
  return state


def _with_leaf(module: Callable[[Path], str | None]) -> NameMap:
  def name_map(path: Path) -> str | None:
    try:
      prefix = module(_module_path(path))
    except (KeyError, ValueError, IndexError):
      return None
    return None if prefix is None else f'{prefix}.{_leaf_name(path[0], path[-1])}'

  return name_map


NAME_MAPS = {
  'pytorchvideo': pytorchvideo_name_map,
  'pyslowfast': pyslowfast_name_map,
  'caffe2': pyslowfast_name_map,  # after `caffe2_state` renaming
}
