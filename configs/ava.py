r"""AVA action detection (SlowFast §5, AVSlowFast §5 / §A.7; spec `shared/specs/ava.md`).

Variants:
  slowfast_4x16       SlowFast 4x16 R50 detector, K400 init (paper: 24.3 v2.1 / 24.7 v2.2)
  avslowfast_4x16     AVSlowFast 4x16 R50 detector (25.4 / 25.9), audio pool5 to every box
  slowfast_8x8_r101   SlowFast 8x8 R101 + NL detector (26.3 / 27.4)
  avslowfast_8x8_r101 AVSlowFast 8x8 R101 + NL detector (27.8 / 28.6)
  slowfast_32x2_r101_50_50  PySlowFast zoo SLOWFAST_32x2_R101_50_50 (K600, v2.2: 29.1): the
                      8x8 R101 + NL detector with the c2 configs' legacy RoIAlign
                      (aligned False), for converted weights (`interop.ava_convert`)
  demo                SlowFast at demo scale on `synthetic_ava` (CPU, spec 7.2)
  demo_avslowfast     AVSlowFast at demo scale on `synthetic_ava`

  python -m avsf_jax.main --config=configs/ava.py:slowfast_4x16 --workdir=DIR \
    --config.init_from=K400_EXPORT --config.input.data_dir=DATA

The detector is the classification backbone with res5 at stride 1 and dilation 2 (res5 maps
at 1/16) and the RoI head (`models.detector`); `config.detection` holds the box settings.
"""

import ml_collections

from avsf_jax import config_lib

VARIANTS = (
  'slowfast_4x16',
  'avslowfast_4x16',
  'slowfast_8x8_r101',
  'avslowfast_8x8_r101',
  'slowfast_32x2_r101_50_50',
  'demo',
  'demo_avslowfast',
)


def detection_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    {
      'max_boxes': 16,  # boxes per clip, padded with box_mask False
      'test_size': (256, 341),  # full test frame (H, W): AVA's 16:9 at short side 256
      'eval_boxes': 'detector',  # 'gt' (oracle) or 'detector' (person detections)
      'score_threshold': 0.8,  # detector boxes kept at evaluation (SlowFast §5)
      'files': {},  # overrides of input.ava_pipeline.FILES
      'init_rng_impl': 'default',  # 'rbg': parameters drawn with XLA's RngBitGenerator
    }
  )


def _detector_model(config) -> None:
  """The classification model of `config.model` turned into the AVA detector (spec 2.1)."""
  model = config.model
  model.num_classes = 80
  model.res5_spatial_stride = 1
  model.res5_dilation = 2
  model.roi_output_size = 7
  model.roi_spatial_scale = 1.0 / 16.0
  model.roi_sampling_ratio = 0
  model.roi_aligned = True
  model.roi_audio = 'concat'
  model.avs_junctions = ()  # detection trains with the box loss only
  model.head_pooling = 'global'


def get_config(arg=None):
  variant = config_lib.pick_variant('configs/ava.py', arg, VARIANTS, 'slowfast_4x16')
  config = config_lib.base_config()
  config.task = 'detection'
  config.detection = detection_config()
  if variant.startswith('demo'):
    return _demo(config, variant)
  zoo = variant == 'slowfast_32x2_r101_50_50'
  if zoo:
    variant = 'slowfast_8x8_r101'  # 32 Fast frames at stride 2 = 8 Slow frames at stride 8
  depth = 101 if variant.endswith('r101') else 50
  preset = variant.removesuffix('_r101')
  config_lib.apply_preset(config, preset, depth=depth)
  if depth == 101:
    # The R101 AVA zoo models: NL in Slow res4 after blocks 6, 13 and 20, pool (2, 2, 2).
    config.model.nonlocal_blocks = (6, 13, 20)
    config.model.nonlocal_pool = (2, 2, 2)
  _detector_model(config)
  config.input.dataset = 'ava'
  config.input.crop_size = 224
  config.input.jitter_scales = (256, 320)
  config.input.test_short_side = 256
  config.input.flip = True
  config.input.batch_size = 256 if variant.startswith('avslowfast') else 1024
  config.input.eval_batch_size = 64
  # SlowFast §5: ~68 epochs of ~211k boxes' keyframes, 1k-iteration warm-up (~5 epochs), step
  # LR, weight decay 1e-7; AVSlowFast §A.7: 52k iterations of 256 at LR 0.4 (~63 epochs).
  config.optim.num_epochs = 68.0
  config.optim.warmup_epochs = 5.0
  config.optim.schedule = 'steps'
  config.optim.decay_epochs = (52.0, 62.0)
  config.optim.weight_decay = 1e-7
  if variant.startswith('avslowfast'):
    config.optim.num_epochs = 63.0
    config.optim.base_lr = 0.4
    config.optim.base_batch_size = 256
    config.optim.decay_epochs = (48.0, 58.0)
  config.evals.precise_bn_batches = 0  # PySlowFast trains BN and keeps the running averages
  config.evals.every_epochs = 0.0
  if zoo:
    # PySlowFast configs/AVA/c2/SLOWFAST_32x2_R101_50_50.yaml: ALIGNED False, test side 256.
    config.model.roi_aligned = False
  return config


