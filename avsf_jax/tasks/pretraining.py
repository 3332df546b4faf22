"""Self-supervised pretraining (AVS + ROT, self-supervised spec 1-2): losses and held-out metrics.

Pure functions for the pretraining task. The loss is

  L = rotation_weight * L_ROT + avs_weight * sum_{j in res3, res4, pool5} L_AVS,j

with both weights 1 by default (the paper gives none). L_AVS is the supervised model's
hierarchical synchronisation loss (`losses.avs_total`), with the curriculum of paper A.8: easy
negatives (another clip's audio) only for the first `avs_easy_until` of training, then
`avs_hard_fraction` hard ones (the same video shifted by >= 0.5 s). L_ROT is the 4-way
cross-entropy of the rotation head against the rotation the input pipeline applied.

**No class label reaches the loss.** `pretext_batch` keeps only `PRETEXT_KEYS` (the inputs, the
audio bookkeeping and the self-generated `rotation`), and `pretraining_loss` reads the batch only
through it; `pretext_objective` has no label argument at all.

Held-out metrics (spec 5.4 T1, T2): rotation accuracy, and the synchronisation ranking accuracy
at pool5, the fraction of clips with d(v, a+) < d(v, a-) against hard negatives (the pipeline's
shifted audio) and easy ones (the next clip's audio in the batch).
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from avsf_jax import losses, models, optim
from avsf_jax.models import rotation_head
from avsf_jax.tasks import base, classification

PRETEXT_KEYS = (
  'slow',
  'fast',
  'audio',
  'audio_negative',
  'audio_negative_is_hard',
  'has_audio',
  'rotation',
  '_mask',
)
RANKING_JUNCTION = 'pool5'
# Which clips the AVS loss reads (`config.pretraining.avs_on`): 'all' (spec 1.2's assumption:
# the rotated clip, the one ROT reads) or 'upright_copy' (each clip turned back upright, in a
# second forward pass; ROT reads the rotated clip in a visual-only pass). Only for a model with
# both pretexts; see docs/self_supervised.md, fifth session.
AVS_ON = ('all', 'upright_copy')


@dataclasses.dataclass(frozen=True)
class PretrainingSettings:
  """The loss fields of a pretraining config (`config.loss` + the step where hard negatives
  start, `round(avs_easy_until * total_steps)`)."""

  rotation_weight: float = 1.0
  avs_weight: float = 1.0
  avs_margin: float = 0.99
  avs_hard_fraction: float = 0.25
  avs_silence_threshold: float = -2.0
  avs_duplicate_distance: float = 0.01
  hard_from_step: int = 0
  negative_group: int = 0
  avs_on: str = 'all'


def hard_from_step(total_steps: int, easy_until: float = 0.5) -> int:
  """First step of the curriculum's hard phase (paper A.8: 60k of 120k)."""
  return int(round(easy_until * total_steps))


def hard_negative_probability(step, *, hard_from: int, hard_fraction: float) -> jax.Array:
  """0 during the easy phase, then `hard_fraction` (paper A.8: 1/4 hard, 3/4 easy)."""
  return jnp.where(jnp.asarray(step) >= hard_from, hard_fraction, 0.0).astype(jnp.float32)


def _require_rotation(rotation, avs_on: str) -> None:
  if rotation is None:
    raise KeyError(
      f'pretraining: config.pretraining.avs_on="{avs_on}" needs the batch key "rotation"; turn '
      'the rotation op on (config.sync_data.rotation = "one_per_clip")'
    )


def unrotate(video: jax.Array, rotation: jax.Array) -> jax.Array:
  """(N, T, H, W, C) clips each turned back by its own k quarter turns (`np.rot90`'s sense,
  as the pipeline rotated them; exact, H = W)."""
  candidates = jnp.stack([jnp.rot90(video, -k, axes=(2, 3)) for k in range(4)])
  k = jnp.mod(jnp.asarray(rotation, jnp.int32), 4)
  return jnp.take_along_axis(candidates, k[None, :, None, None, None, None], axis=0)[0]


def _upright(inputs: Mapping[str, jax.Array], rotation, avs_on: str) -> dict[str, jax.Array]:
  """`inputs` with the visual pathways' clips turned back upright (`unrotate`)."""
  _require_rotation(rotation, avs_on)
  return {p: unrotate(x, rotation) if p in VISUAL else x for p, x in inputs.items()}


