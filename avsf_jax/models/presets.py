"""Named model presets: the SlowFast / AVSlowFast variants of the papers, as `model` configs.

A preset is data: `model_config(name, depth)` returns the `config.model` section (the
fields of `AVSlowFast`), and `CLIPS` the clip geometry (T, tau, alpha) that goes with it.
"""

import ml_collections

from avsf_jax.models import resnet
from avsf_jax.models.avslowfast import JUNCTIONS

# T x tau sampling -> (T slow frames, tau raw-frame stride of Slow, alpha, Fast->Slow kernel).
CLIPS = {
  '4x16': (4, 16, 8, 5),
  '8x8': (8, 8, 4, 7),
  '16x8': (16, 8, 4, 7),
}
# PySlowFast's non-local placements in the Slow res4 stage (NONLOCAL.LOCATION) and the
# max-pool of their keys/values; (2, 2, 2) reproduces SlowFast 16x8 R101+NL's 234 GFLOPs.
NONLOCAL_BLOCKS = {50: (1, 3, 5), 101: (6, 13, 20)}
NONLOCAL_POOL = (2, 2, 2)

PRESETS = (
  'avslowfast_4x16',
  'avslowfast_8x8',
  'avslowfast_16x8',
  'avslowfast_8x8_ptv',
  'slowfast_4x16',
  'slowfast_8x8',
  'slowfast_16x8',
  'slowfast_16x8_nl',
  'slow_only_4x16',
  'slow_only_8x8',
  'fast_only_4x16',
  'audio_only',
)


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
      'drop_pathway_mode': 'global',
      'drop_pathway_scope': 'laterals',
      'avs_junctions': ('res3', 'res4', 'pool5'),
      'avs_dim': 64,
      'nonlocal_blocks': (),
      'nonlocal_pool': (1, 2, 2),
      'bn_group_size': 8,
      'bn_momentum': 0.9,
      'bn_epsilon': 1e-5,
      'dropout_rate': 0.5,
      'head_pooling': 'global',
      'head_window': (7, 7),
      'dtype': 'float32',
    }
  )


def model_config(preset: str, depth: int = 50) -> ml_collections.ConfigDict:
  """The `model` section of a named preset (see PRESETS) at ResNet `depth`."""
  if preset not in PRESETS:
    raise ValueError(f'unknown model preset {preset!r}; known presets: {PRESETS}')
  config = default_model_config()
  config.depth = depth
  _, _, config.alpha, config.fusion_kernel = clip_of(preset)
  if preset.endswith('_ptv'):
    # PyTorchVideo's `create_audio_visual_slowfast`: Fast->Slow and Audio->SlowFast at all four
    # junctions, the "v2" audio block with time strides on its 1x1 convs, fusion inner
    # width 1/4 of the audio width, its
    # fixed-window head, and no AVS projections (it has none).
    config.lateral_junctions = JUNCTIONS
    config.audio_fusion_junctions = JUNCTIONS
    config.audio_block = 'v2'
    config.audio_time_stride_in_a = True
    config.audio_fusion_inner = 0
    config.audio_fusion_inner_ratio = 0.25
    config.avs_junctions = ()
    config.head_pooling = 'window'
    config.temporal_kernel_blocks = resnet.STAGE_DEPTHS[depth]
    return config
  if preset.startswith('avslowfast'):
    # Paper 000's R101 figure (129 GFLOPs for 8x8) needs temporal kernels in every res4
    # block; SlowFast R101's (106) needs PySlowFast's 6 of 23. See docs/models.md.
    config.temporal_kernel_blocks = resnet.STAGE_DEPTHS[depth]
    return config
  # Visual baselines: SlowFast as in its paper, laterals after pool1, res2, res3, res4.
  config.lateral_junctions = JUNCTIONS
  config.audio_fusion_junctions = ()
  config.avs_junctions = ()
  config.drop_pathway_rate = 0.0
  if preset.startswith('slowfast'):
    config.pathways = ('slow', 'fast')
    if preset.endswith('_nl'):
      config.nonlocal_blocks = NONLOCAL_BLOCKS[depth]
      config.nonlocal_pool = NONLOCAL_POOL
  elif preset.startswith('slow_only'):
    config.pathways = ('slow',)
  elif preset.startswith('fast_only'):
    config.pathways = ('fast',)
  else:  # audio_only: the full-width (beta_A = 1) Audio pathway of paper 000 Table A.3.
    config.pathways = ('audio',)
    config.audio_width_ratio = 1.0
  return config


def clip_of(preset: str) -> tuple[int, int, int, int]:
  """(T, tau, alpha, fusion kernel) of a preset; audio_only uses 4x16's clip span."""
  for clip in CLIPS:
    if f'_{clip}' in preset:
      return CLIPS[clip]
  return CLIPS['4x16']
