"""Classification (Kinetics, Charades, EPIC): cross-entropy, the AVS loss, multi-view scoring.

The papers' main job. Training adds the hierarchical AV-synchronization loss when the model
is audio-visual with AVS projections: negatives are another clip's audio ("easy", taken
within the same device's share of the batch, so no communication) or, after the curriculum's
easy phase, the same video's time-shifted audio ("hard"). Evaluation scores every view of a
video and combines them by `evals.view_aggregation` (see `evaluation.views`).
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from avsf_jax import losses, models, optim
from avsf_jax.evaluation import views
from avsf_jax.input import info as info_lib
from avsf_jax.tasks import base


def roll_within_groups(x: jax.Array, group: int) -> jax.Array:
  """Rolls the batch by one inside consecutive groups of `group` clips (the whole batch if
  `group` does not divide it or is 1). With `group` = the per-device batch, every clip's
  partner lives on the same device, so forming easy negatives needs no communication."""
  n = x.shape[0]
  if group <= 1 or n % group:
    return jnp.roll(x, 1, axis=0)
  return jnp.roll(x.reshape((n // group, group) + x.shape[1:]), 1, axis=1).reshape(x.shape)


def select_negatives(
  batch: Mapping[str, jax.Array], use_hard_prob: jax.Array, rng: jax.Array, *, group: int = 0
) -> tuple[jax.Array, jax.Array]:
  """Negative audio for the AVS loss, and whether each negative is usable.

  Easy negatives are another clip's audio: the batch rolled by one within groups of `group`
  clips (see `roll_within_groups`; 0 = the whole batch). With probability `use_hard_prob`
  (0 during the easy phase of the curriculum) an example takes the hard negative of its own
  video (time-shifted audio from the pipeline) where it has one.
  """
  easy = roll_within_groups(batch['audio'], group)
  easy_ok = roll_within_groups(batch['has_audio'], group)
  n = easy.shape[0]
  hard_ok = batch['audio_negative_is_hard'] > 0
  use_hard = (jax.random.uniform(rng, (n,)) < use_hard_prob) & hard_ok
  expand = (slice(None),) + (None,) * (easy.ndim - 1)
  negative = jnp.where(use_hard[expand], batch['audio_negative'], easy)
  negative_ok = jnp.where(use_hard, 1.0, easy_ok)
  return negative, negative_ok


def audible(audio: jax.Array, has_audio: jax.Array, threshold: float) -> jax.Array:
  """1 where a clip has an audio track whose mean normalized log-mel exceeds `threshold`."""
  energy = audio.astype(jnp.float32).mean(axis=tuple(range(1, audio.ndim)))
  return has_audio.astype(jnp.float32) * (energy > threshold).astype(jnp.float32)


def avs_pair_mask(batch, negative, negative_ok, loss_config) -> jax.Array:
  """(N,) 1 where an AVS pair (positive and negative) counts, by `loss.avs_pair_filter`:

  'filter_duplicates' (the authors' rule, the papers' default): both input log-mels vary
  (variance > 0.01) and differ (cosine < 0.99999), and both clips have an audio track;
  'energy' (this project's earlier rule): both clips audible (mean normalized log-mel above
  `avs_silence_threshold`), and a negative whose embedding lies within
  `avs_duplicate_distance` of the positive's loses its hinge term (in `losses.avs_total`).
  """
  has_both = batch['has_audio'].astype(jnp.float32) * negative_ok.astype(jnp.float32)
  if loss_config.avs_pair_filter == 'filter_duplicates':
    return losses.filter_duplicates(batch['audio'], negative) * has_both
  if loss_config.avs_pair_filter == 'energy':
    threshold = loss_config.avs_silence_threshold
    return audible(batch['audio'], batch['has_audio'], threshold) * audible(
      negative, negative_ok, threshold
    )
  raise ValueError(
    f'loss.avs_pair_filter={loss_config.avs_pair_filter!r}; one of filter_duplicates, energy'
  )


def uses_avs(model) -> bool:
  return 'audio' in model.pathways and len(model.pathways) > 1 and bool(model.avs_junctions)


class Classification(base.Task):
  """Video classification with the SlowFast family (`models.AVSlowFast`)."""

  name = 'classification'

  def check_dataset(self) -> None:
    ours = info_lib.heads(self.config.model.num_classes)
    theirs = info_lib.heads(self.info.num_classes)
    if ours != theirs:
      raise ValueError(
        f'config.model.num_classes={self.config.model.num_classes} but dataset '
        f'{self.config.input.dataset!r} has {self.info.num_classes} classes'
      )

  def build_model(self) -> models.AVSlowFast:
    return models.build_model(self.config.model)

  def input_spec(self, *, train: bool) -> dict[str, jax.ShapeDtypeStruct]:
    config = self.config
    t, alpha = config.input.num_frames, config.model.alpha
    size = config.input.crop_size if train else config.input.test_crop_size
    shapes = {
      'slow': (t, size, size, 3),
      'fast': (alpha * t, size, size, 3),
      'audio': (config.audio.num_frames, config.audio.num_mel_bins, 1),
    }
    return {p: jax.ShapeDtypeStruct(shapes[p], jnp.float32) for p in config.model.pathways}

  def init_variables(self, model, rng):
    # Initialised at the training crop: the fully convolutional head has no size-bound params.
    params_rng, dropout_rng = jax.random.split(rng)
    variables = model.init(
      {'params': params_rng, 'dropout': dropout_rng},
      self.example_inputs(train=True),
      train=False,
    )
    return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}

  # -- training ------------------------------------------------------------------------------

  def _schedule_facts(self) -> tuple[int, int]:
    """(first step of the curriculum's hard phase, clips per device for easy negatives)."""
    config = self.config
    total = optim.total_steps(config.optim, self.info.num_train_examples, config.input.batch_size)
    hard_from = int(round(config.loss.avs_easy_until * total))
    return hard_from, config.input.batch_size // jax.device_count()

  def loss(self, model, params, batch_stats, batch, rng, step):
    loss_config = self.config.loss
    dropout_rng, drop_pathway_rng, negative_rng = jax.random.split(rng, 3)
    inputs = {p: batch[p] for p in model.pathways}
    avs = uses_avs(model)
    pair_mask = None
    if avs:
      hard_from, group = self._schedule_facts()
      use_hard_prob = jnp.where(step >= hard_from, loss_config.avs_hard_fraction, 0.0)
      negative, negative_ok = select_negatives(batch, use_hard_prob, negative_rng, group=group)
      inputs['audio_negative'] = negative
      pair_mask = avs_pair_mask(batch, negative, negative_ok, loss_config)
    (logits, aux), updates = model.apply(
      {'params': params, 'batch_stats': batch_stats},
      inputs,
      train=True,
      rngs={'dropout': dropout_rng, 'drop_pathway': drop_pathway_rng},
      mutable=['batch_stats'],
    )
    loss, metrics = losses.classification(
      logits,
      batch,
      multi_label=self.info.multi_label,
      label_smoothing=loss_config.label_smoothing,
    )
    if avs:
      weights = None
      if loss_config.avs_gate == 'drop_pathway':
        weights = losses.avs_junction_weights(
          aux['avs'], aux['drop_pathway_keep'], model.audio_fusion_junctions
        )
      elif loss_config.avs_gate != 'none':
        raise ValueError(f'loss.avs_gate={loss_config.avs_gate!r}; one of drop_pathway, none')
      duplicate_distance = (
        loss_config.avs_duplicate_distance if loss_config.avs_pair_filter == 'energy' else 0.0
      )
      avs_loss, avs_metrics = losses.avs_total(
        aux['avs'],
        margin=loss_config.avs_margin,
        pair_mask=pair_mask,
        duplicate_distance=duplicate_distance,
        junction_weights=weights,
      )
      metrics.update(avs_metrics, avs_loss=avs_loss, avs_pairs=jnp.mean(pair_mask))
      loss = loss + loss_config.avs_weight * avs_loss
    metrics['drop_pathway_keep'] = jnp.mean(aux['drop_pathway_keep'])
    return loss, (updates['batch_stats'], metrics)

  # -- evaluation ----------------------------------------------------------------------------

  def predict(self, model, variables, batch):
    return views.per_view_logits(model)(variables, batch)

  def evaluate(
    self,
    predict_fn: Callable,
    variables: Any,
    batches: Iterable,
    *,
    progress: Callable[[Iterable], Iterable] | None = None,
  ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    return views.evaluate(
      predict_fn,
      variables,
      batches,
      num_classes=self.info.num_classes,
      multi_label=self.info.multi_label,
      view_aggregation=self.config.evals.view_aggregation,
      progress=progress,
      return_scores=True,
    )

  def statistics_model(self, model):
    # The authors' code recomputes the statistics in train mode, DropPathway active
    # (`evals.precise_bn_drop_pathway`, the default); False runs it with audio always fused,
    # as evaluation does (docs/models.md, reference recipe item 9).
    if self.config.evals.get('precise_bn_drop_pathway', True):
      return _KeepDropPathway(model.clone(bn_momentum=0.0))
    return model.clone(bn_momentum=0.0, drop_pathway_rate=0.0)


class _KeepDropPathway:
  """A model whose train-mode `apply` draws DropPathway for precise BN: keyed by the batch's
  first input value, so each batch draws anew and a rerun draws the same."""

  def __init__(self, model):
    self.model = model

  def apply(self, variables, inputs, *, train, rngs, mutable):
    first = next(iter(inputs.values())).ravel()[0].astype(jnp.float32)
    key = jax.random.fold_in(jax.random.PRNGKey(1), jax.lax.bitcast_convert_type(first, jnp.int32))
    rngs = {**rngs, 'drop_pathway': key}
    return self.model.apply(variables, inputs, train=train, rngs=rngs, mutable=mutable)
