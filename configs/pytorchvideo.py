r"""PyTorchVideo model-zoo architectures, for converting their weights and checking parity.

Variants (`--config=configs/pytorchvideo.py:VARIANT`) are named after the
`pytorchvideo.models.hub` entries whose layout they reproduce, at the hub's builder arguments:
  slow_r50                   `create_resnet`, stem 1x7x7, head pool 8x7x7 (Slow 8x8 R50)
  slowfast_r50               `create_slowfast`, 8x8, Fast->Slow kernel 7
  slowfast_r101              `create_slowfast`, 8x8 R101, kernel 5, temporal conv_a in every
                             res4 block (the builder applies one kernel to all blocks)
  slowfast_16x8_r101_50_50   16x8 R101, kernel 5, temporal conv_a in 6 of the 23 res4 blocks
  audio_visual_slowfast      `create_audio_visual_slowfast` (no hub entry; 8x8 R50 defaults)

PyTorchVideo's heads average-pool a fixed window with stride 1 and average the *logits* over
the positions (`output_with_global_average`), so these configs use the window head with
`head_position_average='logits'`; our paper configs average softmax scores (PySlowFast).

  python -m avsf_jax.tools.convert_checkpoint --source=pytorchvideo \
      --config=configs/pytorchvideo.py:slowfast_r101 --checkpoint=SLOWFAST_8x8_R101.pyth ...
"""

from avsf_jax import config_lib
from avsf_jax.models import resnet

# variant -> (preset, depth, Fast->Slow kernel, temporal conv_a blocks per stage)
VARIANTS = {
  'slow_r50': ('slow_only_8x8', 50, 7, resnet.STAGE_DEPTHS[50]),
  'slowfast_r50': ('slowfast_8x8', 50, 7, resnet.STAGE_DEPTHS[50]),
  'slowfast_r101': ('slowfast_8x8', 101, 5, resnet.STAGE_DEPTHS[101]),
  'slowfast_16x8_r101_50_50': ('slowfast_16x8', 101, 5, (3, 4, 6, 3)),
  'audio_visual_slowfast': ('avslowfast_8x8_ptv', 50, 7, resnet.STAGE_DEPTHS[50]),
}


def get_config(arg=None):
  variant = arg or 'slowfast_r50'
  if variant not in VARIANTS:
    raise ValueError(
      f'configs/pytorchvideo.py: unknown variant {variant!r}; one of {sorted(VARIANTS)}'
    )
  preset, depth, kernel, temporal_blocks = VARIANTS[variant]
  config = config_lib.base_config()
  config.input.dataset = 'kinetics400'
  config.model.num_classes = 400
  config_lib.apply_preset(config, preset, depth=depth)
  config.model.fusion_kernel = kernel
  config.model.temporal_kernel_blocks = temporal_blocks
  config.model.head_pooling = 'window'
  config.model.head_window = (7, 7)
  config.model.head_position_average = 'logits'
  if depth == 101:
    config.input.jitter_scales = (256, 340)
  return config
