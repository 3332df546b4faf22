r"""PySlowFast model-zoo models (Kinetics-400, `configs/Kinetics/c2/*.yaml`), architecture and
recipe, for converting their weights and for training them as their authors did.

Variants (`--config=configs/pyslowfast.py:VARIANT`), named after the PySlowFast configs:
  SLOWFAST_8x8_R101              SLOWFAST_8x8_R101_101_101: temporal conv_a in all 23 res4
                                 blocks (NUM_BLOCK_TEMP_KERNEL [23, 23]), lateral kernel 5
  SLOWFAST_16x8_R101_50_50       temporal conv_a in 6 of the 23 res4 blocks, kernel 5
  SLOWFAST_NLN_16x8_R101_50_50   the same + non-local after res4 blocks 6, 13, 20 of Slow,
                                 `dot_product` instantiation, 1x2x2 max-pooled keys/values

Recipe (the yaml files and `slowfast/config/defaults.py`): SGD momentum 0.9 with Nesterov,
weight decay 1e-4 on every parameter (ZERO_WD_1D_PARAM False), BASE_LR 0.1 for 64 clips (8
GPUs x 8), one cosine over MAX_EPOCH 196 with 34 warm-up epochs from 0.01 (0.1 of the peak),
test: 10 temporal views starting at delta * i / 10, 3 crops of 256, softmax per head position
averaged, then over views. PySlowFast's 16x8 and NL models are trained from scratch by these
yaml files; the SlowFast paper starts them from their 8x8 / non-NL counterparts (see
configs/kinetics_r101.py).

  python -m avsf_jax.tools.convert_checkpoint --source=pyslowfast \
      --config=configs/pyslowfast.py:SLOWFAST_8x8_R101 --checkpoint=SLOWFAST_8x8_R101.pkl ...
"""

from avsf_jax import config_lib
from avsf_jax.models import resnet

# variant -> (preset, temporal conv_a blocks per stage, non-local after Slow res4 blocks)
VARIANTS = {
  'SLOWFAST_8x8_R101': ('slowfast_8x8', resnet.STAGE_DEPTHS[101], ()),
  'SLOWFAST_16x8_R101_50_50': ('slowfast_16x8', (3, 4, 6, 3), ()),
  'SLOWFAST_NLN_16x8_R101_50_50': ('slowfast_16x8', (3, 4, 6, 3), (6, 13, 20)),
}


def get_config(arg=None):
  variant = arg or 'SLOWFAST_8x8_R101'
  if variant not in VARIANTS:
    raise ValueError(
      f'configs/pyslowfast.py: unknown variant {variant!r}; one of {sorted(VARIANTS)}'
    )
  preset, temporal_blocks, nonlocal_blocks = VARIANTS[variant]
  config = config_lib.base_config()
  config.input.dataset = 'kinetics400'
  config.model.num_classes = 400
  config_lib.apply_preset(config, preset, depth=101)
  config.model.fusion_kernel = 5
  config.model.temporal_kernel_blocks = temporal_blocks
  config.model.nonlocal_blocks = nonlocal_blocks
  config.model.nonlocal_pool = (1, 2, 2)
  config.model.nonlocal_instantiation = 'dot_product'
  config.model.head_pooling = 'window'
  config.model.head_window = (7, 7)
  config.model.head_position_average = 'softmax'
  config.input.jitter_scales = (256, 320)
  config.input.view_starts = 'pyslowfast'
  optim = config.optim
  optim.base_lr, optim.base_batch_size = 0.1, 64
  optim.num_epochs, optim.warmup_epochs, optim.warmup_start_factor = 196.0, 34.0, 0.1
  optim.schedule, optim.end_factor = 'cosine', 0.0
  optim.momentum, optim.nesterov = 0.9, True
  optim.weight_decay, optim.decay_norm_and_bias = 1e-4, True
  return config
