r"""Kinetics-400, ResNet-101: AVSlowFast 8x8 and the SlowFast R101 rows (paper 000 Table 2; 003).

Variants (`--config=configs/kinetics_r101.py:VARIANT`):
  avslowfast_8x8 (default), slowfast_8x8, slowfast_16x8, slowfast_16x8_nl

  python -m avsf_jax.main --config=configs/kinetics_r101.py --workdir=/tmp/avsf_r101
"""

from avsf_jax import config_lib

VARIANTS = ('avslowfast_8x8', 'slowfast_8x8', 'slowfast_16x8', 'slowfast_16x8_nl')


def get_config(arg=None):
  variant = config_lib.pick_variant('configs/kinetics_r101.py', arg, VARIANTS, 'avslowfast_8x8')
  config = config_lib.base_config()
  config.task = 'classification'
  config.input.dataset = 'kinetics400'
  config.model.num_classes = 400
  config_lib.apply_preset(config, variant, depth=101)
  # Recipe (paper 000 A.4) with the R101 scale jitter.
  config.input.batch_size = 1024
  config.optim.base_lr = 1.6
  config.optim.base_batch_size = 1024
  config.optim.warmup_epochs = 34.0
  config.optim.num_epochs = 256.0 if config.input.num_frames <= 4 else 196.0
  config.input.jitter_scales = (256, 340)
  config.input.crop_size = 224
  config.input.num_temporal_views = 10
  config.input.num_spatial_views = 3
  config.input.test_crop_size = 256
  config.input.view_starts = 'pyslowfast'
  config.model.head_pooling = 'window'
  config.model.head_window = (7, 7)
  config.input.keep_no_audio = 'audio' not in config.model.pathways
  # The SlowFast paper's chain: 16x8 models start from their 8x8 counterparts and NL models
  # from their non-NL ones, each for half the epochs (--config.init_from=EXPORT of the parent).
  parents = {'slowfast_16x8': 'slowfast_8x8', 'slowfast_16x8_nl': 'slowfast_16x8'}
  if variant in parents:
    config.init_from_variant = f'configs/kinetics_r101.py:{parents[variant]}'
    config.optim.num_epochs = 196.0 / 2
  return config
