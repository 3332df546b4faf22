r"""Kinetics-400, ResNet-101: AVSlowFast 8x8 and the SlowFast R101 rows (paper 000 Table 2; 003).

Variants (`--config=configs/kinetics_r101.py:VARIANT`):
  avslowfast_8x8 (default), slowfast_8x8, slowfast_16x8, slowfast_16x8_nl

  python -m avsf_jax.main --config=configs/kinetics_r101.py --workdir=/tmp/avsf_r101
"""

from avsf_jax import config_lib

VARIANTS = ('avslowfast_8x8', 'slowfast_8x8', 'slowfast_16x8', 'slowfast_16x8_nl')


def get_config(arg=None):
  variant = arg or 'avslowfast_8x8'
  if variant not in VARIANTS:
    raise ValueError(f'configs/kinetics_r101.py: unknown variant {variant!r}; one of {VARIANTS}')
  config = config_lib.base_config()
  config.input.dataset = 'kinetics400'
  config.model.num_classes = 400
  config_lib.apply_preset(config, variant, depth=101)
  config.input.jitter_scales = (256, 340)  # R101 recipe (paper 000 A.4)
  config.optim.num_epochs = 256 if config.input.num_frames <= 4 else 196
  return config
