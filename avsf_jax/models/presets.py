"""Named model presets: the SlowFast / AVSlowFast variants of the papers, as data.

`default_model_config()` is the `config.model` section (the fields of `AVSlowFast`) of the
paper's AVSlowFast 4x16 R50. A preset is a clip geometry plus a dict of overrides of that
section (`PRESETS`); `model_config(name, depth)` applies one. Clip geometries (`CLIPS`) hold
T (Slow frames), tau (Slow's raw-frame stride), alpha and the Fast->Slow kernel; the
experiment config stores T and tau once in `input` and alpha once in `model`
(`config_lib.apply_preset`).
"""

from typing import Any

import ml_collections

from avsf_jax.models import resnet
from avsf_jax.models.avslowfast import JUNCTIONS

# T x tau sampling -> the clip geometry and the Fast->Slow lateral kernel that goes with it.
CLIPS = {
  '4x16': {'num_frames': 4, 'tau': 16, 'alpha': 8, 'fusion_kernel': 5},
  '8x8': {'num_frames': 8, 'tau': 8, 'alpha': 4, 'fusion_kernel': 7},
  '16x8': {'num_frames': 16, 'tau': 8, 'alpha': 4, 'fusion_kernel': 7},
}
# Every R101 model of PySlowFast and PyTorchVideo (and the SlowFast paper) uses a Fast->Slow
# kernel of 5, whatever the clip; 7 is for 8x8 R50 only.
R101_FUSION_KERNEL = 5
# PySlowFast's non-local placements in the Slow res4 stage (NONLOCAL.LOCATION) and the
# max-pool of their keys/values (NONLOCAL.POOL: 1x2x2) with its `dot_product` affinity. The
# paper's 234 GFLOPs for 16x8 R101+NL corresponds to a 2x2x2 pool (233.96; ours 242.0 with
# 1x2x2, see docs/models.md).
NONLOCAL_BLOCKS = {50: (1, 3, 5), 101: (6, 13, 20)}
NONLOCAL_POOL = (1, 2, 2)

# Overrides shared by the visual baselines: SlowFast as in its paper, laterals after pool1,
# res2, res3, res4, and nothing audio-visual.
_VISUAL = {
  'lateral_junctions': JUNCTIONS,
  'audio_fusion_junctions': (),
  'avs_junctions': (),
  'drop_pathway_rate': 0.0,
}
# PyTorchVideo's `create_audio_visual_slowfast`: Fast->Slow and Audio->SlowFast at all four
# junctions, the "v2" audio block with time strides on its 1x1 convs, fusion inner width 1/4
# of the audio width, its fixed-window head, and no AVS projections (it has none).
_PTV_AVSLOWFAST = {
  'lateral_junctions': JUNCTIONS,
  'audio_fusion_junctions': JUNCTIONS,
  'audio_block': 'v2',
  'audio_time_stride_in_a': True,
  'audio_fusion_inner': 0,
  'audio_fusion_inner_ratio': 0.25,
  'avs_junctions': (),
  'head_pooling': 'window',
  'head_position_average': 'logits',
  'temporal_kernel_blocks': 'all',
}
# Paper 000's R101 figure (129 GFLOPs for 8x8) needs temporal kernels in every res4 block;
# SlowFast R101's (106) needs PySlowFast's 6 of 23. See docs/models.md.
_AVSLOWFAST = {'temporal_kernel_blocks': 'all'}

# name -> (clip geometry, overrides of default_model_config()). 'all' temporal-kernel blocks
# means every block of every stage at the preset's depth; 'nonlocal_blocks': 'paper' means
# NONLOCAL_BLOCKS at that depth.
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
  'avslowfast_4x16': ('4x16', _AVSLOWFAST),
  'avslowfast_8x8': ('8x8', _AVSLOWFAST),
  'avslowfast_16x8': ('16x8', _AVSLOWFAST),
  'avslowfast_8x8_ptv': ('8x8', _PTV_AVSLOWFAST),
  'slowfast_4x16': ('4x16', {**_VISUAL, 'pathways': ('slow', 'fast')}),
  'slowfast_8x8': ('8x8', {**_VISUAL, 'pathways': ('slow', 'fast')}),
  'slowfast_16x8': ('16x8', {**_VISUAL, 'pathways': ('slow', 'fast')}),
  'slowfast_16x8_nl': (
    '16x8',
    {
      **_VISUAL,
      'pathways': ('slow', 'fast'),
      'nonlocal_blocks': 'paper',
      'nonlocal_pool': NONLOCAL_POOL,
    },
  ),
  'slow_only_4x16': ('4x16', {**_VISUAL, 'pathways': ('slow',)}),
  'slow_only_8x8': ('8x8', {**_VISUAL, 'pathways': ('slow',)}),
  'fast_only_4x16': ('4x16', {**_VISUAL, 'pathways': ('fast',)}),
  # The full-width (beta_A = 1) Audio pathway of paper 000 Table A.3, over 4x16's clip span.
  'audio_only': ('4x16', {**_VISUAL, 'pathways': ('audio',), 'audio_width_ratio': 1.0}),
}


