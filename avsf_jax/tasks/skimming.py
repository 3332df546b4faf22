"""IMGAUD-SKIMMING training (Listen to Look §3.3, spec §3.3): batches, loss and optimizer.

Pure functions over feature banks. A video is a pair of (N, D) preview banks (image, audio);
`make_batch` crops, pads and masks a list of them into one static-shape batch, `skimming_loss`
is the cross-entropy of the summary (and optionally of the last step), and `make_optimizer`
is the released recipe: SGD with Nesterov momentum 0.9, weight decay 1e-4, lr 0.01 with the
classifier at 0.1x and Ψ frozen, x0.1 at epochs 15 and 20 of 25.
"""

from collections.abc import Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from avsf_jax.evaluation import skimming_baselines as sb
from avsf_jax.tasks import base

# Parameter groups of the released recipe and their learning-rate factors.
GROUP_FACTORS = {'default': 1.0, 'classifier': 0.1, 'fusion': 0.0}
# Padded lengths the batches are rounded up to, so that a few programs serve every video.
DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 384, 512)


def random_max_len(rng: np.random.Generator, low: int = 200, high: int = 500) -> int:
  """The training batch's length, max_len ~ U{low..high} (both ends included), per batch."""
  return int(rng.integers(low, high + 1))


def bucket_length(length: int, buckets: Sequence[int] | None) -> int:
  """The smallest bucket >= `length` (or `length` itself without buckets)."""
  if not buckets:
    return length
  for b in sorted(buckets):
    if b >= length:
      return b
  raise ValueError(
    f'batch length {length} exceeds the largest bucket {max(buckets)}; add a longer one '
    '(config.skim.buckets)'
  )


