"""Evaluation: single- or multi-view classification accuracy over a finite eval split.

Eval batches carry a views axis, (b, V, ...): the V views of a video stay together on one
device, run through the model as b * V clips, and their softmax scores are averaged
(SPEC 3: 10 temporal x 3 spatial views). Padded examples (`_mask == 0`) are dropped after
gathering, so every process runs the same number of batches.
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from avsf_jax import losses, metrics
from avsf_jax.models import AVSlowFast


def make_predict_fn(
  model: AVSlowFast, variable_shardings, batch_sharding, *, multi_label: bool
) -> Callable:
  """A jitted `(variables, batch) -> scores` averaged over views, per head."""

  def predict(variables, batch):
    inputs = {}
    for p in model.pathways:
      x = batch[p]
      inputs[p] = x.reshape((-1,) + x.shape[2:])  # (b, V, ...) -> (b * V, ...)
    views = batch[model.pathways[0]].shape[1]
    logits, _ = model.apply(variables, inputs, train=False)
    heads = logits if isinstance(logits, Mapping) else {None: logits}
    scores = {}
    for head, head_logits in heads.items():
      probs = jax.nn.sigmoid(head_logits) if multi_label else jax.nn.softmax(head_logits)
      scores[losses.label_key(head)] = probs.reshape(-1, views, probs.shape[-1]).mean(axis=1)
    return jax.tree.map(lambda s: s.astype(jnp.float32), scores)

  return jax.jit(
    predict, in_shardings=(variable_shardings, batch_sharding), out_shardings=batch_sharding
  )


def _gather(x: jax.Array) -> np.ndarray:
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(x))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def evaluate(
  predict_fn: Callable,
  variables: Any,
  batches: Iterable[Mapping[str, jax.Array]],
  *,
  num_classes: int | Mapping[str, int],
  multi_label: bool,
) -> dict[str, Any]:
  """Runs `predict_fn` over every batch; returns top1/top5/per-class (or mAP) per head."""
  collected: dict[str, list[np.ndarray]] = {}
  labels: dict[str, list[np.ndarray]] = {}
  masks = []
  for batch in batches:
    scores = predict_fn(variables, batch)
    for key, s in scores.items():
      collected.setdefault(key, []).append(_gather(s))
      labels.setdefault(key, []).append(_gather(batch[key]))
    masks.append(_gather(batch['_mask']) > 0)
  mask = np.concatenate(masks)
  sizes = dict(num_classes) if isinstance(num_classes, Mapping) else {None: num_classes}
  results: dict[str, Any] = {}
  for head, k in sizes.items():
    key = losses.label_key(head)
    s = np.concatenate(collected[key])[mask]
    y = np.concatenate(labels[key])[mask]
    if multi_label:
      head_results = {'mAP': metrics.mean_average_precision(s, y), 'num_examples': int(len(y))}
    else:
      head_results = metrics.classification_results(s, y, k)
    if head is None:
      results.update(head_results)
    else:
      results.update({f'{n}_{head}': v for n, v in head_results.items()})
  return results
