"""Experiment configs: every default in one place, presets applied as data, overrides checked.

A config has the sections (big_vision style) `task`, `model` (the fields of the task's model),
`input` (dataset, clip sampling, augmentation, batch), `audio` (the log-mel front end),
`optim`, `loss`, `evals`, `mesh`, `checkpoint` and `logging`. Config files in `configs/`
start from `base_config()`, pick a model preset with `apply_preset`, and then set, visibly,
what makes their experiment that experiment; their `:arg` picks a variant.

Each fact lives once: the clip geometry is `input.num_frames` (T) and `input.tau`, with
`model.alpha` and `model.pathways` read by the input pipeline too. `validate(config)` runs
before every job and turns a contradictory override into an error naming both fields.
Durations are in epochs; `optim.epochs_to_steps` turns them into steps.
"""

from typing import Any

import ml_collections

from avsf_jax.models import presets


def audio_config() -> ml_collections.ConfigDict:
  """The released AVSlowFast log-mel recipe (SPEC section 4)."""
  return ml_collections.ConfigDict(
    {
      'sample_rate': 16000,
      'window_size': 512,
      'hop_size': 256,
      'fft_size': 512,
      'num_mel_bins': 80,
      'num_frames': 128,
      'log_offset': 1e-8,
      'mean': -7.03,
      'std': 4.66,
    }
  )


def input_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    {
      'dataset': 'kinetics400',
      'data_dir': '',  # '' = $AVSF_DATA_DIR or ~/.cache/avsf_jax/datasets
      # host:port of a tf.data service dispatcher (docs/data.md); '' = decode in this process.
      'tf_data_service': '',
      'train_split': 'train',
      'eval_split': 'validation',
      'num_frames': 4,  # T: frames of the Slow pathway (Fast takes model.alpha * T)
      'tau': 16,  # raw-frame stride of the Slow pathway (Fast: tau / model.alpha)
      'crop_size': 224,
      'jitter_scales': (256, 320),
      'test_short_side': 256,
      'test_crop_size': 256,
      'num_temporal_views': 10,
      'num_spatial_views': 3,
      # Where temporal test view i of V starts in a video of delta spare frames:
      # 'pyslowfast' (delta * i / V, PySlowFast's decoder) or 'spread' (delta * i / (V - 1)).
      'view_starts': 'pyslowfast',
      'mean': (0.45, 0.45, 0.45),
      'std': (0.225, 0.225, 0.225),
      'batch_size': 1024,  # global, over all processes
      'eval_batch_size': 64,  # global, in videos
      'frame_short_side': 320,  # short side of the stored JPEG frames (picks the prepared copy)
      # Videos without an audio track: kept with has_audio=0 (True), or left out of the
      # prepared copy (False: the authors' loader; the audio-visual paper configs).
      'keep_no_audio': True,
      'target_fps': 30.0,  # a clip spans T * tau frames at this rate, whatever the video's fps
      'flip': True,
      'min_negative_shift': 0.5,  # seconds between a clip's audio and its hard negative
      'spec_augment': False,
      'spec_augment_time_masks': 2,
      'spec_augment_time_width': 16,
      'spec_augment_freq_masks': 2,
      'spec_augment_freq_width': 8,
      'prefetch': 2,  # batches
    }
  )


def optim_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    {
      'num_epochs': 256.0,
      'warmup_epochs': 34.0,
      'warmup_start_factor': 0.1,  # warm-up starts at this fraction of the peak LR
      'base_lr': 1.6,  # for a global batch of `base_batch_size`; scaled linearly
      'base_batch_size': 1024,
      # 'cosine': PySlowFast's one half period over the whole run (warm-up ramps to its value);
      # 'cosine_after_warmup': a cosine over the steps after warm-up; 'steps'.
      'schedule': 'cosine',
      'end_factor': 0.0,
      'decay_epochs': (),  # 'steps': epochs at which the LR is multiplied by decay_factor
      'decay_factor': 0.1,
      'momentum': 0.9,
      'nesterov': True,  # PySlowFast's default
      'weight_decay': 1e-4,
      'decay_norm_and_bias': False,  # True: weight decay on BN scales/biases and biases too
      'clip_grad_norm': 0.0,  # 0: no clipping
    }
  )


def loss_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    {
      'label_smoothing': 0.0,
      'avs_weight': 1.0,
      'avs_margin': 0.99,
      # Curriculum: easy negatives (another clip's audio) until this fraction of training,
      # then `avs_hard_fraction` of the negatives are hard (same video, shifted in time).
      'avs_easy_until': 0.5,
      'avs_hard_fraction': 0.25,
      # Which junctions' AVS losses count: 'drop_pathway' (the authors' code: junctions up to
      # the earliest audio fusion always; later ones only when DropPathway dropped the audio
      # laterals this step) or 'none' (every junction, every step).
      'avs_gate': 'drop_pathway',
      # Which pairs count: 'filter_duplicates' (the authors' rule: both log-mels vary and
      # differ) or 'energy' (audible by mean log-mel, near-duplicate negatives' hinge dropped,
      # with the two thresholds below).
      'avs_pair_filter': 'filter_duplicates',
      'avs_silence_threshold': -2.0,
      'avs_duplicate_distance': 0.01,
    }
  )


