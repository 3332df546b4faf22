r"""Kinetics-400, ResNet-50: AVSlowFast and its baselines (paper 000 Tables 2, 5, 6; paper 003).

Variants (`--config=configs/kinetics_r50.py:VARIANT`):
  avslowfast_4x16 (default), avslowfast_8x8, slowfast_4x16, slowfast_8x8,
  slow_only_4x16, fast_only_4x16, audio_only,
  avslowfast_8x8_ptv (PyTorchVideo's `create_audio_visual_slowfast` layout, for its weights)

  python -m avsf_jax.main --config=configs/kinetics_r50.py --workdir=/tmp/avsf_r50
  python -m avsf_jax.tools.model_stats --config=configs/kinetics_r50.py:slowfast_4x16
  python -m avsf_jax.tools.model_stats --config=configs/kinetics_r50.py \
      --config.model.audio_width_ratio=0.25
"""

from avsf_jax import config_lib

VARIANTS = (
  'avslowfast_4x16',
  'avslowfast_8x8',
  'slowfast_4x16',
  'slowfast_8x8',
  'slow_only_4x16',
  'fast_only_4x16',
  'audio_only',
  'avslowfast_8x8_ptv',
)


def get_config(arg=None):
  variant = arg or 'avslowfast_4x16'
  if variant not in VARIANTS:
    raise ValueError(f'configs/kinetics_r50.py: unknown variant {variant!r}; one of {VARIANTS}')
  config = config_lib.base_config()
  config.input.dataset = 'kinetics400'
  config.model.num_classes = 400
  config_lib.apply_preset(config, variant, depth=50)
  # Paper 000 A.4: 256 epochs when T <= 4, else 196.
  config.optim.num_epochs = 256 if config.input.num_frames <= 4 else 196
  return config
