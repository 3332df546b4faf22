"""avsf_jax.evaluation.metrics against hand-computed cases (and scikit-learn's AP as a reference)."""

import math
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from avsf_jax.evaluation import metrics as eval_metrics

# aggregate_views


def test_mean_softmax_averages_the_softmax_of_each_view():
  # View 0: logits (0, 0) -> softmax (0.5, 0.5); view 1: (ln 3, 0) -> (0.75, 0.25).
  scores = np.array([[[0.0, 0.0], [math.log(3.0), 0.0]]])
  video = eval_metrics.aggregate_views(scores, 'mean_softmax')
  np.testing.assert_allclose(video, [[0.625, 0.375]])


def test_mean_softmax_is_not_the_softmax_of_mean_logits():
  scores = np.array([[[10.0, 0.0], [0.0, 1.0]]])
  video = eval_metrics.aggregate_views(scores, 'mean_softmax')
  softmax_of_mean = np.exp([5.0, 0.5]) / np.exp([5.0, 0.5]).sum()
  assert not np.allclose(video, softmax_of_mean)
  np.testing.assert_allclose(video.sum(axis=-1), [1.0])


def test_max_takes_the_per_class_max_over_clips_of_the_sigmoid():
  # Class 0 peaks in clip 1 (logit 0 -> 0.5), class 1 in clip 0 (logit ln 3 -> 0.75).
  scores = np.array([[[-2.0, math.log(3.0)], [0.0, -5.0]]])
  video = eval_metrics.aggregate_views(scores, 'max')
  np.testing.assert_allclose(video, [[0.5, 0.75]])


def test_max_is_stable_for_extreme_logits():
  with np.errstate(all='raise'):
    video = eval_metrics.aggregate_views(np.array([[[-1000.0, 1000.0]]]), 'max')
  np.testing.assert_array_equal(video, [[0.0, 1.0]])


def test_aggregate_views_rejects_unknown_mode_and_bad_shapes():
  with pytest.raises(ValueError, match="mode: expected one of .*'mean_sigmoid'"):
    eval_metrics.aggregate_views(np.zeros((1, 2, 3)), 'mean_sigmoid')
  with pytest.raises(ValueError, match='num_views'):
    eval_metrics.aggregate_views(np.zeros((2, 3)), 'max')
  with pytest.raises(ValueError, match='finite'):
    eval_metrics.aggregate_views(np.full((1, 1, 2), np.nan), 'max')


# topk_accuracy / per_class_accuracy

# Four examples, six classes. Label ranks: 0, 2, 5, 0.
_SCORES = np.array(
  [
    [0.9, 0.05, 0.05, 0.0, 0.0, 0.0],  # label 0: rank 0
    [0.5, 0.3, 0.1, 0.05, 0.03, 0.02],  # label 2: rank 2
    [0.3, 0.25, 0.2, 0.1, 0.1, 0.05],  # label 5: rank 5 (last)
    [0.0, 0.0, 0.0, 0.0, 0.1, 0.9],  # label 5: rank 0
  ]
)
_LABELS = np.array([0, 2, 5, 5])


def test_topk_accuracy_in_percent():
  acc = eval_metrics.topk_accuracy(_SCORES, _LABELS, ks=(1, 3, 5))
  assert acc == {'top1': 50.0, 'top3': 75.0, 'top5': 75.0}


def test_topk_accuracy_ignores_masked_examples():
  # Only examples 1 and 2 are real: both wrong at top-1, one right at top-3.
  acc = eval_metrics.topk_accuracy(_SCORES, _LABELS, ks=(1, 3), mask=np.array([0, 1, 1, 0]))
  assert acc == {'top1': 0.0, 'top3': 50.0}


def test_topk_accuracy_breaks_ties_towards_the_lower_class_index():
  scores = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
  acc = eval_metrics.topk_accuracy(scores, np.array([0, 1]), ks=(1, 2))
  assert acc == {'top1': 50.0, 'top2': 100.0}


def test_topk_accuracy_with_k_above_num_classes_counts_every_example():
  acc = eval_metrics.topk_accuracy(_SCORES[:, :], _LABELS, ks=(10,))
  assert acc == {'top10': 100.0}


def test_topk_accuracy_with_everything_masked_is_nan():
  acc = eval_metrics.topk_accuracy(_SCORES, _LABELS, mask=np.zeros(4))
  assert math.isnan(acc['top1']) and math.isnan(acc['top5'])