def default_model_config() -> ml_collections.ConfigDict:
  """AVSlowFast 4x16 R50 as the paper defines it (A->FS at res3, res4 + pool5 concat).

  Fast->Slow laterals join only where audio does (res3, res4), as in the authors' released
  config: this layout reproduces the paper's GFLOPs (Table 6: 39.8); PyTorchVideo's layout
  (both at all four junctions) is `lateral_junctions = audio_fusion_junctions = JUNCTIONS`.
  """
  return ml_collections.ConfigDict(
    {
      'num_classes': 400,
      'pathways': ('slow', 'fast', 'audio'),
      'depth': 50,
      'slow_width': 64,
      'beta_inv': 8,
      'alpha': 8,
      'fusion_kernel': 5,
      'fusion_channel_ratio': 2,
      'lateral': 'time_strided_conv',
      'lateral_junctions': ('res3', 'res4'),
      'slow_temporal_kernels': (1, 1, 1, 3, 3),
      'fast_temporal_kernels': (5, 3, 3, 3, 3),
      'temporal_kernel_blocks': (3, 4, 6, 3),
      'audio_width_ratio': 0.5,
      'audio_block': 'v1',
      'audio_time_stride_in_a': False,
      'audio_fusion': 'a_fs',
      'audio_fusion_junctions': ('res3', 'res4'),
      'audio_fusion_kernel': 5,
      'audio_fusion_inner': 64,
      'audio_fusion_inner_ratio': 0.25,
      'audio_pool5_concat': True,
      'drop_pathway_rate': 0.8,
      'drop_pathway_mode': 'per_group',  # one draw per BN group of clips (the authors' code)
      'drop_pathway_scope': 'laterals',
      'avs_junctions': ('res3', 'res4', 'pool5'),
      'avs_dim': 64,
      'avs_inputs': 'fusion',  # the authors' AVS inputs (fusion convs, loss-only pool5 fusion)
      'nonlocal_blocks': (),
      'nonlocal_pool': (1, 2, 2),
      'nonlocal_instantiation': 'dot_product',
      'bn_group_size': 8,
      'bn_momentum': 0.9,
      'bn_epsilon': 1e-5,
      'dropout_rate': 0.5,
      'head_pooling': 'global',
      'head_window': (7, 7),
      'head_position_average': 'softmax',  # window head: softmax per position, then the mean
      'conv_lowering': 'auto',
      'dtype': 'float32',
    }
  )


def clip_of(preset: str) -> dict[str, int]:
  """The clip geometry of a preset: num_frames (T), tau, alpha, fusion_kernel."""
  _check(preset)
  return dict(CLIPS[PRESETS[preset][0]])


def model_config(preset: str, depth: int = 50) -> ml_collections.ConfigDict:
  """The `model` section of a named preset (see PRESETS) at ResNet `depth`."""
  _check(preset)
  clip, overrides = PRESETS[preset]
  config = default_model_config()
  config.depth = depth
  config.alpha = CLIPS[clip]['alpha']
  config.fusion_kernel = R101_FUSION_KERNEL if depth == 101 else CLIPS[clip]['fusion_kernel']
  for key, value in overrides.items():
    if key == 'temporal_kernel_blocks' and value == 'all':
      value = resnet.STAGE_DEPTHS[depth]
    elif key == 'nonlocal_blocks' and value == 'paper':
      value = NONLOCAL_BLOCKS[depth]
    config[key] = value
  return config


def _check(preset: str) -> None:
  if preset not in PRESETS:
    raise ValueError(f'unknown model preset {preset!r}; known presets: {sorted(PRESETS)}')
