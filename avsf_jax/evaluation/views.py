"""Evaluation: single- or multi-view scores over a finite eval split, and the papers' metrics.

Eval batches carry a views axis, (b, V, ...): the V views of a video stay together on one
device and run through the model as b * V clips; the per-view logits come back to the host,
where `eval_metrics.aggregate_views` applies the protocol (`evals.view_aggregation`: the
average of softmax scores for Kinetics and EPIC, the max over clips of sigmoid scores for
Charades). Padded examples (`_mask == 0`) are dropped after gathering, so every process runs
the same number of batches and every video is scored exactly once.

Metrics: top-1 / top-5 and per-class top-1 (single-label), mAP and per-class AP
(multi-label), and EPIC-Kitchens verb / noun / action accuracy when the heads are `verb` and
`noun`. All percentages.
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from avsf_jax import losses
from avsf_jax.evaluation import metrics as eval_metrics
from avsf_jax.models import AVSlowFast


def per_view_logits(model: AVSlowFast) -> Callable:
  """`(variables, batch) -> {label key: (b, V, K) float32 logits}` (not jitted)."""

  def predict(variables, batch):
    inputs = {}
    for p in model.pathways:
      x = batch[p]
      inputs[p] = x.reshape((-1,) + x.shape[2:])  # (b, V, ...) -> (b * V, ...)
    b, views = batch[model.pathways[0]].shape[:2]
    logits, _ = model.apply(variables, inputs, train=False)
    heads = logits if isinstance(logits, Mapping) else {None: logits}
    return {
      losses.label_key(head): x.astype(jnp.float32).reshape(b, views, x.shape[-1])
      for head, x in heads.items()
    }

  return predict


def make_predict_fn(
  model: AVSlowFast, variable_shardings, batch_sharding, *, multi_label: bool
) -> Callable:
  """The jitted, sharded `per_view_logits` of `model`."""
  del multi_label  # the view aggregation happens on the host, by protocol
  return jax.jit(
    per_view_logits(model),
    in_shardings=(variable_shardings, batch_sharding),
    out_shardings=batch_sharding,
  )


def _gather(x: jax.Array) -> np.ndarray:
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(x))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def collect(
  predict_fn: Callable,
  variables: Any,
  batches: Iterable[Mapping[str, Any]],
  *,
  progress: Callable[[Iterable], Iterable] | None = None,
) -> dict[str, np.ndarray]:
  """Per-view logits, labels and video indices of every real (unpadded) example."""
  collected: dict[str, list[np.ndarray]] = {}
  for batch in progress(batches) if progress else batches:
    out = {f'logits/{k}': _gather(v) for k, v in predict_fn(variables, batch).items()}
    for key in batch:
      if key.startswith('label') or key in ('_mask', 'video_index'):
        out[key] = _gather(batch[key])
    for key, value in out.items():
      collected.setdefault(key, []).append(value)
  if not collected:
    raise ValueError('evaluation: the eval split produced no batches')
  arrays = {k: np.concatenate(v) for k, v in collected.items()}
  keep = arrays.pop('_mask') > 0
  return {k: v[keep] for k, v in arrays.items()}


def metrics_from_logits(
  collected: Mapping[str, np.ndarray],
  *,
  num_classes: int | Mapping[str, int],
  multi_label: bool,
  view_aggregation: str,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """(results, video scores per label key) from `collect`'s output."""
  sizes = dict(num_classes) if isinstance(num_classes, Mapping) else {None: num_classes}
  results: dict[str, Any] = {}
  scores: dict[str, np.ndarray] = {}
  for head, k in sizes.items():
    key = losses.label_key(head)
    s = eval_metrics.aggregate_views(collected[f'logits/{key}'], view_aggregation)
    y = collected[key]
    scores[key] = s
    if multi_label:
      ap = eval_metrics.mean_average_precision(s, y)
      head_results = {'mAP': ap.mean_ap, 'per_class_ap': ap.per_class_ap.tolist()}
    else:
      head_results = {
        **eval_metrics.topk_accuracy(s, y, ks=(1, min(5, k))),
        'per_class_top1': eval_metrics.per_class_accuracy(s, y, k).tolist(),
      }
      head_results.setdefault('top5', head_results.get(f'top{min(5, k)}'))
    head_results['num_examples'] = int(len(y))
    if head is None:
      results.update(head_results)
    else:
      results.update({f'{n}_{head}': v for n, v in head_results.items()})
  if set(sizes) == {'verb', 'noun'} and not multi_label:
    results.update(
      eval_metrics.epic_metrics(
        scores['label_verb'], scores['label_noun'], collected['label_verb'], collected['label_noun']
      )
    )
  return results, scores


def evaluate(
  predict_fn: Callable,
  variables: Any,
  batches: Iterable[Mapping[str, jax.Array]],
  *,
  num_classes: int | Mapping[str, int],
  multi_label: bool,
  view_aggregation: str = 'mean_softmax',
  progress: Callable[[Iterable], Iterable] | None = None,
  return_scores: bool = False,
):
  """Runs `predict_fn` over every batch; returns the metrics (and per-video scores)."""
  collected = collect(predict_fn, variables, batches, progress=progress)
  results, scores = metrics_from_logits(
    collected, num_classes=num_classes, multi_label=multi_label, view_aggregation=view_aggregation
  )
  if not return_scores:
    return results
  per_video = {f'scores/{k}': v for k, v in scores.items()}
  per_video.update({k: v for k, v in collected.items() if not k.startswith('logits/')})
  return results, per_video