# The demo's schedule (spec 7.2 asks 600 steps of 16 at 96 px; see `_demo` for why less).
DEMO_STEPS = 600
DEMO_TRAIN_KEYFRAMES = 296  # synthetic_ava: 8 videos x 37 keyframes


def _demo(config, variant: str):
  """Spec 7.2 at a scale that trains both variants within `make demo-ava`'s 6 minutes on 2 CPU
  cores: depth 14, slow width 8, T = 4, tau = 8, alpha = 2, res5 stride 1 / dilation 2.

  Deviation from 7.2, for the time budget: the 96 x 128 frames are scaled by 2/3 (64-px crops
  of a 64-72 short side in training, the full 64 x 85 frame at test; res5 maps 4 x 4 and
  4 x 6), and `DEMO_STEPS` steps of 8 clips instead of 600 of 16 (docs/ava.md: measurements).
  """
  audio = variant == 'demo_avslowfast'
  config_lib.apply_preset(config, 'avslowfast_4x16' if audio else 'slowfast_4x16', depth=14)
  _detector_model(config)
  config.input.dataset = 'synthetic_ava'
  config.model.slow_width = 8
  config.model.bn_group_size = 0
  config.model.alpha = 2
  config.model.dropout_rate = 0.2
  if audio:
    config.model.drop_pathway_rate = 0.5
  config.input.num_frames = 4
  config.input.tau = 8
  config.input.crop_size = 64
  config.input.jitter_scales = (64, 72)
  config.input.test_short_side = 64
  config.input.flip = True
  config.audio.num_frames = 32
  config.audio.num_mel_bins = 40
  config.detection.test_size = (64, 85)
  # 1-3 actors and 0-2 false detections: up to 5 boxes at score threshold 0.
  config.detection.max_boxes = 5
  config.detection.init_rng_impl = 'rbg'  # the init compiles in seconds, not ~17 s
  # Batch 8 (not 16): half the step time, and more steps help a from-scratch model more.
  config.input.batch_size = 8
  config.input.eval_batch_size = 16
  config.optim.num_epochs = DEMO_STEPS * config.input.batch_size / DEMO_TRAIN_KEYFRAMES
  config.optim.warmup_epochs = 2.0
  # Peak LR 3.2 at batch 8 (6.4 at 16, linearly scaled): the BCE is a mean over 80 classes,
  # 75 of them never positive here, so the 5 live logits see 1/80 of a softmax's gradient;
  # at the spec's 0.1-0.2 the visual classes stay under-trained in 600 steps (oracle mAP
  # 0.40 at peak 0.1, 0.54 at 0.4, 0.67 at 0.8, 0.86 at 1.6, 0.89 at 3.2: docs/ava.md).
  config.optim.base_lr = 6.4
  config.optim.base_batch_size = 16
  config.optim.weight_decay = 1e-5
  config.evals.every_epochs = 0.0
  config.evals.precise_bn_batches = 0
  config.checkpoint.every_steps = 0
  config.logging.every_steps = 50
  return config