def test_topk_accuracy_rejects_bad_input():
  with pytest.raises(ValueError, match=r'labels: expected class indices in \[0, 6\)'):
    eval_metrics.topk_accuracy(_SCORES, np.array([0, 1, 2, 6]))
  with pytest.raises(ValueError, match=r'labels: expected integer class indices of shape \(4,\)'):
    eval_metrics.topk_accuracy(_SCORES, np.array([0, 1]))
  with pytest.raises(ValueError, match=r'mask: expected shape \(4,\)'):
    eval_metrics.topk_accuracy(_SCORES, _LABELS, mask=np.ones(3))
  with pytest.raises(ValueError, match='mask: expected only 0'):
    eval_metrics.topk_accuracy(_SCORES, _LABELS, mask=np.array([0, 1, 2, 1]))
  with pytest.raises(ValueError, match='scores: expected .num_examples, num_classes.'):
    eval_metrics.topk_accuracy(_SCORES[None], _LABELS)
  with pytest.raises(ValueError, match='ks: expected positive integers'):
    eval_metrics.topk_accuracy(_SCORES, _LABELS, ks=(0,))


def test_per_class_accuracy_is_nan_for_classes_without_examples():
  acc = eval_metrics.per_class_accuracy(_SCORES, _LABELS, num_classes=6)
  np.testing.assert_array_equal(acc, [100.0, np.nan, 0.0, np.nan, np.nan, 50.0])


def test_per_class_accuracy_ignores_masked_examples():
  acc = eval_metrics.per_class_accuracy(_SCORES, _LABELS, 6, mask=np.array([1, 1, 0, 1]))
  np.testing.assert_array_equal(acc, [100.0, np.nan, 0.0, np.nan, np.nan, 100.0])


def test_per_class_accuracy_checks_num_classes():
  with pytest.raises(ValueError, match='scores: expected 7 classes, got 6'):
    eval_metrics.per_class_accuracy(_SCORES, _LABELS, num_classes=7)


# mean_average_precision


def test_average_precision_hand_computed():
  # Ranked: pos, neg, pos, neg -> precisions at the positives 1 and 2/3: AP = (1 + 2/3) / 2.
  ap = eval_metrics.average_precision(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0]))
  assert ap == pytest.approx(5.0 / 6.0)


def test_average_precision_treats_tied_scores_as_one_threshold():
  # Both examples at 0.5: one threshold with precision 1/2 and recall 1 -> AP = 1/2.
  ap = eval_metrics.average_precision(np.array([0.5, 0.5]), np.array([0, 1]))
  assert ap == pytest.approx(0.5)


def test_mean_average_precision_excludes_classes_without_positives():
  scores = np.array([[0.9, 0.1, 0.3], [0.8, 0.7, 0.2], [0.7, 0.6, 0.1], [0.1, 0.2, 0.0]])
  targets = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
  result = eval_metrics.mean_average_precision(scores, targets)
  # Class 0: pos, neg, pos -> (1 + 2/3) / 2; class 1: ranked 0.7 (pos), 0.6 (pos) -> 1.
  np.testing.assert_allclose(result.per_class_ap[:2], [500.0 / 6.0, 100.0])
  assert np.isnan(result.per_class_ap[2])
  assert result.mean_ap == pytest.approx((500.0 / 6.0 + 100.0) / 2)


def test_mean_average_precision_matches_sklearn_with_ties_and_mask():
  rng = np.random.default_rng(0)
  scores = np.round(rng.uniform(size=(60, 7)), 1)  # rounding creates many ties
  targets = (rng.uniform(size=(60, 7)) < 0.3).astype(np.int64)
  targets[:, 4] = 0  # a class with no positive
  targets[50:, 4] = 1  # ... whose only positives are padding
  mask = np.r_[np.ones(50), np.zeros(10)]
  result = eval_metrics.mean_average_precision(scores, targets, mask=mask)
  real_scores, real_targets = scores[:50], targets[:50]
  present = real_targets.sum(axis=0) > 0
  reference = sk_metrics.average_precision_score(
    real_targets[:, present], real_scores[:, present], average=None
  )
  np.testing.assert_allclose(result.per_class_ap[present], 100.0 * reference, rtol=1e-12)
  assert np.isnan(result.per_class_ap[4])
  assert result.mean_ap == pytest.approx(100.0 * np.mean(reference), rel=1e-12)


def test_mean_average_precision_rejects_non_binary_targets_and_shape_mismatch():
  with pytest.raises(ValueError, match='multi_hot: expected only 0 and 1'):
    eval_metrics.mean_average_precision(np.zeros((2, 2)), np.array([[0.5, 1], [0, 1]]))
  with pytest.raises(ValueError, match=r'multi_hot: expected shape \(2, 2\)'):
    eval_metrics.mean_average_precision(np.zeros((2, 2)), np.zeros((2, 3)))


