"""Evaluation metrics of the papers' test protocols, as pure numpy functions.

The multi-view evaluator gathers per-view logits of every video, drops padding with the batch
`_mask`, and turns them into the figures the papers report (SPEC section 3, "Inference"):

- `aggregate_views`: per-view logits (N, V, K) -> video scores (N, K). Kinetics and EPIC
  average the softmax over the views; Charades max-pools the per-class sigmoid over clips.
- `topk_accuracy`, `per_class_accuracy`: single-label accuracy in percent.
- `mean_average_precision`: Charades mAP as PySlowFast computes it (scikit-learn's average
  precision per class, classes without positives left out, mean over the rest), in percent.
- `epic_metrics`: EPIC-Kitchens verb / noun / action top-1 and top-5, the action being the
  (verb, noun) pair ranked by the outer product of the verb and noun probabilities.

Every metric takes `mask` (1 for a real example, 0 for padding), so padded eval batches never
count. Ranks break ties in favour of the lower class index (a stable descending sort), so a
result never depends on the sorting algorithm. Only numpy is used: no TensorFlow, no JAX
tracing; jax arrays are accepted and fetched with `np.asarray`.
"""

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

AGGREGATION_MODES = ('mean_softmax', 'max')

# Outer-product scores of at most this many (example, verb, noun) entries exist at once.
_ACTION_CHUNK_ELEMENTS = 1 << 22


class MapResult(NamedTuple):
  """Mean average precision (percent) and AP per class (percent; NaN: no positives)."""

  mean_ap: float
  per_class_ap: np.ndarray


def _scores_2d(scores, name: str = 'scores') -> np.ndarray:
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 2:
    raise ValueError(f'{name}: expected (num_examples, num_classes), got shape {scores.shape}')
  if not np.all(np.isfinite(scores)):
    raise ValueError(f'{name}: expected finite values, got NaN or Inf')
  return scores


def _mask(mask, num_examples: int) -> np.ndarray:
  """`mask` (None = all real) -> a boolean (N,) array; 1 marks a real example, 0 padding."""
  if mask is None:
    return np.ones(num_examples, bool)
  mask = np.asarray(mask)
  if mask.shape != (num_examples,):
    raise ValueError(f'mask: expected shape ({num_examples},), got {mask.shape}')
  if not np.all((mask == 0) | (mask == 1)):
    raise ValueError('mask: expected only 0 (padding) and 1 (real example)')
  return mask.astype(bool)


def _labels(labels, num_examples: int, num_classes: int, name: str = 'labels') -> np.ndarray:
  labels = np.asarray(labels)
  if labels.shape != (num_examples,):
    raise ValueError(
      f'{name}: expected integer class indices of shape ({num_examples},), got {labels.shape}'
    )
  if labels.size and not np.all(np.equal(np.mod(labels, 1), 0)):
    raise ValueError(f'{name}: expected integer class indices')
  labels = labels.astype(np.int64)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(
      f'{name}: expected class indices in [0, {num_classes}), '
      f'got values in [{labels.min()}, {labels.max()}]'
    )
  return labels


