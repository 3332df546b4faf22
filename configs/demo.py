r"""The embedded demo: a small AVSlowFast (default) or SlowFast on `synthetic_av`, on CPU.

Variants: `configs/demo.py` (= `:avslowfast`) and `configs/demo.py:slowfast` (visual only).

  python -m avsf_jax.main --config=configs/demo.py --workdir=demo_run/avslowfast
"""

from avsf_jax import config_lib

VARIANTS = ('avslowfast', 'slowfast')


def get_config(arg=None):
  variant = arg or 'avslowfast'
  if variant not in VARIANTS:
    raise ValueError(f'configs/demo.py: unknown variant {variant!r}; one of {VARIANTS}')
  config = config_lib.base_config()
  config_lib.apply_preset(config, f'{variant}_4x16', depth=14)
  config.input.dataset = 'synthetic_av'
  # Narrow and short enough to train in minutes on 2 CPU cores.
  config.model.slow_width = 8
  config.model.bn_group_size = 0
  config.input.num_frames = 4
  config.input.tau = 4
  config.input.alpha = 4
  config.model.alpha = 4
  # Sizes chosen for speed on 2 CPU cores (about 1.6 s a step): 48-pixel crops and a 32 x 40
  # log-mel (the two tones are far apart in pitch, 40 mel bins resolve them).
  config.input.crop_size = 48
  config.input.jitter_scales = (54, 60)
  config.input.test_short_side = 54
  config.input.test_crop_size = 48
  config.input.batch_size = 16
  config.input.eval_batch_size = 8
  config.audio.num_frames = 32
  config.audio.num_mel_bins = 40
  config.model.num_classes = 12  # synthetic_av: 3 colours x 2 directions x 2 pitches
  # A short from-scratch schedule: 240 training clips, 15 steps an epoch.
  config.optim.num_epochs = 10.0
  config.optim.warmup_epochs = 1.0
  config.optim.base_lr = 0.2
  config.optim.base_batch_size = 16
  config.evals.every_epochs = 0.0  # only the final multi-view evaluation
  config.evals.precise_bn_batches = 8
  config.input.num_temporal_views = 3
  config.input.num_spatial_views = 1
  config.checkpoint.every_steps = 60
  config.logging.every_steps = 15
  return config
