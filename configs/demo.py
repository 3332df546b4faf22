r"""The embedded demo: a small AVSlowFast (default) or SlowFast on `synthetic_av`, on CPU.

Variants: `configs/demo.py` (= `:avslowfast`) and `configs/demo.py:slowfast` (visual only).

  python -m avsf_jax.main --config=configs/demo.py --workdir=demo_run/avslowfast
"""

from avsf_jax import config_lib

VARIANTS = ('avslowfast', 'slowfast')


def get_config(arg=None):
  variant = config_lib.pick_variant('configs/demo.py', arg, VARIANTS, 'avslowfast')
  config = config_lib.base_config()
  config.task = 'classification'
  config_lib.apply_preset(config, f'{variant}_4x16', depth=14)
  config.input.dataset = 'synthetic_av'
  # Narrow and short enough to train in a few minutes on 2 CPU cores (~0.2-0.3 s a step).
  config.model.slow_width = 8
  config.model.bn_group_size = 0
  # Clips of T * tau = 32 frames at 30 fps (1.07 s): the square moves ~20-30 crop pixels over
  # a clip. Slow: 4 frames (stride 8), Fast: alpha * T = 8 frames (stride 4).
  config.input.num_frames = 4
  config.input.tau = 8
  config.model.alpha = 2
  # No horizontal flips: a mirrored clip moves the other way, so flipping would give half of
  # the training clips the wrong motion-direction label (synthetic_av has left/right classes).
  config.input.flip = False
  # 40-pixel crops of frames scaled to a 40-46 pixel short side (the 112 x 80 frames become
  # ~56-64 x 40-46), and a 32 x 40 log-mel (the two tones, 330 and 1320 Hz, fall ~11 of the
  # 40 mel bins apart).
  config.input.crop_size = 40
  config.input.jitter_scales = (40, 46)
  config.input.test_short_side = 40
  config.input.test_crop_size = 40
  config.input.batch_size = 16
  config.input.eval_batch_size = 8
  config.audio.num_frames = 32
  config.audio.num_mel_bins = 40
  config.model.num_classes = 12  # synthetic_av: 3 colours x 2 directions x 2 pitches
  # A short run: the paper's DropPathway rate 0.8 deliberately slows audio learning over a long
  # schedule; here 0.2, and head dropout 0.2 instead of 0.5. At 0.5 one seed in five learnt the
  # pitch of some classes only in the last steps (96.7% top-1; 83.3% with 900 steps).
  config.model.dropout_rate = 0.2
  if variant == 'avslowfast':
    config.model.drop_pathway_rate = 0.2
  # From scratch: 240 training clips, 15 steps an epoch, 40 epochs = 600 steps.
  config.optim.num_epochs = 40.0
  config.optim.warmup_epochs = 2.0
  config.optim.base_lr = 0.2
  config.optim.base_batch_size = 16
  config.evals.every_epochs = 0.0  # only the final multi-view evaluation
  config.evals.precise_bn_batches = 8
  # 3 temporal x 3 spatial views: the left, centre and right crops together cover the whole
  # frame, so the square is in view wherever it is.
  config.input.num_temporal_views = 3
  config.input.num_spatial_views = 3
  config.checkpoint.every_steps = 300
  config.logging.every_steps = 50
  return config