def _rank_of_label(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """0-based rank of each example's label: classes scoring higher, or equal with lower index."""
  true = np.take_along_axis(scores, labels[:, None], axis=1)
  above = (scores > true).sum(axis=1)
  lower_index = np.arange(scores.shape[1])[None, :] < labels[:, None]
  tied_before = ((scores == true) & lower_index).sum(axis=1)
  return above + tied_before


def _softmax(logits: np.ndarray) -> np.ndarray:
  shifted = logits - logits.max(axis=-1, keepdims=True)
  e = np.exp(shifted)
  return e / e.sum(axis=-1, keepdims=True)


def aggregate_views(scores, mode: str) -> np.ndarray:
  """Per-view logits (N, V, K) -> video scores (N, K), as the papers' test protocols do.

  Args:
    scores: logits of every view of every video, (num_videos, num_views, num_classes).
    mode: 'mean_softmax' (Kinetics, EPIC: the average over views of the softmax
      probabilities) or 'max' (Charades: the per-class maximum over clips of the sigmoid
      scores, for multi-label classes).

  Returns:
    float64 (N, K) video scores: probabilities summing to 1 for 'mean_softmax', per-class
    probabilities in (0, 1) for 'max'.
  """
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 3:
    raise ValueError(
      f'scores: expected per-view logits (num_videos, num_views, num_classes), '
      f'got shape {scores.shape}'
    )
  if scores.shape[1] == 0 or scores.shape[2] == 0:
    raise ValueError(f'scores: expected at least one view and one class, got shape {scores.shape}')
  if not np.all(np.isfinite(scores)):
    raise ValueError('scores: expected finite logits, got NaN or Inf')
  if mode == 'mean_softmax':
    return _softmax(scores).mean(axis=1)
  if mode == 'max':
    # The sigmoid is monotonic, so the max of the sigmoids is the sigmoid of the max logit;
    # written with tanh, it cannot overflow for large negative logits.
    return 0.5 * (1.0 + np.tanh(0.5 * scores.max(axis=1)))
  raise ValueError(f'mode: expected one of {AGGREGATION_MODES}, got {mode!r}')


def topk_accuracy(scores, labels, ks: Sequence[int] = (1, 5), mask=None) -> dict[str, float]:
  """Top-k accuracy in percent for each k: `{'top1': .., 'top5': ..}`.

  An example counts as correct at k when its label is among the k best-scoring classes
  (ties go to the lower class index). k larger than the number of classes is every class.
  With no real example (everything masked) the accuracies are NaN.

  Args:
    scores: (N, K) video scores or logits (only their order matters).
    labels: (N,) integer class indices.
    ks: the k values, each >= 1.
    mask: optional (N,) 1 for real examples, 0 for padding.
  """
  scores = _scores_2d(scores)
  n, k_classes = scores.shape
  labels = _labels(labels, n, k_classes)
  keep = _mask(mask, n)
  for k in ks:
    if int(k) != k or k < 1:
      raise ValueError(f'ks: expected positive integers, got {k!r}')
  ranks = _rank_of_label(scores[keep], labels[keep])
  return {
    f'top{int(k)}': float(100.0 * np.mean(ranks < k)) if ranks.size else float('nan') for k in ks
  }


def per_class_accuracy(scores, labels, num_classes: int, mask=None) -> np.ndarray:
  """Top-1 accuracy of each class in percent, (num_classes,) float64.

  A class with no (real) example in the evaluation set has no accuracy: its entry is NaN,
  not 0, so plots and averages can leave it out instead of counting it as a failure.

  Args:
    scores: (N, num_classes) video scores or logits.
    labels: (N,) integer class indices.
    num_classes: K, which `scores` must match.
    mask: optional (N,) 1 for real examples, 0 for padding.
  """
  scores = _scores_2d(scores)
  n, k_classes = scores.shape
  if k_classes != num_classes:
    raise ValueError(f'scores: expected {num_classes} classes, got {k_classes}')
  labels = _labels(labels, n, num_classes)
  keep = _mask(mask, n)
  hit = _rank_of_label(scores[keep], labels[keep]) == 0
  labels = labels[keep]
  count = np.bincount(labels, minlength=num_classes)
  correct = np.bincount(labels, weights=hit.astype(np.float64), minlength=num_classes)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(count > 0, 100.0 * correct / count, np.nan)


def average_precision(scores, targets) -> float:
  """Average precision of one class, exactly as `sklearn.metrics.average_precision_score`.

  AP = sum over score thresholds (high to low) of (R_t - R_{t-1}) * P_t, with tied scores
  forming one threshold. NaN when `targets` has no positive.

  Args:
    scores: (N,) scores of the class.
    targets: (N,) 0/1 ground truth.
  """
  scores = np.asarray(scores, np.float64)
  targets = np.asarray(targets, np.float64)
  if targets.sum() == 0:
    return float('nan')
  order = np.argsort(-scores, kind='stable')
  scores, targets = scores[order], targets[order]
  # Last position of every run of equal scores: the points of the precision-recall curve.
  last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
  tp = np.cumsum(targets)[last]
  precision = tp / (last + 1)
  recall = tp / tp[-1]
  return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def mean_average_precision(scores, multi_hot, mask=None) -> MapResult:
  """Charades mAP in percent, as PySlowFast's `get_map`, plus the AP of every class.

  Classes with no positive among the real examples are left out of the mean (their AP is
  undefined) and get NaN in `per_class_ap`. With no class having a positive, the mean is NaN.

  Args:
    scores: (N, K) video scores (e.g. `aggregate_views(..., 'max')`).
    multi_hot: (N, K) 0/1 ground truth.
    mask: optional (N,) 1 for real examples, 0 for padding.

  Returns:
    `MapResult(mean_ap, per_class_ap)`, both in percent.
  """
  scores = _scores_2d(scores)
  targets = np.asarray(multi_hot)
  if targets.shape != scores.shape:
    raise ValueError(f'multi_hot: expected shape {scores.shape} (as scores), got {targets.shape}')
  if not np.all((targets == 0) | (targets == 1)):
    raise ValueError('multi_hot: expected only 0 and 1 values')
  keep = _mask(mask, scores.shape[0])
  scores, targets = scores[keep], targets[keep]
  per_class = np.array(
    [100.0 * average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])]
  )
  valid = ~np.isnan(per_class)
  mean_ap = float(per_class[valid].mean()) if valid.any() else float('nan')
  return MapResult(mean_ap, per_class)


