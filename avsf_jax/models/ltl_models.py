"""Listen to Look's modules built from a config section, by `name` (the tasks' one entry point).

  'imgaud'         the student Phi (`imgaud.ImageAudioNet`) and its single-stream variants
  'r2plus1d'       the clip teacher Omega (`r2plus1d.R2Plus1D`)
  'slowfast_clip'  a visual SlowFast / Slow-only (`avslowfast.AVSlowFast`) as a clip teacher:
                   one 'video' input, D = its pool5 width (`SlowFastClip`)
  'skimming'       IMGAUD-SKIMMING (`skimming.Skimming`)
  'non_recurrent'  the NON-RECURRENT baseline (`skimming.NonRecurrentSkimming`)
  'lstm'           the LSTM baseline (`skimming.SequenceLSTM`)

Every other field of the section must be a field of that module (a misspelt field is an error
naming it), so a config says exactly what it builds.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from avsf_jax.models import build as build_lib
from avsf_jax.models import imgaud, r2plus1d, skimming


class SlowFastClip(nn.Module):
  """A visual SlowFast (or Slow-only / Fast-only) of the project as a Listen to Look clip model.

  Takes {'video': (N, T, H, W, 3)} like the R(2+1)D teacher: the Fast pathway reads all T
  frames, the Slow pathway every alpha-th (T / alpha, from the first). Returns
  `(logits, {'pooled': D})` with D the concatenated pool5 features of the pathways (2304 for
  a SlowFast R50: the paper's "D = the teacher's pool5 width").

  `backbone` is an `AVSlowFast` model config (`presets.model_config`), audio-free, whose
  `num_classes` is this module's.
  """

  num_classes: int
  backbone: Mapping[str, Any]

  def setup(self):
    config = {**self.backbone, 'num_classes': self.num_classes}
    if 'audio' in config.get('pathways', ()):
      raise ValueError(
        f'slowfast_clip: backbone.pathways={config["pathways"]}; the clip teacher is visual '
        "only (drop 'audio')"
      )
    self.net = build_lib.build_model(config)

  def __call__(
    self, inputs: Mapping[str, jax.Array], *, train: bool
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    if 'video' not in inputs:
      raise KeyError(f"SlowFastClip: inputs lack 'video'; got keys {sorted(inputs)}")
    video = inputs['video']
    alpha = self.net.alpha
    if video.shape[1] % alpha:
      raise ValueError(
        f'SlowFastClip: {video.shape[1]} frames do not split into Slow frames at alpha={alpha}'
      )
    views = {'slow': video[:, ::alpha], 'fast': video}
    logits, aux = self.net({p: views[p] for p in self.net.pathways}, train=train)
    pooled = jnp.concatenate([aux['pooled'][p] for p in self.net.pathways], axis=-1)
    return logits, {'pooled': pooled}


MODULES = {
  'imgaud': imgaud.ImageAudioNet,
  'r2plus1d': r2plus1d.R2Plus1D,
  'slowfast_clip': SlowFastClip,
  'skimming': skimming.Skimming,
  'non_recurrent': skimming.NonRecurrentSkimming,
  'lstm': skimming.SequenceLSTM,
}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def build(model_config, where: str = 'config.model') -> nn.Module:
  """The module `model_config.name` names, with the section's other fields as its fields."""
  fields = dict(model_config.to_dict() if hasattr(model_config, 'to_dict') else model_config)
  name = fields.pop('name', None)
  if name not in MODULES:
    raise ValueError(f'{where}.name={name!r}; expected one of {sorted(MODULES)}')
  cls = MODULES[name]
  known = {f.name for f in dataclasses.fields(cls)} - {'parent', 'name'}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f'{where}: {cls.__name__} has no fields {unknown}; known: {sorted(known)}')
  if 'dtype' in fields:
    if fields['dtype'] not in DTYPES:
      raise ValueError(f'{where}.dtype={fields["dtype"]!r}; expected one of {sorted(DTYPES)}')
    fields['dtype'] = DTYPES[fields['dtype']]
  for key, value in fields.items():
    if isinstance(value, dict):
      continue
    if isinstance(value, list):
      fields[key] = tuple(value)
  return cls(**fields)
