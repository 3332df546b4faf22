"""AVA detection's pure loss and score functions (the task seam wires them to the trainer).

Batch keys these functions read (boxes padded to a static `max_boxes` M per clip):
- 'box_labels': (N, M, K) multi-hot, class id c in column c - 1; unlabelled boxes are all 0;
- 'box_mask': (N, M) True for real boxes, False for padding.

The loss is PySlowFast's `bce` with `reduction="mean"` over (boxes x classes) of the real
boxes only (spec `ava.md` 4): sum over valid boxes / (n_valid * K). Padded slots are removed
with `jnp.where` before the sum, so they contribute neither loss nor gradient, even if their
logits are inf or NaN.
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from avsf_jax.evaluation import ava as ava_eval
from avsf_jax.input import ava_ops
from avsf_jax.models import detector
from avsf_jax.tasks import base

# `detection.init_rng_impl`: the key implementation parameters are drawn with.
INIT_RNG_IMPLS = ('default', 'rbg')


def masked_box_bce(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean BCE-with-logits over the valid boxes' (box, class) pairs; 0 when no box is valid."""
  logits = logits.astype(jnp.float32)
  if logits.ndim != 3 or labels.shape != logits.shape or mask.shape != logits.shape[:2]:
    raise ValueError(
      'expected logits and box_labels (N, M, K) and box_mask (N, M), got '
      f'{logits.shape}, {labels.shape} and {mask.shape}'
    )
  valid = mask.astype(bool)[..., None]
  # Padded slots are replaced before the loss so that no NaN/inf can reach the gradient.
  safe_logits = jnp.where(valid, logits, 0.0)
  per_class = optax.sigmoid_binary_cross_entropy(safe_logits, labels.astype(jnp.float32))
  total = jnp.where(valid, per_class, 0.0).sum()
  count = mask.astype(jnp.float32).sum() * logits.shape[-1]
  return total / jnp.maximum(count, 1.0)


def scores(logits: jax.Array) -> jax.Array:
  """Per-class sigmoid probabilities (PySlowFast's `HEAD_ACT: sigmoid` at evaluation)."""
  return jax.nn.sigmoid(logits.astype(jnp.float32))