def base_config() -> ml_collections.ConfigDict:
  """Every section at its default: AVSlowFast 4x16 R50 classification on Kinetics-400."""
  return ml_collections.ConfigDict(
    {
      'seed': 0,
      # The task on the shared loop (avsf_jax.tasks.TASKS): what is trained and evaluated.
      'task': 'classification',
      # An export directory (avsf_jax.export or tools.convert_checkpoint) to fine-tune from:
      # every matching tensor is loaded, a classifier of another class count is re-initialised.
      'init_from': '',
      # Set by configs that must start from another experiment's export (the 16x8 and NL
      # chain): `validate` then requires `init_from`.
      'init_from_variant': '',
      'model': presets.default_model_config(),
      'input': input_config(),
      'audio': audio_config(),
      'optim': optim_config(),
      'loss': loss_config(),
      'evals': {
        'every_epochs': 10.0,  # periodic single-view evaluation; 0: only the final one
        'periodic_multi_view': False,
        # How views combine into a video score: 'mean_softmax' (Kinetics, EPIC) or 'max'
        # (Charades: max over clips of the sigmoid scores).
        'view_aggregation': 'mean_softmax',
        'precise_bn_batches': 200,  # 0: keep the running averages
        # Recompute them in train mode with DropPathway active, as the authors' code does
        # (False: audio always fused, as at evaluation; docs/models.md, recipe item 9).
        'precise_bn_drop_pathway': True,
      },
      # Mesh axes and sizes; -1 takes the remaining devices. The batch is split over 'data'.
      'mesh': {
        'data': -1,
        'param_sharding': 'replicated',  # or 'fsdp': shard parameters over 'data'
        'fsdp_min_size': 2**14,  # leaves smaller than this stay replicated under 'fsdp'
      },
      'checkpoint': {'every_steps': 1000, 'keep': 3, 'async': True, 'save_on_preemption': True},
      'logging': {'every_steps': 50},
    }
  )


def apply_preset(config: ml_collections.ConfigDict, preset: str, depth: int = 50) -> None:
  """Sets `config.model` to a named preset (`models.presets.PRESETS`) and its clip geometry.

  The class count and compute dtype of `config.model` are kept.
  """
  model = presets.model_config(preset, depth)
  model.num_classes = config.model.num_classes
  model.dtype = config.model.dtype
  model.conv_lowering = config.model.get('conv_lowering', 'auto')
  config.model = model
  clip = presets.clip_of(preset)
  config.input.num_frames = clip['num_frames']
  config.input.tau = clip['tau']


def pick_variant(path: str, arg: str | None, variants: Any, default: str) -> str:
  """The variant a config file's `:arg` names; an unknown one lists the known ones."""
  variant = arg or default
  if variant not in variants:
    raise ValueError(f'{path}: unknown variant {variant!r}; choose one of: {", ".join(variants)}')
  return variant


class ConfigError(ValueError):
  """Two config fields contradict each other, or one has an impossible value."""


def validate(config: ml_collections.ConfigDict, *, devices: int | None = None) -> None:
  """Raises ConfigError naming the fields when the config contradicts itself.

  Checks what an override can break: the model's fixed test window against the crop, clip
  counts against BN groups and devices, the audio frames against the Slow frames the audio
  fusion lands on, and fields the model does not have.
  """
  model, inp = config.model, config.input
  errors = []
  if config.get('init_from_variant') and not config.get('init_from'):
    errors.append(
      f'this experiment starts from an export of {config.init_from_variant}: '
      '--config.init_from=EXPORT_DIR is required'
    )
  if model.get('head_pooling') == 'window':
    expected = (inp.crop_size // 32, inp.crop_size // 32)
    if tuple(model.head_window) != expected:
      errors.append(
        f'model.head_window={tuple(model.head_window)} but input.crop_size={inp.crop_size} '
        f'gives res5 maps of {expected}'
      )
  if devices:
    for field in ('batch_size', 'eval_batch_size'):
      if inp[field] % devices:
        errors.append(f'input.{field}={inp[field]} is not divisible by the {devices} devices')
    group = model.get('bn_group_size', 0)
    per_device = inp.batch_size // devices
    if group and per_device >= group and per_device % group:
      errors.append(
        f'model.bn_group_size={group} does not divide the per-device batch {per_device} '
        f'(input.batch_size={inp.batch_size} over {devices} devices)'
      )
  pathways = tuple(model.get('pathways', ()))
  fusion = tuple(model.get('audio_fusion_junctions', ()))
  if 'audio' in pathways and len(pathways) > 1 and fusion:
    if config.audio.num_frames % inp.num_frames:
      errors.append(
        f'audio.num_frames={config.audio.num_frames} is not a multiple of '
        f'input.num_frames={inp.num_frames} (audio fusion lands on the Slow frames)'
      )
  if errors:
    raise ConfigError('config: ' + '; '.join(errors))
