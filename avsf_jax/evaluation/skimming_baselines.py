"""Video-level recognition from image-audio pairs: the §4 selection baselines and their metrics.

Every baseline is a *selection*: a function from one video's per-pair predictions (N, C) to the
positions whose predictions it averages (as softmax probabilities, spec §4 [assumption]).
`evaluate_selections` scores any set of them with one evaluator; `video_metrics` is ActivityNet's
video-level protocol (top-1, and mAP = the mean over classes of the AP of the video scores
against one-hot labels); `step_metrics` and `early_stop` cover early stopping (§3.5) from the
model's per-step running logits; `segment_hit_rate` says how many picks fall in a ground-truth
segment (the demo's A3 check).
"""

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from sklearn import linear_model

from avsf_jax.evaluation import metrics

NUM_PICKS = 10
Selection = Callable[[np.ndarray], np.ndarray]


def softmax(logits) -> np.ndarray:
  logits = np.asarray(logits, np.float64)
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def uniform(n: int, k: int = NUM_PICKS) -> np.ndarray:
  """k uniform time stamps j_i = ⌊(i + 0.5)·N/k⌋ (spec §4 [assumption]); all N when N <= k."""
  if n <= k:
    return np.arange(n)
  return np.floor((np.arange(k) + 0.5) * n / k).astype(np.int64)


def random(n: int, rng: np.random.Generator, k: int = NUM_PICKS) -> np.ndarray:
  """k distinct random time stamps, sorted."""
  return np.sort(rng.choice(n, size=min(k, n), replace=False))


def front(n: int, k: int = NUM_PICKS) -> np.ndarray:
  """The first k."""
  return np.arange(min(k, n))