def loss_and_metrics(
  logits: jax.Array, batch: Mapping[str, jax.Array]
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The detection loss of a batch, and the metrics logged beside it."""
  loss = masked_box_bce(logits, batch['box_labels'], batch['box_mask'])
  num_boxes = batch['box_mask'].astype(jnp.float32).sum()
  return loss, {'detection_loss': loss, 'boxes_per_clip': num_boxes / batch['box_mask'].shape[0]}


class Detection(base.Task):
  """AVA action detection (`config.task = 'detection'`): `models.detector.Detector` on
  keyframe clips with padded person boxes; masked box BCE; frame mAP@0.5 at evaluation.

  Config: `config.model` holds the detector's fields (the backbone's plus `roi_*`);
  `config.detection` holds `max_boxes`, `test_size` (H, W of the full test frame),
  `eval_boxes` ('gt' or 'detector'), `score_threshold`, optional `files` (see
  `input.ava_pipeline`) and optional `init_rng_impl` (`INIT_RNG_IMPLS`). Batches carry the
  keys of `input.ava_pipeline`.
  """

  name = 'detection'

  def check_dataset(self) -> None:
    if int(self.config.model.num_classes) != int(self.info.num_classes):
      raise ValueError(
        f'config.model.num_classes={self.config.model.num_classes} but dataset '
        f'{self.config.input.dataset!r} has {self.info.num_classes} outputs'
      )
    if not getattr(self.info, 'evaluated_class_ids', None):
      raise ValueError(
        f'dataset {self.config.input.dataset!r} has no evaluated class ids: the detection '
        'task needs an AVA-layout dataset (input.ava_pipeline)'
      )
    frame = getattr(self.info, 'frame_size', None)
    if frame and frame[0]:
      expected = ava_ops.short_side_size(*frame, self.config.input.test_short_side)
      if tuple(self.config.detection.test_size) != tuple(expected):
        raise ValueError(
          f'detection.test_size={tuple(self.config.detection.test_size)} but frames of '
          f'{tuple(frame)} at input.test_short_side={self.config.input.test_short_side} '
          f'are {expected}'
        )

  def build_model(self) -> detector.Detector:
    return detector.build_detector(self.config.model)

  def input_spec(self, *, train: bool) -> dict[str, jax.ShapeDtypeStruct]:
    config = self.config
    t, alpha = config.input.num_frames, config.model.alpha
    if train:
      height = width = config.input.crop_size
    else:
      height, width = config.detection.test_size
    shapes = {
      'slow': (t, height, width, 3),
      'fast': (alpha * t, height, width, 3),
      'audio': (config.audio.num_frames, config.audio.num_mel_bins, 1),
    }
    spec = {p: jax.ShapeDtypeStruct(shapes[p], jnp.float32) for p in config.model.pathways}
    spec['boxes'] = jax.ShapeDtypeStruct((config.detection.max_boxes, 4), jnp.float32)
    return spec

  def init_variables(self, model, rng):
    # The RoI head has no size-bound parameters: initialised at the training crop.
    impl = self.config.detection.get('init_rng_impl', 'default')
    if impl not in INIT_RNG_IMPLS:
      raise ValueError(f'detection.init_rng_impl={impl!r}; one of {INIT_RNG_IMPLS}')
    if impl == 'rbg':
      # XLA's RngBitGenerator instead of ~120 threefry-hashed initialisers: the same
      # distributions, and on 2 CPU cores the init compiles in ~1/4 of the time (17 s -> 4 s
      # at demo scale, which `make demo-ava` pays once per variant).
      bits = jax.random.bits(rng, (2,), jnp.uint32)
      rng = jax.random.wrap_key_data(jnp.concatenate([bits, bits[::-1]]), impl='rbg')
    params_rng, dropout_rng = jax.random.split(rng)
    variables = model.init(
      {'params': params_rng, 'dropout': dropout_rng}, self.example_inputs(train=True), train=False
    )
    return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}

  def loss(self, model, params, batch_stats, batch, rng, step):
    del step
    dropout_rng, drop_pathway_rng = jax.random.split(rng)
    (logits, aux), updates = model.apply(
      {'params': params, 'batch_stats': batch_stats},
      self.model_inputs(batch),
      train=True,
      rngs={'dropout': dropout_rng, 'drop_pathway': drop_pathway_rng},
      mutable=['batch_stats'],
    )
    loss, metrics = loss_and_metrics(logits, batch)
    metrics['drop_pathway_keep'] = jnp.mean(aux['drop_pathway_keep'])
    return loss, (updates['batch_stats'], metrics)

  def predict(self, model, variables, batch):
    logits, _ = model.apply(variables, self.model_inputs(batch), train=False)
    return {'scores': scores(logits)}

  def evaluate(self, predict_fn, variables, batches, *, progress=None):
    """Frame mAP@0.5 (official AVA protocol, `evaluation.ava`) over the eval split: every
    valid box gives one detection per evaluated class; excluded keyframes are dropped by
    the pipeline and again by the evaluator."""
    videos = dict(enumerate(self.info.eval_video_ids))
    kept: dict[str, list[np.ndarray]] = {k: [] for k in ('scores', 'ori_boxes', 'box_mask')}
    keys: list[str] = []
    for batch in progress(batches) if progress else batches:
      out = jax.device_get(predict_fn(variables, batch))
      real = np.asarray(jax.device_get(batch['_mask'])) > 0
      host = {k: np.asarray(jax.device_get(batch[k]))[real] for k in ('ori_boxes', 'box_mask')}
      kept['scores'].append(np.asarray(out['scores'])[real])
      kept['ori_boxes'].append(host['ori_boxes'])
      kept['box_mask'].append(host['box_mask'])
      video = np.asarray(jax.device_get(batch['video_index']))[real]
      stamp = np.asarray(jax.device_get(batch['timestamp']))[real]
      keys += [ava_eval.image_key(videos[int(v)], int(t)) for v, t in zip(video, stamp)]
    outputs = {k: np.concatenate(v) for k, v in kept.items()}
    m = outputs['box_mask'].shape[1]
    table = ava_eval.detection_table(
      np.repeat(np.asarray(keys, dtype=object), m),
      outputs['ori_boxes'].reshape(-1, 4),
      outputs['scores'].reshape(len(keys) * m, -1),
      self.info.evaluated_class_ids,
      outputs['box_mask'].reshape(-1),
    )
    excluded = set(self.info.excluded_keys)
    if excluded & set(keys):
      raise ValueError(f'excluded keyframes reached the evaluator: {sorted(excluded & set(keys))}')
    result = ava_eval.frame_map(
      ava_eval.rows_to_boxes(self.info.groundtruth),
      table,
      self.info.evaluated_class_ids,
      excluded_keys=excluded,
    )
    results = {
      'frame_map': result.mean_ap,
      'per_class_ap': [float(a) for a in result.average_precision],
      'class_ids': list(result.class_ids),
      'num_groundtruth': [int(n) for n in result.num_groundtruth],
      'num_keyframes': len(keys),
      'num_boxes': int(outputs['box_mask'].sum()),
    }
    outputs['keys'] = np.asarray(keys)
    return results, outputs

  def export_predict(self, loaded):
    """A `predict_fn(variables, batch)` for `evaluate` that runs a loaded export
    (`export.load`): the batch's input keys in, `{'scores': (N, M, classes)}` out (detection
    batches have no views axis, so classification's reshape does not apply)."""

    def predict(variables, batch):
      del variables  # the export carries its own
      inputs = {k: np.asarray(batch[k]) for k in loaded.input_spec}
      return {'scores': np.asarray(loaded.predict(inputs))}

    return predict

  def export_function(self, model):
    """`predict(clip, boxes[, audio])`: per-box sigmoid scores (N, M, classes)."""

    def apply(variables, inputs):
      return scores(model.apply(variables, inputs, train=False)[0])

    return apply