def make_batch(
  videos: Sequence[tuple[np.ndarray, np.ndarray]],
  labels: Sequence[int],
  *,
  num_steps: int,
  max_len: int | None = None,
  rng: np.random.Generator | None = None,
  buckets: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
  """Crops, pads and masks videos' (image, audio) banks into one batch (spec §3.3).

  Training passes `max_len` (see `random_max_len`) and `rng`: a longer video is cropped to a
  random contiguous window of `max_len` pairs ('offset' records its start). Validation passes
  neither: the length is the batch's longest video. A video with fewer than `num_steps` pairs
  repeats its last pair up to `num_steps`; the mask covers max(num_steps, length). The padded
  length is max(num_steps, max_len) rounded up to the next bucket.

  Returns:
    'image' (B, L, D_I), 'audio' (B, L, D_A), 'mask' (B, L) float32, 'label' (B,) int32,
    'length' (B,) the valid pairs, 'offset' (B,) the crop starts.
  """
  if len(videos) != len(labels) or not videos:
    raise ValueError(f'make_batch: {len(videos)} videos and {len(labels)} labels; need >= 1 each')
  if (max_len is None) != (rng is None):
    raise ValueError('make_batch: pass max_len and rng together (training) or neither')
  lengths = []
  for i, (image, audio) in enumerate(videos):
    if image.ndim != 2 or audio.ndim != 2 or image.shape[0] != audio.shape[0] or not len(image):
      raise ValueError(
        f'video {i}: expected image (N, D_I) and audio (N, D_A) banks with the same N >= 1, '
        f'got {image.shape} and {audio.shape}'
      )
    lengths.append(image.shape[0])
  target = max(lengths) if max_len is None else max_len
  padded = bucket_length(max(num_steps, target), buckets)
  d_i, d_a = videos[0][0].shape[1], videos[0][1].shape[1]
  batch = {
    'image': np.zeros((len(videos), padded, d_i), np.float32),
    'audio': np.zeros((len(videos), padded, d_a), np.float32),
    'mask': np.zeros((len(videos), padded), np.float32),
    'label': np.asarray(labels, np.int32),
    'length': np.zeros(len(videos), np.int32),
    'offset': np.zeros(len(videos), np.int32),
  }
  for i, (image, audio) in enumerate(videos):
    n = image.shape[0]
    start = int(rng.integers(0, n - target + 1)) if max_len is not None and n > target else 0
    keep = min(n, target)
    valid = max(keep, num_steps)
    rows = np.minimum(np.arange(valid), keep - 1) + start  # repeat the last pair up to T
    batch['image'][i, :valid] = image[rows]
    batch['audio'][i, :valid] = audio[rows]
    batch['mask'][i, :valid] = 1.0
    batch['length'][i], batch['offset'][i] = valid, start
  return batch


def skimming_loss(
  logits: jax.Array,
  step_logits: jax.Array | None,
  labels: jax.Array,
  *,
  summary_weight: float = 1.0,
  last_step_weight: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L = w_avg·CE(FC_cls(m), y) + w_lstm·CE(p_T, y), batch means (spec §3.2 'Loss').

  The released command trains the summary term only (`last_step_weight` 0); there is no
  distillation or feature-alignment term in skimming. Models without step predictions (the
  NON-RECURRENT and LSTM baselines) pass `step_logits=None`: the summary term alone.

  Args:
    logits: (B, C) from the summary m. step_logits: (B, T, C), p_t from h_t. labels: (B,).
  """
  summary = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  metrics = {'summary_ce': summary, 'summary_top1': jnp.mean(jnp.argmax(logits, -1) == labels)}
  loss = summary_weight * summary
  if step_logits is not None:
    last = optax.softmax_cross_entropy_with_integer_labels(step_logits[:, -1], labels).mean()
    loss = loss + last_step_weight * last
    metrics['last_step_ce'] = last
    metrics['last_step_top1'] = jnp.mean(jnp.argmax(step_logits[:, -1], -1) == labels)
  elif last_step_weight:
    raise ValueError('skimming_loss: last_step_weight > 0 needs step_logits')
  metrics['loss'] = loss
  return loss, metrics


def param_group(path: tuple[str, ...]) -> str:
  """'fusion' for Ψ, 'classifier' for FC_cls, 'default' for everything else."""
  if path and path[0] in ('fusion', 'classifier'):
    return path[0]
  return 'default'


def param_groups(params) -> Mapping:
  """The group label of every leaf of `params` (a tree of the same structure)."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  return flax.traverse_util.unflatten_dict({k: param_group(k) for k in flat})


def learning_rate_schedule(
  base_lr: float, steps_per_epoch: int, decay_epochs: Sequence[float] = (15, 20), factor=0.1
) -> optax.Schedule:
  """Multi-step: `base_lr`, times `factor` at each of `decay_epochs`; no warm-up."""
  boundaries = {int(round(e * steps_per_epoch)): factor for e in decay_epochs}
  return optax.piecewise_constant_schedule(base_lr, {b: f for b, f in boundaries.items() if b > 0})


def make_optimizer(
  *,
  base_lr: float = 0.01,
  steps_per_epoch: int,
  decay_epochs: Sequence[float] = (15, 20),
  decay_factor: float = 0.1,
  momentum: float = 0.9,
  nesterov: bool = True,
  weight_decay: float = 1e-4,
  group_factors: Mapping[str, float] | None = None,
) -> optax.GradientTransformation:
  """SGD (Nesterov) with PyTorch-style weight decay and per-group learning rates.

  Each group gets decay -> momentum -> lr·factor; a group with factor 0 (Ψ) is frozen
  (`optax.set_to_zero`: no decay, no momentum state). Apply it to the 'params' collection.
  """
  factors = dict(GROUP_FACTORS if group_factors is None else group_factors)
  transforms = {}
  for group, f in factors.items():
    if f == 0:
      transforms[group] = optax.set_to_zero()
      continue
    schedule = learning_rate_schedule(base_lr * f, steps_per_epoch, decay_epochs, decay_factor)
    transforms[group] = optax.chain(
      optax.add_decayed_weights(weight_decay),
      optax.sgd(schedule, momentum=momentum, nesterov=nesterov),
    )
  return optax.multi_transform(transforms, param_groups)


MODEL_INPUTS = ('image', 'audio', 'mask')


def loss(
  model,
  params,
  batch_stats,
  batch: Mapping[str, jax.Array],
  rng: jax.Array,
  step: jax.Array,
  *,
  summary_weight: float = 1.0,
  last_step_weight: float = 0.0,
):
  """The task seam's loss: (scalar, (new batch_stats, metrics)); pure and jittable.

  Reads `MODEL_INPUTS` and 'label' from `batch`; the 'start' stream (the position masked
  before step 1) is `rng` folded with `step`.
  """
  (logits, aux), updates = model.apply(
    {'params': params, 'batch_stats': batch_stats or {}},
    {k: batch[k] for k in MODEL_INPUTS},
    train=True,
    rngs={'start': jax.random.fold_in(rng, step)},
    mutable=['batch_stats'],
  )
  value, metrics = skimming_loss(
    logits,
    aux.get('step_logits'),
    batch['label'],
    summary_weight=summary_weight,
    last_step_weight=last_step_weight,
  )
  return value, (updates.get('batch_stats', {}), metrics)


def predict(model, variables, batch: Mapping[str, jax.Array], rng: jax.Array | None = None):
  """Per-video outputs of one eval batch: the summary ('logits'), p_T ('last_step_logits'),
  every early stop ('running_logits') and the indexed pairs ('indices').

  The start position comes from `batch['start_index']` when present, else from `rng`
  (default: a fixed key, so evaluation is reproducible).
  """
  inputs = {k: batch[k] for k in MODEL_INPUTS + ('start_index',) if k in batch}
  rng = jax.random.key(0) if rng is None else rng
  logits, aux = model.apply(variables, inputs, train=False, rngs={'start': rng})
  return {
    'logits': logits,
    'last_step_logits': aux['step_logits'][:, -1],
    'running_logits': aux['running_logits'],
    'indices': aux['image_indices'],
  }


def video_results(outputs: Mapping[str, np.ndarray], labels, num_classes: int, mask=None):
  """The released outputs [code]: avgpool (summary) and LSTM (p_T) top-1 and mAP, in %, plus
  top-1 at every early stop t'. `outputs` are `predict`'s, gathered over the split."""
  keep = np.ones(len(labels), bool) if mask is None else np.asarray(mask) > 0
  labels = np.asarray(labels)[keep]
  results = {}
  for name, key in (('avgpool', 'logits'), ('lstm', 'last_step_logits')):
    scores = sb.softmax(np.asarray(outputs[key])[keep])
    for metric, value in sb.video_metrics(scores, labels, num_classes).items():
      results[f'{name}_{metric}'] = value
  per_step = sb.step_metrics(np.asarray(outputs['running_logits'])[keep], labels, num_classes)
  for t, m in enumerate(per_step, start=1):
    results[f'early_stop_{t}_top1'] = m['top1']
  return results


def make_train_step(model, optimizer: optax.GradientTransformation, **loss_kwargs):
  """A pure `step(params, batch_stats, opt_state, batch, rng) -> (..., metrics)` to `jax.jit`,
  for tools and tests that run without the shared loop (`loss` is what the loop calls)."""

  def step(params, batch_stats, opt_state, batch, rng):
    grads, (new_stats, metrics) = jax.grad(
      lambda p: loss(model, p, batch_stats, batch, rng, 0, **loss_kwargs), has_aux=True
    )(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state, metrics

  return step


# -- the task on the shared loop --------------------------------------------------------------


def predict_any(model, variables, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """`predict` for Ours and for the NON-RECURRENT / LSTM baselines (which have no steps): the
  outputs a model lacks are left out."""
  from avsf_jax.models import skimming as skimming_model  # noqa: PLC0415

  if isinstance(model, skimming_model.Skimming):
    return predict(model, variables, batch)
  logits, aux = model.apply(variables, {k: batch[k] for k in MODEL_INPUTS}, train=False)
  out = {'logits': logits}
  if 'indices' in aux:
    out['indices'] = aux['indices']
  return out


def sparse_batch(batch: Mapping[str, jax.Array], skim) -> Mapping[str, jax.Array]:
  """`batch` with its banks rebuilt from every `skim.eval_subsample`-th pair (unchanged at 1)."""
  from avsf_jax.models import skimming as skimming_model  # noqa: PLC0415

  factor = int(skim.get('eval_subsample', 1))
  if factor == 1:
    return batch
  image, audio = skimming_model.sparse_banks(
    batch['image'],
    batch['audio'],
    batch['mask'],
    factor,
    skim.get('interpolation', 'torch_compat'),
  )
  return {**batch, 'image': image, 'audio': audio}


def hit_rate(indices: np.ndarray, segments: np.ndarray) -> float:
  """Fraction of picked positions inside [start, end) of each video's segment."""
  indices, segments = np.asarray(indices), np.asarray(segments)
  inside = (indices >= segments[:, :1]) & (indices < segments[:, 1:])
  return float(inside.mean())


class SkimmingTask(base.Task):
  """IMGAUD-SKIMMING (and its NON-RECURRENT / LSTM baselines) on feature banks.

  Config: `config.model` (`name` 'skimming', 'non_recurrent' or 'lstm', and the module's
  fields); `config.skim`: `image_dim` / `audio_dim` (the banks' widths), `length` (the padded
  bank length L of every batch), `min_len` / `max_len` (the training crop, drawn per batch),
  `student_export` (the fine-tuned student whose Psi ('fusion') and FC_cls ('classifier')
  are copied in; empty: fresh), `group_factors` (learning-rate factor per parameter group of
  `param_group`; 0 freezes the group), `summary_weight` / `last_step_weight` (the loss).
  Batches: `make_batch`'s keys plus 'segment' (the action's pairs) for the hit rate.
  """

  name = 'skimming'

  def check_dataset(self) -> None:
    if self.config.model.num_classes != self.info.num_classes:
      raise ValueError(
        f'config.model.num_classes={self.config.model.num_classes} but dataset '
        f'{self.config.input.dataset!r} has {self.info.num_classes} classes'
      )

  def build_model(self):
    from avsf_jax.models import ltl_models  # noqa: PLC0415

    if self.config.model.get('name') not in ('skimming', 'non_recurrent', 'lstm'):
      raise ValueError(
        f"skimming: config.model.name={self.config.model.get('name')!r}; expected 'skimming', "
        "'non_recurrent' or 'lstm'"
      )
    return ltl_models.build(self.config.model)

  def input_spec(self, *, train: bool) -> dict[str, jax.ShapeDtypeStruct]:
    del train
    skim = self.config.skim
    return {
      'image': jax.ShapeDtypeStruct((skim.length, skim.image_dim), jnp.float32),
      'audio': jax.ShapeDtypeStruct((skim.length, skim.audio_dim), jnp.float32),
      'mask': jax.ShapeDtypeStruct((skim.length,), jnp.float32),
    }

  def model_inputs(self, batch):
    return {k: batch[k] for k in MODEL_INPUTS + ('start_index',) if k in batch}

  def init_variables(self, model, rng):
    params_rng, start_rng = jax.random.split(rng)
    inputs = self.example_inputs()
    inputs['mask'] = jnp.ones_like(inputs['mask'])
    variables = model.init({'params': params_rng, 'start': start_rng}, inputs, train=False)
    params = dict(variables['params'])
    student = self.student_params
    if student is not None:
      for group in ('fusion', 'classifier'):
        if group not in params:
          continue
        fresh, theirs = params[group], student.get(group)
        shapes = jax.tree.map(np.shape, fresh)
        if theirs is None or jax.tree.map(np.shape, theirs) != shapes:
          raise ValueError(
            f'config.skim.student_export={self.config.skim.student_export!r}: its params '
            f"'{group}' {None if theirs is None else jax.tree.map(np.shape, theirs)} do not fit "
            f"the skimming model's {shapes} (banks widths, fusion_hidden, feature_dim, classes)"
          )
        params[group] = jax.tree.map(lambda a, b: jnp.asarray(b, a.dtype), fresh, theirs)
    return {'params': params, 'batch_stats': variables.get('batch_stats', {})}

  @property
  def student_params(self):
    source = self.config.skim.get('student_export', '')
    if not source:
      return None
    if not hasattr(self, '_student_params'):
      from avsf_jax.tasks import clip_finetune  # noqa: PLC0415

      variables = clip_finetune.export_variables(source, 'config.skim.student_export')
      self._student_params = variables['params']
    return self._student_params

  def _factors(self) -> dict[str, float]:
    return {**GROUP_FACTORS, **dict(self.config.skim.get('group_factors', {}))}

  def trainable(self, params):
    frozen = {g for g, f in self._factors().items() if f == 0}
    if params is None:
      return True if frozen else None
    groups = param_groups(params)
    return jax.tree.map(lambda g: g not in frozen, groups)

  def optimizer(self, schedule):
    """The released recipe's groups: SGD (config.optim: momentum, Nesterov, weight decay)
    with each group's learning rate the shared schedule times its factor; frozen groups get
    no update (and no optimizer state)."""
    optim = self.config.optim
    transforms = {}
    for group, factor in self._factors().items():
      if factor == 0:
        transforms[group] = optax.set_to_zero()
        continue
      transforms[group] = optax.chain(
        optax.add_decayed_weights(optim.weight_decay),
        optax.sgd(
          lambda s, f=factor: f * schedule(s), momentum=optim.momentum, nesterov=optim.nesterov
        ),
      )
    return optax.multi_transform(transforms, param_groups)

  def loss(self, model, params, batch_stats, batch, rng, step):
    from avsf_jax.models import skimming as skimming_model  # noqa: PLC0415

    skim = self.config.skim
    last = skim.last_step_weight if isinstance(model, skimming_model.Skimming) else 0.0
    return loss(
      model,
      params,
      batch_stats,
      batch,
      rng,
      step,
      summary_weight=skim.summary_weight,
      last_step_weight=last,
    )

  def predict(self, model, variables, batch):
    """`predict_any`; with `skim.eval_subsample` s > 1, on banks rebuilt from every s-th pair
    (sparse indexing, §3.4: `models.skimming.sparse_banks` with `skim.interpolation`)."""
    return predict_any(model, variables, sparse_batch(batch, self.config.skim))

  def export_function(self, model):
    """Banks in ('image', 'audio', 'mask'), {'scores': class softmax, 'indices': the chosen
    pairs (B, T)} out (a fixed start key: the export is deterministic). Turn indices into time
    stamps with the extraction's hop (index x hop_s seconds)."""

    def apply(variables, inputs):
      out = predict_any(model, variables, inputs)
      result = {'scores': jax.nn.softmax(out['logits'], axis=-1)}
      if 'indices' in out:
        result['indices'] = out['indices']
      return result

    return apply

  def evaluate(self, predict_fn, variables, batches, *, progress=None):
    outputs, labels, segments = {}, [], []
    for batch in progress(batches) if progress else batches:
      predictions = jax.device_get(predict_fn(variables, batch))
      keep = np.asarray(jax.device_get(batch['_mask'])) > 0
      for k, v in predictions.items():
        outputs.setdefault(k, []).append(np.asarray(v)[keep])
      labels.append(np.asarray(jax.device_get(batch['label']))[keep])
      if 'segment' in batch:
        segments.append(np.asarray(jax.device_get(batch['segment']))[keep])
    outputs = {k: np.concatenate(v) for k, v in outputs.items()}
    labels = np.concatenate(labels)
    num_classes = self.config.model.num_classes
    if 'running_logits' in outputs:
      results = video_results(outputs, labels, num_classes)
    else:
      results = {
        f'avgpool_{k}': v
        for k, v in sb.video_metrics(sb.softmax(outputs['logits']), labels, num_classes).items()
      }
    results['top1'] = results['avgpool_top1']
    if segments and 'indices' in outputs:
      results['hit_rate'] = hit_rate(outputs['indices'], np.concatenate(segments))
    outputs['label'] = labels
    return results, outputs
