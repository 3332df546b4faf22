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
  variant = config_lib.pick_variant('configs/kinetics_r50.py', arg, VARIANTS, 'avslowfast_4x16')
  config = config_lib.base_config()
  config.task = 'classification'
  config.input.dataset = 'kinetics400'
  config.model.num_classes = 400
  # The model: a preset of models/presets.py (its fields, and T x tau of the clip).
  config_lib.apply_preset(config, variant, depth=50)
  # Recipe (paper 000 A.4): batch 1024, LR 1.6 (0.1 per 64 clips), SGD momentum 0.9, weight
  # decay 1e-4 (none on BN), 34 warm-up epochs, cosine; 256 epochs when T <= 4, else 196.
  config.input.batch_size = 1024
  config.optim.base_lr = 1.6
  config.optim.base_batch_size = 1024
  config.optim.warmup_epochs = 34.0
  config.optim.num_epochs = 256.0 if config.input.num_frames <= 4 else 196.0
  config.input.jitter_scales = (256, 320)
  config.input.crop_size = 224
  # Test: 10 temporal x 3 spatial views of 256 pixels starting at delta * i / 10, the fully
  # convolutional head (7x7 average pool at stride 1, softmax per position, mean), softmax
  # averaged over views.
  config.input.num_temporal_views = 10
  config.input.num_spatial_views = 3
  config.input.test_crop_size = 256
  config.input.view_starts = 'pyslowfast'
  if set(config.model.pathways) & {'slow', 'fast'}:
    config.model.head_pooling = 'window'
    config.model.head_window = (7, 7)
  # Audio-visual models train on videos with an audio track only (the authors' loader):
  # prepare with `tools/prepare_dataset --skip_no_audio`.
  config.input.keep_no_audio = 'audio' not in config.model.pathways
  return config
