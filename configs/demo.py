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
  config.input.crop_size = 64
  config.input.jitter_scales = (72, 80)
  config.input.test_short_side = 64
  config.input.test_crop_size = 64
  config.input.batch_size = 16
  config.input.eval_batch_size = 8
  config.audio.num_frames = 64
  return config