def center(n: int, k: int = NUM_PICKS) -> np.ndarray:
  """The middle k: ⌊N/2⌋ − k/2 … ⌊N/2⌋ + k/2 − 1, kept inside the video."""
  start = int(np.clip(n // 2 - k // 2, 0, max(n - k, 0)))
  return np.arange(start, min(start + k, n))


def end(n: int, k: int = NUM_PICKS) -> np.ndarray:
  """The last k."""
  return np.arange(max(n - k, 0), n)


def dense(n: int) -> np.ndarray:
  """Every pair."""
  return np.arange(n)


def scsampler(pair_logits: np.ndarray, k: int = NUM_PICKS) -> np.ndarray:
  """SCSampler-like: the k pairs whose classifier is most confident (largest max softmax)."""
  confidence = softmax(pair_logits).max(-1)
  return np.sort(np.argsort(-confidence, kind='stable')[:k])


def position_selections(seed: int = 0, k: int = NUM_PICKS) -> dict[str, Selection]:
  """The selections that look only at N: RANDOM (seeded), UNIFORM, FRONT, CENTER, END, DENSE."""
  rng = np.random.default_rng(seed)
  return {
    'random': lambda p: random(len(p), rng, k),
    'uniform': lambda p: uniform(len(p), k),
    'front': lambda p: front(len(p), k),
    'center': lambda p: center(len(p), k),
    'end': lambda p: end(len(p), k),
    'dense': lambda p: dense(len(p)),
    'scsampler': lambda p: scsampler(p, k),
  }


def video_scores(pair_logits: np.ndarray, indices) -> np.ndarray:
  """The mean softmax probability of the selected pairs, (C,)."""
  indices = np.asarray(indices)
  if indices.size == 0 or indices.min() < 0 or indices.max() >= len(pair_logits):
    raise ValueError(f'indices {indices} do not select from a video of {len(pair_logits)} pairs')
  return softmax(pair_logits[indices]).mean(axis=0)


def video_metrics(scores, labels, num_classes: int) -> dict[str, float]:
  """ActivityNet video classification: top-1 (%) and mAP (%) over classes of one-hot labels."""
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels)
  one_hot = np.eye(num_classes)[labels]
  return {
    'top1': metrics.topk_accuracy(scores, labels, ks=(1,))['top1'],
    'mAP': metrics.mean_average_precision(scores, one_hot).mean_ap,
  }


def evaluate_selections(
  pair_logits: Sequence[np.ndarray],
  labels: Sequence[int],
  selections: Mapping[str, Selection],
  num_classes: int,
) -> dict[str, dict]:
  """Scores each named selection over every video: {'top1', 'mAP', 'indices', 'pairs'}.

  Args:
    pair_logits: per video, the (N_v, C) logits of the image-audio classifier on each pair.
    labels: per video, the class.
    selections: name -> function of one video's (N, C) logits returning the indices used.
  """
  results = {}
  for name, select in selections.items():
    indices = [np.asarray(select(p)) for p in pair_logits]
    scores = np.stack([video_scores(p, i) for p, i in zip(pair_logits, indices)])
    results[name] = {
      **video_metrics(scores, labels, num_classes),
      'indices': indices,
      'pairs': float(np.mean([len(i) for i in indices])),
    }
  return results


def segment_hit_rate(indices: Sequence[np.ndarray], segments: Sequence[tuple[int, int]]) -> float:
  """The fraction of picked positions inside each video's [start, end) segment of pairs."""
  hits = [
    np.mean((np.asarray(i) >= s) & (np.asarray(i) < e)) for i, (s, e) in zip(indices, segments)
  ]
  return float(np.mean(hits))


def step_metrics(running_logits, labels, num_classes: int) -> list[dict[str, float]]:
  """Top-1 and mAP of stopping at every t' = 1..T, from (V, T, C) running logits FC_cls(m_t)."""
  running = np.asarray(running_logits)
  return [
    video_metrics(softmax(running[:, t]), labels, num_classes) for t in range(running.shape[1])
  ]


def early_stop(
  running_logits, *, threshold: float | None = None, max_steps: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Stops each video at the first t' whose max softmax(FC_cls(m_t')) >= `threshold`.

  Without a threshold every video stops at `max_steps` (default T): a fixed budget of steps.

  Returns:
    (V, C) logits at the stop, and (V,) the steps taken (1-based).
  """
  running = np.asarray(running_logits)
  v, t, _ = running.shape
  limit = t if max_steps is None else int(max_steps)
  if not 1 <= limit <= t:
    raise ValueError(f'max_steps={max_steps}: expected 1..{t}')
  steps = np.full(v, limit)
  if threshold is not None:
    confident = softmax(running[:, :limit]).max(-1) >= threshold
    first = np.argmax(confident, axis=1) + 1
    steps = np.where(confident.any(axis=1), first, limit)
  return running[np.arange(v), steps - 1], steps


def _stop_features(running_logits: np.ndarray) -> np.ndarray:
  """(V, T, 3): max softmax, top-1 minus top-2 margin, and t/T at every step."""
  probs = np.sort(softmax(running_logits), axis=-1)
  t = running_logits.shape[1]
  position = np.broadcast_to(np.arange(1, t + 1) / t, probs.shape[:2])
  return np.stack([probs[..., -1], probs[..., -1] - probs[..., -2], position], axis=-1)


class LearnedStop:
  """A learned stop: logistic regression on (confidence, margin, t/T) predicting that the
  current prediction already equals the final one; stop when its probability >= `threshold`.

  Fitted on training videos' running logits (no labels needed: the target is agreement with
  step T, so stopping costs little accuracy by construction).
  """

  def __init__(self, threshold: float = 0.9, seed: int = 0):
    self.threshold = threshold
    self.classifier = linear_model.LogisticRegression(random_state=seed)

  def fit(self, running_logits) -> 'LearnedStop':
    running = np.asarray(running_logits)
    target = running.argmax(-1) == running[:, -1:].argmax(-1)
    features = _stop_features(running).reshape(-1, 3)
    if target.all() or not target.any():
      raise ValueError(
        'LearnedStop.fit: the predictions never (or always) change; nothing to learn'
      )
    self.classifier.fit(features, target.reshape(-1))
    return self

  def __call__(self, running_logits) -> tuple[np.ndarray, np.ndarray]:
    """(V, C) logits at the stop and (V,) steps, as `early_stop`."""
    running = np.asarray(running_logits)
    v, t, _ = running.shape
    p = self.classifier.predict_proba(_stop_features(running).reshape(-1, 3))[:, 1]
    ready = p.reshape(v, t) >= self.threshold
    ready[:, -1] = True
    steps = np.argmax(ready, axis=1) + 1
    return running[np.arange(v), steps - 1], steps


def pair_logits_from_banks(
  image_banks: Sequence[np.ndarray],
  audio_banks: Sequence[np.ndarray],
  student_params: Mapping,
  *,
  fusion_hidden: int,
  feature_dim: int,
) -> list[np.ndarray]:
  """Per video, the (N_v, C) logits of the student's Psi + FC_cls on each pair of its banks."""
  from avsf_jax.models import skimming  # noqa: PLC0415 - flax; the metrics above need none

  fusion = skimming.Fusion(fusion_hidden, feature_dim)
  kernel = np.asarray(student_params['classifier']['kernel'])
  bias = np.asarray(student_params['classifier']['bias'])
  return [
    np.asarray(fusion.apply({'params': student_params['fusion']}, i, a)) @ kernel + bias
    for i, a in zip(image_banks, audio_banks)
  ]


def evaluate_banks(
  banks: Mapping,
  student_params: Mapping,
  *,
  fusion_hidden: int,
  feature_dim: int,
  num_classes: int,
  pair_gmacs: float,
  num_picks: int = NUM_PICKS,
  seed: int = 0,
) -> dict[str, dict]:
  """Every §4 selection on a split's banks (`feature_banks.load_banks`) with the student's
  Psi + FC_cls: per method 'top1', 'mAP', 'gflops' (the mean over videos, §7) and, when the
  banks hold segments, 'hit_rate'."""
  from avsf_jax.evaluation import skimming_cost  # noqa: PLC0415

  logits = pair_logits_from_banks(
    banks['image'],
    banks['audio'],
    student_params,
    fusion_hidden=fusion_hidden,
    feature_dim=feature_dim,
  )
  lengths = [len(x) for x in banks['image']]
  scored = evaluate_selections(
    logits, banks['labels'], position_selections(seed, k=num_picks), num_classes
  )
  out = {}
  for name, r in scored.items():
    out[name] = {
      'top1': r['top1'],
      'mAP': r['mAP'],
      'gflops': skimming_cost.mean_over_videos(
        lambda n, m=name: skimming_cost.baseline_gmacs(m, n, pair_gmacs, num_picks=num_picks),
        lengths,
      ),
    }
    if banks.get('segments') is not None:
      out[name]['hit_rate'] = segment_hit_rate(r['indices'], banks['segments'])
  return out
