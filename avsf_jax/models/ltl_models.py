"""Listen to Look's modules built from a config section, by `name` (the tasks' one entry point).

  'imgaud'         the student Phi (`imgaud.ImageAudioNet`) and its single-stream variants
  'r2plus1d'       the clip teacher Omega (`r2plus1d.R2Plus1D`)
  'skimming'       IMGAUD-SKIMMING (`skimming.Skimming`)
  'non_recurrent'  the NON-RECURRENT baseline (`skimming.NonRecurrentSkimming`)
  'lstm'           the LSTM baseline (`skimming.SequenceLSTM`)

Every other field of the section must be a field of that module (a misspelt field is an error
naming it), so a config says exactly what it builds.
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from avsf_jax.models import imgaud, r2plus1d, skimming

MODULES = {
  'imgaud': imgaud.ImageAudioNet,
  'r2plus1d': r2plus1d.R2Plus1D,
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
    if isinstance(value, list):
      fields[key] = tuple(value)
  return cls(**fields)