def test_mean_average_precision_without_positives_is_nan():
  result = eval_metrics.mean_average_precision(np.ones((3, 2)), np.zeros((3, 2)))
  assert math.isnan(result.mean_ap)


# epic_metrics


def test_epic_action_is_ranked_by_the_outer_product_of_verb_and_noun_probabilities():
  verb = np.array([[0.6, 0.4], [0.6, 0.4]])
  noun = np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]])
  # Pair scores, row-major (v, n): .30 .18 .12 .20 .12 .08.
  # Example 0: true (1, 0) = .20 is 2nd -> wrong at top-1, right at top-5.
  # Example 1: true (1, 2) = .08 is 6th -> wrong at top-5; verb and noun right at top-5.
  result = eval_metrics.epic_metrics(verb, noun, np.array([1, 1]), np.array([0, 2]))
  assert result == {
    'verb_top1': 0.0,
    'verb_top5': 100.0,
    'noun_top1': 50.0,
    'noun_top5': 100.0,
    'action_top1': 0.0,
    'action_top5': 50.0,
  }


def test_epic_action_can_be_wrong_when_verb_and_noun_are_each_right_elsewhere():
  # Verb right at top-1 in example 0, noun right at top-1 in example 1; action right in neither.
  verb = np.array([[0.9, 0.1], [0.2, 0.8]])
  noun = np.array([[0.2, 0.8], [0.7, 0.3]])
  result = eval_metrics.epic_metrics(verb, noun, np.array([0, 0]), np.array([0, 0]))
  assert result['verb_top1'] == 50.0 and result['noun_top1'] == 50.0
  assert result['action_top1'] == 0.0


def test_epic_metrics_from_logits_and_mask():
  verb_logits = np.log(np.array([[0.6, 0.4], [0.1, 0.9], [0.5, 0.5]]))
  noun_logits = np.log(np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]]))
  result = eval_metrics.epic_metrics(
    verb_logits,
    noun_logits,
    np.array([0, 1, 1]),
    np.array([0, 1, 1]),
    mask=np.array([1, 1, 0]),
    from_logits=True,
  )
  # Example 0: (0, 0) = .30 is the best pair; example 1: (1, 1) = .72 is the best pair.
  assert result['action_top1'] == 100.0
  assert result['verb_top1'] == 100.0 and result['noun_top1'] == 100.0


def test_epic_metrics_rejects_logits_given_as_probabilities():
  with pytest.raises(ValueError, match='verb_scores: expected probabilities .*from_logits=True'):
    eval_metrics.epic_metrics(
      np.array([[2.0, -1.0]]), np.array([[0.5, 0.5]]), np.array([0]), np.array([0])
    )


def test_epic_action_chunking_matches_one_chunk(monkeypatch):
  rng = np.random.default_rng(1)
  verb = rng.dirichlet(np.ones(5), size=9)
  noun = rng.dirichlet(np.ones(7), size=9)
  verb_labels, noun_labels = rng.integers(0, 5, 9), rng.integers(0, 7, 9)
  whole = eval_metrics.epic_metrics(verb, noun, verb_labels, noun_labels)
  monkeypatch.setattr(eval_metrics, '_ACTION_CHUNK_ELEMENTS', 35 * 2)  # two examples a chunk
  chunked = eval_metrics.epic_metrics(verb, noun, verb_labels, noun_labels)
  assert chunked == whole
  # Reference: a full stable sort over every (verb, noun) pair.
  pairs = (verb[:, :, None] * noun[:, None, :]).reshape(9, -1)
  ranked = np.argsort(-pairs, axis=1, kind='stable')
  truth = verb_labels * 7 + noun_labels
  for k in (1, 5):
    expected = 100.0 * np.mean((ranked[:, :k] == truth[:, None]).any(axis=1))
    assert whole[f'action_top{k}'] == pytest.approx(expected)


def test_metrics_plots_and_compare_tool_import_neither_tensorflow_nor_pyplot():
  code = (
    'import sys\n'
    'import avsf_jax.evaluation.metrics, avsf_jax.evaluation.plots, avsf_jax.tools.compare_results\n'
    "print(sorted(m for m in ('tensorflow', 'matplotlib.pyplot') if m in sys.modules))\n"
  )
  proc = subprocess.run(
    [sys.executable, '-c', code], capture_output=True, text=True, timeout=60, check=True
  )
  assert proc.stdout.strip() == '[]'
