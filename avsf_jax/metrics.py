"""Host-side metrics: averaging of training metrics, and evaluation figures from scores."""

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np


def mean_of_steps(per_step: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """Averages per-step scalar metrics (device arrays are fetched once, together)."""
  fetched = jax.device_get(list(per_step))
  keys = fetched[0].keys() if fetched else ()
  return {k: float(np.mean([m[k] for m in fetched])) for k in keys}


def classification_results(
  scores: np.ndarray, labels: np.ndarray, num_classes: int
) -> dict[str, Any]:
  """top1/top5 (percent), per-class top-1 (percent, NaN for absent classes), example count."""
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels).astype(np.int64)
  ranked = np.argsort(-scores, axis=-1, kind='stable')
  hit1 = ranked[:, 0] == labels
  hit5 = (ranked[:, : min(5, num_classes)] == labels[:, None]).any(axis=-1)
  per_class = []
  for c in range(num_classes):
    members = labels == c
    per_class.append(float(100.0 * hit1[members].mean()) if members.any() else float('nan'))
  return {
    'top1': float(100.0 * hit1.mean()) if len(labels) else float('nan'),
    'top5': float(100.0 * hit5.mean()) if len(labels) else float('nan'),
    'per_class_top1': per_class,
    'num_examples': int(len(labels)),
  }


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
  """Mean over classes with at least one positive of average precision (percent)."""
  aps = []
  for c in range(targets.shape[1]):
    positive = targets[:, c] > 0
    if not positive.any():
      continue
    order = np.argsort(-scores[:, c], kind='stable')
    hits = positive[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    aps.append(precision[hits].mean())
  return float(100.0 * np.mean(aps)) if aps else float('nan')