def pretext_batch(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """The entries of `batch` that pretraining may read; labels and everything else are dropped."""
  return {k: v for k, v in batch.items() if k in PRETEXT_KEYS}


def rotation_loss(logits: jax.Array, rotation: jax.Array) -> jax.Array:
  """Mean 4-way softmax cross-entropy against the applied quarter turns k."""
  return losses.softmax_cross_entropy(logits, rotation)


def pretext_objective(
  rotation_logits: jax.Array | None,
  rotation: jax.Array | None,
  avs: Mapping[str, Mapping[str, jax.Array]],
  pair_mask: jax.Array | None,
  settings: PretrainingSettings,
  junction_weights: Mapping[str, jax.Array] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L_ROT (when there is a rotation head) + sum of L_AVS over the junctions in `avs`, each
  junction's pairs gated by `junction_weights` (`losses.avs_junction_weights`; None: all)."""
  total = jnp.zeros((), jnp.float32)
  metrics = {}
  if rotation_logits is not None:
    rot = rotation_loss(rotation_logits, rotation)
    metrics['rotation_loss'] = rot
    metrics['rotation_accuracy'] = jnp.mean(
      (jnp.argmax(rotation_logits, axis=-1) == rotation).astype(jnp.float32)
    )
    total = total + settings.rotation_weight * rot
  if avs:
    avs_loss, avs_metrics = losses.avs_total(
      avs,
      margin=settings.avs_margin,
      pair_mask=pair_mask,
      duplicate_distance=settings.avs_duplicate_distance,
      junction_weights=junction_weights,
    )
    metrics.update(avs_metrics, avs_loss=avs_loss)
    total = total + settings.avs_weight * avs_loss
  metrics['loss'] = total
  return total, metrics


def _fusion_junctions(backbone) -> tuple[str, ...]:
  return tuple(getattr(backbone, 'audio_fusion_junctions', ()))


def ranking_backbone(backbone):
  """The backbone as the pool5 AVS loss trains it: the audio->visual laterals off (DropPathway's
  dropped state) and only the pool5 projections; it reads the same variables."""
  if not _fusion_junctions(backbone):
    return backbone
  return backbone.clone(audio_fusion_junctions=(), avs_junctions=(RANKING_JUNCTION,))


VISUAL = ('slow', 'fast')


def visual_backbone(backbone):
  """The backbone's visual pathways alone (no audio, no audio fusion, no AVS), reading the
  same variables: the ROT pass of `avs_on = 'upright_copy'` (ROT reads visual pool5 only)."""
  return backbone.clone(
    pathways=tuple(p for p in backbone.pathways if p != 'audio'),
    audio_fusion_junctions=(),
    avs_junctions=(),
  )


def _visual_model(model, params, inputs):
  """(visual-only model, its params, its inputs): `visual_backbone` under the ROT head. The
  backbone's classifier (unused in pretraining, no gradient) reads fewer pool5 channels
  without audio; it gets the leading rows of its kernel (Slow and Fast come first in its
  input), so every other parameter is shared as is."""
  visual = model.clone(backbone=visual_backbone(model.backbone))
  visual_inputs = {p: inputs[p] for p in visual.backbone.pathways}
  shapes = jax.eval_shape(
    lambda: visual.init(jax.random.key(0), visual_inputs, train=False)['params']['backbone']
  )
  head = jax.tree.map(
    lambda p, s: p[tuple(slice(0, d) for d in s.shape)],
    params['backbone']['head'],
    shapes['head'],
  )
  return visual, {**params, 'backbone': {**params['backbone'], 'head': head}}, visual_inputs


def _visual_rotation_pass(model, params, batch_stats, inputs, rngs):
  """(rotation logits, batch_stats with the visual BN statistics updated) of the visual-only
  model on `inputs`, in training mode."""
  visual, visual_params, visual_inputs = _visual_model(model, params, inputs)
  (logits, _), updates = visual.apply(
    {'params': visual_params, 'batch_stats': batch_stats},
    visual_inputs,
    train=True,
    rngs=rngs,
    mutable=['batch_stats'],
  )
  merged = flax.traverse_util.flatten_dict(flax.core.unfreeze(batch_stats))
  merged.update(flax.traverse_util.flatten_dict(flax.core.unfreeze(updates['batch_stats'])))
  return logits, flax.traverse_util.unflatten_dict(merged)


def _uses_avs(backbone) -> bool:
  return (
    'audio' in backbone.pathways and len(backbone.pathways) > 1 and bool(backbone.avs_junctions)
  )


def pretraining_loss(
  model: rotation_head.PretextModel,
  params: Any,
  batch_stats: Any,
  batch: Mapping[str, jax.Array],
  rng: jax.Array,
  step: jax.Array,
  *,
  settings: PretrainingSettings,
) -> tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]:
  """(loss, (new batch_stats, metrics)) of one training batch; the `Task.loss` signature.

  Pure and jittable. Negatives follow the curriculum at `step`; silent pairs are masked as in
  supervised training. Reads `batch` only through `pretext_batch`.
  """
  batch = pretext_batch(batch)
  rng = jax.random.fold_in(rng, step)
  dropout_rng, drop_pathway_rng, negative_rng = jax.random.split(rng, 3)
  inputs = {p: batch[p] for p in model.backbone.pathways}
  pair_mask = None
  if _uses_avs(model.backbone):
    use_hard = hard_negative_probability(
      step, hard_from=settings.hard_from_step, hard_fraction=settings.avs_hard_fraction
    )
    negative, negative_ok = classification.select_negatives(
      batch, use_hard, negative_rng, group=settings.negative_group
    )
    inputs['audio_negative'] = negative
    threshold = settings.avs_silence_threshold
    pair_mask = classification.audible(batch['audio'], batch['has_audio'], threshold) * (
      classification.audible(negative, negative_ok, threshold)
    )
  rngs = {'dropout': dropout_rng, 'drop_pathway': drop_pathway_rng}
  avs_inputs, rotation_logits = inputs, None
  if settings.avs_on == 'upright_copy' and model.rotation and _uses_avs(model.backbone):
    # ROT on the rotated clip, visual pathways only; then AVS (and the unused ROT logits) on
    # the same clip turned back upright, through the whole model.
    rotation_logits, batch_stats = _visual_rotation_pass(model, params, batch_stats, inputs, rngs)
    avs_inputs = _upright(inputs, batch.get('rotation'), settings.avs_on)
  (logits, aux), updates = model.apply(
    {'params': params, 'batch_stats': batch_stats},
    avs_inputs,
    train=True,
    rngs=rngs,
    mutable=['batch_stats'],
  )
  if rotation_logits is None:
    rotation_logits = logits
  weights = None
  if aux['avs']:
    # As in supervised training (spec 1.3): junctions after the first audio fusion see visual
    # features that already hold the positive audio, so they count only where DropPathway
    # dropped the audio->visual laterals; otherwise synchrony is read off the fused audio.
    weights = losses.avs_junction_weights(
      aux['avs'], aux['drop_pathway_keep'], _fusion_junctions(model.backbone)
    )
  loss, metrics = pretext_objective(
    rotation_logits, batch.get('rotation'), aux['avs'], pair_mask, settings, weights
  )
  if pair_mask is not None:
    metrics['avs_pairs'] = jnp.mean(pair_mask)
  return loss, (updates['batch_stats'], metrics)


def _distance(x: jax.Array, y: jax.Array) -> jax.Array:
  x, y = x.astype(jnp.float32), y.astype(jnp.float32)
  return jnp.sqrt(jnp.sum(jnp.square(x - y), axis=-1) + 1e-12)


def pretext_predictions(
  model: rotation_head.PretextModel,
  variables: Any,
  batch: Mapping[str, jax.Array],
  *,
  avs_on: str = 'all',
) -> dict[str, jax.Array]:
  """Per-example held-out outputs (eval mode): rotation logits and labels, and the pool5
  distances d(v, a+), d(v, a_hard) (the batch's `audio_negative`) and d(v, a_easy) (the next
  clip's audio, rolled over the batch), with masks of where each comparison is valid.

  The distances come from `ranking_backbone`: with the audio->visual laterals on, the visual
  pool5 features would hold the positive audio itself, and the loss trains pool5 only where
  DropPathway turned them off. With `avs_on = 'upright_copy'` each is read as its loss reads
  it: the rotation logits from the visual-only model on the rotated clip, the ranking from
  every held-out clip turned back upright (its `rotation` undone).
  """
  batch = pretext_batch(batch)
  inputs = {p: batch[p] for p in model.backbone.pathways}
  avs = _uses_avs(model.backbone)
  rotation_logits, aux = None, None
  upright_copy = avs_on == 'upright_copy' and model.rotation and avs
  if upright_copy:
    # ROT as its loss trains it: the visual-only model on the rotated clip.
    visual, visual_params, visual_inputs = _visual_model(model, variables['params'], inputs)
    rotation_logits, _ = visual.apply(
      {**variables, 'params': visual_params}, visual_inputs, train=False
    )
  elif model.rotation or not avs:
    rotation_logits, aux = model.apply(variables, inputs, train=False)
  if avs:
    ranking_inputs = dict(inputs)
    if upright_copy:
      ranking_inputs = _upright(ranking_inputs, batch.get('rotation'), avs_on)
    ranking = model.clone(backbone=ranking_backbone(model.backbone))
    _, aux = ranking.apply(
      variables, {**ranking_inputs, 'audio_negative': batch['audio_negative']}, train=False
    )
  n = batch[model.backbone.pathways[0]].shape[0]
  valid = batch.get('_mask', jnp.ones((n,), jnp.float32)).astype(jnp.float32)
  out = {'valid': valid}
  if rotation_logits is not None:
    out['rotation_logits'] = rotation_logits
    out['rotation'] = batch['rotation']
  if avs:
    e = aux['avs'][RANKING_JUNCTION]
    has_audio = batch['has_audio'].astype(jnp.float32)
    out['d_positive'] = _distance(e['visual'], e['audio'])
    out['d_hard'] = _distance(e['visual'], e['audio_negative'])
    out['d_easy'] = _distance(e['visual'], jnp.roll(e['audio'], 1, axis=0))
    out['hard_valid'] = valid * has_audio * (batch['audio_negative_is_hard'] > 0)
    out['easy_valid'] = valid * has_audio * jnp.roll(valid * has_audio, 1)
  return out


def _fraction(hits: np.ndarray, mask: np.ndarray) -> float:
  mask = np.asarray(mask, np.float64)
  return float(np.sum(np.asarray(hits, np.float64) * mask) / max(np.sum(mask), 1.0))


def rotation_accuracy(logits, rotation, mask=None) -> float:
  """Fraction of clips whose arg-max rotation is the applied one (chance 25%)."""
  logits = np.asarray(logits)
  mask = np.ones(logits.shape[0]) if mask is None else mask
  return _fraction(np.argmax(logits, axis=-1) == np.asarray(rotation), mask)


def sync_ranking_accuracy(d_positive, d_negative, mask=None) -> float:
  """Fraction of clips whose true audio is closer than the negative: d(v, a+) < d(v, a-)."""
  d_positive = np.asarray(d_positive)
  mask = np.ones(d_positive.shape[0]) if mask is None else mask
  return _fraction(d_positive < np.asarray(d_negative), mask)


def pretext_metrics(predictions: Mapping[str, np.ndarray]) -> dict[str, float]:
  """Held-out T1 / T2 metrics from concatenated `pretext_predictions` over a split."""
  p = {k: np.asarray(v) for k, v in predictions.items()}
  out = {}
  if 'rotation_logits' in p:
    out['rotation_accuracy'] = rotation_accuracy(p['rotation_logits'], p['rotation'], p['valid'])
  if 'd_positive' in p:
    out['sync_hard_accuracy'] = sync_ranking_accuracy(p['d_positive'], p['d_hard'], p['hard_valid'])
    out['sync_easy_accuracy'] = sync_ranking_accuracy(p['d_positive'], p['d_easy'], p['easy_valid'])
  return out


# -- the task on the shared loop ------------------------------------------------------------

PRETRAINING = {
  'rotation': True,  # the ROT head (False: AVS only)
  'rotation_mode': 'one_per_clip',  # the tf.data rotation op's (input/pipeline.rotation_mode)
  'rotation_features': 'visual',  # 'visual' (Slow + Fast pool5) or 'all' (with Audio)
  'rotation_weight': 1.0,
  'avs_weight': 1.0,
  'avs_on': 'all',  # AVS_ON; 'all' is spec 1.2's [assumption]
}


def pretraining_section(config) -> dict:
  """`config.pretraining` over `PRETRAINING`; unknown fields are an error naming them."""
  section = dict(config.get('pretraining') or {})
  unknown = sorted(set(section) - set(PRETRAINING))
  if unknown:
    raise ValueError(
      f'config.pretraining has unknown fields {unknown}; known: {sorted(PRETRAINING)}'
    )
  out = {**PRETRAINING, **section}
  if out['avs_on'] not in AVS_ON:
    raise ValueError(f'config.pretraining.avs_on={out["avs_on"]!r}; one of {AVS_ON}')
  if out['avs_on'] == 'upright_copy' and not out['rotation']:
    raise ValueError(
      'config.pretraining.avs_on="upright_copy" needs the ROT head (config.pretraining.rotation)'
    )
  return out


def clip_input_spec(config, *, train: bool) -> dict[str, jax.ShapeDtypeStruct]:
  """Per-example Slow / Fast / Audio shapes of `config` (as the classification task's)."""
  t, alpha = config.input.num_frames, config.model.alpha
  size = config.input.crop_size if train else config.input.test_crop_size
  shapes = {
    'slow': (t, size, size, 3),
    'fast': (alpha * t, size, size, 3),
    'audio': (config.audio.num_frames, config.audio.num_mel_bins, 1),
  }
  return {p: jax.ShapeDtypeStruct(shapes[p], jnp.float32) for p in config.model.pathways}


def _gather(x) -> np.ndarray:
  return np.asarray(jax.device_get(x))


class Pretraining(base.Task):
  """Self-supervised pretraining: ROT + AVS, AVS only (`pretraining.rotation = False`) or ROT
  only (a backbone without audio, e.g. the SlowFast preset). Labels never reach the loss.

  Evaluation reports the held-out pretext metrics (rotation accuracy; sync ranking against hard
  and easy negatives at pool5) over a split of single-view pretext batches. An export holds
  the whole `PretextModel` (backbone under 'backbone'); `init_from` reads its backbone into a
  classifier (fine-tuning) or a `ProbeModel` (see `models.weights.merge`).
  """

  name = 'pretraining'

  def section(self) -> dict:
    return pretraining_section(self.config)

  def build_model(self) -> rotation_head.PretextModel:
    section = self.section()
    return rotation_head.PretextModel(
      backbone=models.build_model(self.config.model),
      rotation=bool(section['rotation']),
      rotation_features=section['rotation_features'],
    )

  def input_spec(self, *, train: bool) -> dict[str, jax.ShapeDtypeStruct]:
    return clip_input_spec(self.config, train=train)

  def init_variables(self, model, rng):
    params_rng, dropout_rng = jax.random.split(rng)
    variables = model.init(
      {'params': params_rng, 'dropout': dropout_rng}, self.example_inputs(train=True), train=False
    )
    return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}

  def settings(self) -> PretrainingSettings:
    """The loss settings: `config.loss` (AVS margin, curriculum) and `config.pretraining`."""
    config, section = self.config, self.section()
    total = optim.total_steps(config.optim, self.info.num_train_examples, config.input.batch_size)
    return PretrainingSettings(
      rotation_weight=section['rotation_weight'],
      avs_weight=section['avs_weight'],
      avs_margin=config.loss.avs_margin,
      avs_hard_fraction=config.loss.avs_hard_fraction,
      avs_silence_threshold=config.loss.avs_silence_threshold,
      avs_duplicate_distance=config.loss.avs_duplicate_distance,
      hard_from_step=hard_from_step(total, config.loss.avs_easy_until),
      negative_group=config.input.batch_size // jax.device_count(),
      avs_on=section['avs_on'],
    )

  def loss(self, model, params, batch_stats, batch, rng, step):
    if model.rotation and 'rotation' not in batch:
      raise KeyError(
        'pretraining: the ROT head needs the batch key "rotation"; turn the rotation op on '
        '(config.sync_data.rotation = "one_per_clip") or set config.pretraining.rotation = False'
      )
    return pretraining_loss(model, params, batch_stats, batch, rng, step, settings=self.settings())

  def predict(self, model, variables, batch):
    return pretext_predictions(model, variables, batch, avs_on=self.section()['avs_on'])

  def evaluate(self, predict_fn, variables, batches, *, progress=None):
    collected: dict[str, list[np.ndarray]] = {}
    for batch in progress(batches) if progress else batches:
      for key, value in predict_fn(variables, batch).items():
        collected.setdefault(key, []).append(_gather(value))
    if not collected:
      raise ValueError('pretraining: the eval split produced no batches')
    arrays = {k: np.concatenate(v) for k, v in collected.items()}
    results = pretext_metrics(arrays)
    results['num_clips'] = int(np.sum(arrays['valid']))
    return results, arrays

  def statistics_model(self, model):
    backbone = model.backbone.clone(bn_momentum=0.0, drop_pathway_rate=0.0)
    return model.clone(backbone=backbone)

  def export_function(self, model):
    """`(variables, inputs) -> {'features': pool5 (N, D), ['rotation_logits': (N, 4)]}`."""

    def apply(variables, inputs):
      logits, aux = model.apply(variables, inputs, train=False)
      pooled = aux['pooled']
      out = {'features': jnp.concatenate([pooled[p] for p in sorted(pooled)], axis=-1)}
      if logits is not None:
        out['rotation_logits'] = logits
      return out

    return apply