def _check_probabilities(p: np.ndarray, name: str) -> None:
  if np.any(p < 0) or np.any(p > 1):
    raise ValueError(
      f'{name}: expected probabilities in [0, 1] (e.g. from aggregate_views); '
      'pass from_logits=True for logits'
    )


def epic_metrics(
  verb_scores, noun_scores, verb_labels, noun_labels, mask=None, *, from_logits: bool = False
) -> dict[str, float]:
  """EPIC-Kitchens verb, noun and action top-1 / top-5 accuracy in percent.

  The action is the (verb, noun) pair; its score is verb_prob * noun_prob (the outer product,
  as the EPIC-Kitchens evaluation ranks actions), and an action is correct at k when the true
  pair is among the k best pairs. Ties go to the lower (verb, noun) index in row-major order.

  Args:
    verb_scores: (N, Kv) verb probabilities (video scores), or logits with `from_logits`.
    noun_scores: (N, Kn) noun probabilities, or logits with `from_logits`.
    verb_labels: (N,) verb class indices.
    noun_labels: (N,) noun class indices.
    mask: optional (N,) 1 for real examples, 0 for padding.
    from_logits: apply a softmax to the scores first.

  Returns:
    `verb_top1`, `verb_top5`, `noun_top1`, `noun_top5`, `action_top1`, `action_top5`.
  """
  verb = _scores_2d(verb_scores, 'verb_scores')
  noun = _scores_2d(noun_scores, 'noun_scores')
  n = verb.shape[0]
  if noun.shape[0] != n:
    raise ValueError(f'noun_scores: expected {n} examples (as verb_scores), got {noun.shape[0]}')
  if from_logits:
    verb, noun = _softmax(verb), _softmax(noun)
  else:
    _check_probabilities(verb, 'verb_scores')
    _check_probabilities(noun, 'noun_scores')
  verb_labels = _labels(verb_labels, n, verb.shape[1], 'verb_labels')
  noun_labels = _labels(noun_labels, n, noun.shape[1], 'noun_labels')
  keep = _mask(mask, n)
  results = {}
  for name, s, y in (('verb', verb, verb_labels), ('noun', noun, noun_labels)):
    for k, v in topk_accuracy(s, y, (1, 5), keep).items():
      results[f'{name}_{k}'] = v
  verb, noun = verb[keep], noun[keep]
  pair = verb_labels[keep] * noun.shape[1] + noun_labels[keep]
  chunk = max(1, _ACTION_CHUNK_ELEMENTS // (verb.shape[1] * noun.shape[1]))
  ranks = []
  for i in range(0, verb.shape[0], chunk):
    action = (verb[i : i + chunk, :, None] * noun[i : i + chunk, None, :]).reshape(
      -1, verb.shape[1] * noun.shape[1]
    )
    ranks.append(_rank_of_label(action, pair[i : i + chunk]))
  ranks = np.concatenate(ranks) if ranks else np.zeros(0, np.int64)
  for k in (1, 5):
    results[f'action_top{k}'] = float(100.0 * np.mean(ranks < k)) if ranks.size else float('nan')
  return results
