"""The transfer protocol of the self-supervised evaluation (spec 3): top-1 over views, then the
mean over the three official splits (comparison tables) or split 1 alone (ablations)."""

from collections.abc import Mapping

import numpy as np

from avsf_jax.evaluation import metrics

SPLITS = (1, 2, 3)


def view_top1(per_view_logits, labels, mask=None, mode: str = 'mean_softmax') -> float:
  """Top-1 (percent) of videos scored by aggregating their views' logits (N, V, K)."""
  scores = metrics.aggregate_views(per_view_logits, mode)
  return metrics.topk_accuracy(scores, labels, ks=(1,), mask=mask)['top1']


def mean_over_splits(per_split: Mapping[int, float]) -> dict[str, float]:
  """{'split1', 'split2', 'split3', 'mean'} from the top-1 of each official split.

  All three splits are required: the papers' tables average them, and a mean over fewer
  would be a different number under the same name.
  """
  missing = [s for s in SPLITS if s not in per_split]
  extra = [s for s in per_split if s not in SPLITS]
  if missing or extra:
    raise ValueError(f'mean_over_splits: need splits {SPLITS}; missing {missing}, unknown {extra}')
  out = {f'split{s}': float(per_split[s]) for s in SPLITS}
  out['mean'] = float(np.mean([per_split[s] for s in SPLITS]))
  return out
