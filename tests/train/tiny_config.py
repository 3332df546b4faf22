"""A narrow AVSlowFast on fake data that trains a step in well under a second on CPU."""

from avsf_jax import config_lib


def get_config(arg=None):
  variant = arg or 'avslowfast'
  config = config_lib.base_config()
  config_lib.apply_preset(config, f'{variant}_4x16', depth=14)
  config.input.dataset = 'fake'
  config.model.num_classes = 4
  config.model.slow_width = 8
  config.model.beta_inv = 4
  config.model.bn_group_size = 0
  config.model.alpha = 4
  config.input.num_frames = 2
  config.input.crop_size = 32
  config.input.test_crop_size = 32
  config.input.num_temporal_views = 2
  config.input.num_spatial_views = 1
  config.input.batch_size = 16
  config.input.eval_batch_size = 8
  config.audio.num_frames = 32
  config.audio.num_mel_bins = 16
  # In-memory data (avsf_jax/input/fake.py) with its test-only fault hooks: `delay_s` slows
  # each training batch, `nan_at_step` poisons one.
  config.fake_data = {
    'num_train_examples': 64,
    'num_eval_examples': 12,
    'multi_label': False,
    'delay_s': 0.0,
    'nan_at_step': -1,
  }
  config.optim.num_epochs = 1.5  # 6 steps
  config.optim.warmup_epochs = 0.5
  config.optim.base_lr = 0.1
  config.optim.base_batch_size = 16
  config.evals.every_epochs = 0.0
  config.evals.precise_bn_batches = 2
  config.checkpoint.every_steps = 2
  config.checkpoint.keep = 10
  config.logging.every_steps = 1
  return config
