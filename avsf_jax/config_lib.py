"""Assembles a full experiment config from the sections each part of the package owns.

Sections (big_vision style): `model` (fields of `models.AVSlowFast`), `input` (dataset, clip
sampling, augmentation, batch), `audio` (the log-mel front end), `optim`, `loss`, `evals`,
`mesh`, `checkpoint`, `logging`. Config files in `configs/` start from `base_config()`, pick a
model preset with `apply_preset`, and override fields; their `:arg` picks a variant.
"""

import ml_collections

from avsf_jax import train_config
from avsf_jax.input import config as input_config
from avsf_jax.models import presets


def base_config() -> ml_collections.ConfigDict:
  """Every section at its default: AVSlowFast 4x16 R50 on Kinetics-400."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  # An export directory (avsf_jax.export or tools.convert_checkpoint) to fine-tune from:
  # every matching tensor is loaded, a classifier of another class count is re-initialised.
  config.init_from = ''
  config.model = presets.default_model_config()
  config.input = input_config.input_config()
  config.audio = input_config.audio_config()
  for name, section in train_config.sections().items():
    config[name] = section
  return config


def apply_preset(config: ml_collections.ConfigDict, preset: str, depth: int = 50) -> None:
  """Sets `config.model` to a named preset and the clip geometry that goes with it."""
  num_classes = config.model.num_classes
  dtype = config.model.dtype
  config.model = presets.model_config(preset, depth)
  config.model.num_classes = num_classes
  config.model.dtype = dtype
  t, tau, alpha, _ = presets.clip_of(preset)
  config.input.num_frames = t
  config.input.tau = tau
  config.input.alpha = alpha
  config.input.pathways = config.model.pathways
