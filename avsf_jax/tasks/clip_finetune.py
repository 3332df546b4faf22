"""Clip-level training and evaluation of Listen to Look's clip models (spec §2.4, §8.2).

One task for the two clip models of IMGAUD2VID, picked by `config.model.name`:

  'imgaud'    the student Phi fine-tuned on clips (the paper's §4.1 step after distillation:
              both streams, Psi and the classifier, cross-entropy on the clip's label); with
              `init_from` the distilled student's export (`python -m avsf_jax.export` of a distillation).
  'r2plus1d'  the clip teacher Omega trained on trimmed clips (the demo's teacher; on real data
              the converted torchvision R(2+1)D-18 plays that part).

Batches hold the model's inputs ('image' and/or 'audio', or 'video') and 'label'; evaluation
reports clip top-1 over the held-out clips (`_mask` drops padding). The export predicts logits
from the same inputs.
"""

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from avsf_jax.models import ltl_models
from avsf_jax.tasks import base

# Clip models that read the teacher's 'video' clip (the rest read 'image' and/or 'audio').
VIDEO_MODELS = ('r2plus1d', 'slowfast_clip')


def clip_inputs(config, model_config=None) -> dict[str, tuple[int, ...]]:
  """Per-example shapes of a clip model's inputs: frames of `input.crop_size`, the teacher's
  `input.num_frames`, and the preview log-mel of `audio.num_frames` x `audio.num_mel_bins`
  (the paper's 101 x 40: 1 s of 16-kHz audio, spec §2.2)."""
  model_config = model_config or config.model
  size = config.input.crop_size
  if model_config.name in VIDEO_MODELS:
    return {'video': (config.input.num_frames, size, size, 3)}
  audio = (config.audio.num_frames, config.audio.num_mel_bins, 1)
  shapes = {'image': (size, size, 3), 'audio': audio}
  return {m: shapes[m] for m in model_config.get('modalities', ('image', 'audio'))}


def preview_preprocessing(config) -> dict[str, Any]:
  """What turns a pair into the student's inputs: frame size, and the log-mel's normalisation
  (`config.audio.mean/std`, the training clips' statistics)."""
  return {
    'image_size': config.input.crop_size,
    'audio': 'input.ltl_data.log_mel',
    'audio_mean': float(config.audio.mean),
    'audio_std': float(config.audio.std),
  }


def export_variables(export_dir: str, field: str) -> dict[str, Any]:
  """The {'params', 'batch_stats'} of an export (`export.write`'s 'variables/' item), as numpy.

  Read here with orbax rather than through `avsf_jax.export` (which reaches the experiment
  core: tasks must not import it back). `field` names the config field, for the errors.
  """
  import orbax.checkpoint as ocp  # noqa: PLC0415

  from avsf_jax import storage  # noqa: PLC0415

  path = storage.path(export_dir)
  if not (path / 'metadata.json').exists():
    raise ValueError(f'{field}={export_dir!r}: not an avsf_jax export (no metadata.json)')
  variables = ocp.StandardCheckpointer().restore(path / 'variables')
  variables = jax.tree.map(np.asarray, variables)
  return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}


def clip_top1(logits: np.ndarray, labels: np.ndarray) -> float:
  """Top-1 (%) of clip logits."""
  return float(100.0 * np.mean(np.argmax(logits, -1) == labels))


def gather(predict_fn, variables, batches, progress, keys) -> dict[str, np.ndarray]:
  """`keys` of the predictions and 'label' over a padded split, padding removed."""
  out = {k: [] for k in (*keys, 'label')}
  for batch in progress(batches) if progress else batches:
    predictions = jax.device_get(predict_fn(variables, batch))
    keep = np.asarray(jax.device_get(batch['_mask'])) > 0
    for k in keys:
      out[k].append(np.asarray(predictions[k])[keep])
    out['label'].append(np.asarray(jax.device_get(batch['label']))[keep])
  return {k: np.concatenate(v) for k, v in out.items()}


class ClipFinetune(base.Task):
  """Cross-entropy on clips for the student (`imgaud`) or a teacher (`r2plus1d`,
  `slowfast_clip`)."""

  name = 'clip_finetune'

  def check_dataset(self) -> None:
    if self.config.model.num_classes != self.info.num_classes:
      raise ValueError(
        f'config.model.num_classes={self.config.model.num_classes} but dataset '
        f'{self.config.input.dataset!r} has {self.info.num_classes} classes'
      )

  def build_model(self):
    if self.config.model.get('name') not in ('imgaud', *VIDEO_MODELS):
      raise ValueError(
        f'clip_finetune: config.model.name={self.config.model.get("name")!r}; expected '
        f"'imgaud' (the student) or a teacher: {', '.join(map(repr, VIDEO_MODELS))}"
      )
    return ltl_models.build(self.config.model)

  def input_spec(self, *, train: bool) -> dict[str, jax.ShapeDtypeStruct]:
    del train
    return {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in clip_inputs(self.config).items()}

  def loss(self, model, params, batch_stats, batch, rng, step):
    del rng, step
    (logits, _), updates = model.apply(
      {'params': params, 'batch_stats': batch_stats},
      self.model_inputs(batch),
      train=True,
      mutable=['batch_stats'],
    )
    labels = batch['label']
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    metrics = {'ce': loss, 'top1': jnp.mean(jnp.argmax(logits, -1) == labels)}
    return loss, (updates['batch_stats'], metrics)

  def export_preprocessing(self):
    """The preview preprocessing (image size, the log-mel's normalisation) that the bank
    extractor and the demo read."""
    return preview_preprocessing(self.config)

  def predict(self, model, variables, batch):
    logits, _ = model.apply(variables, self.model_inputs(batch), train=False)
    return {'logits': logits}

  def evaluate(
    self,
    predict_fn: Callable,
    variables: Any,
    batches: Iterable,
    *,
    progress: Callable[[Iterable], Iterable] | None = None,
  ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    out = gather(predict_fn, variables, batches, progress, ('logits',))
    return {'top1': clip_top1(out['logits'], out['label']), 'clips': len(out['label'])}, out

  def statistics_model(self, model):
    return None
