"""Builds the network from the `model` section of a config, and example inputs for it."""

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from avsf_jax.models.avslowfast import AVSlowFast

_FIELDS = {f.name for f in dataclasses.fields(AVSlowFast)} - {'parent', 'name'}


def _plain(value: Any) -> Any:
  if isinstance(value, ml_collections.ConfigDict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_plain(v) for v in value)
  return value


def build_model(model_config: Mapping[str, Any] | ml_collections.ConfigDict) -> AVSlowFast:
  """`AVSlowFast(**model_config)`, with config types turned into the module's types.

  Every key must be a field of `AVSlowFast` (see its docstring); unknown keys are an error,
  so a typo in `--config.model.x=...` never passes silently.
  """
  kwargs = {k: _plain(v) for k, v in dict(model_config).items()}
  unknown = sorted(set(kwargs) - _FIELDS)
  if unknown:
    raise ValueError(f'config.model has unknown fields {unknown}; known fields: {sorted(_FIELDS)}')
  if 'dtype' in kwargs:
    kwargs['dtype'] = jnp.dtype(kwargs['dtype'])
  if isinstance(kwargs.get('num_classes'), Mapping):
    kwargs['num_classes'] = dict(kwargs['num_classes'])
  return AVSlowFast(**kwargs)


def example_inputs(
  model: AVSlowFast,
  *,
  batch: int = 1,
  num_frames: int,
  crop_size: int,
  audio_frames: int = 128,
  mel_bins: int = 80,
  dtype: Any = jnp.float32,
) -> dict[str, jax.Array]:
  """Zero inputs of the right shapes: `num_frames` is T of the Slow pathway."""
  shapes = {
    'slow': (batch, num_frames, crop_size, crop_size, 3),
    'fast': (batch, num_frames * model.alpha, crop_size, crop_size, 3),
    'audio': (batch, audio_frames, mel_bins, 1),
  }
  return {p: jnp.zeros(shapes[p], dtype) for p in model.pathways}


def inputs_for(
  model: AVSlowFast, config: Any, *, crop_size: int | None = None, batch: int = 1
) -> dict[str, jax.Array]:
  """`example_inputs` with the clip geometry of a full experiment config (its `input` and
  `audio` sections); `crop_size` defaults to the training crop."""
  return example_inputs(
    model,
    batch=batch,
    num_frames=config.input.num_frames,
    crop_size=crop_size or config.input.crop_size,
    audio_frames=config.audio.num_frames,
    mel_bins=config.audio.num_mel_bins,
  )
