"""The multi-view evaluator on hand-made cases whose answers are known."""

import numpy as np
import pytest

from avsf_jax.evaluation import views as evaluators


def _batches(logits: dict[str, np.ndarray], labels: dict[str, np.ndarray], batch: int):
  """Splits per-video arrays into padded eval batches, as the pipeline delivers them."""
  n = len(next(iter(labels.values())))
  for start in range(0, n, batch):
    stop = min(start + batch, n)
    pad = batch - (stop - start)
    out = {'_mask': np.r_[np.ones(stop - start), np.zeros(pad)].astype(np.float32)}
    out['video_index'] = np.r_[np.arange(start, stop), np.zeros(pad)].astype(np.int32)
    for key, value in {**logits, **labels}.items():
      chunk = value[start:stop]
      out[key] = np.concatenate([chunk, np.repeat(chunk[:1], pad, axis=0)])
    yield out


def _identity_predict(variables, batch):
  del variables
  return {k.removeprefix('logits_'): v for k, v in batch.items() if k.startswith('logits_')}


def test_thirty_views_average_softmax_scores():
  """Video 0: 29 views favour class 1, one view has a huge logit for class 2; the average of
  softmax scores picks class 1 (p = 0.69), where averaging logits would pick class 2. Video
  1: 14 views favour class 0, 16 favour class 3, which wins. Video 2 is wrong."""
  views = np.zeros((3, 30, 4))
  views[0, :29, 1] = 2.0
  views[0, 29, 2] = 100.0
  views[1, :14, 0] = 2.0
  views[1, 14:, 3] = 2.0
  views[2, :, 0] = 1.0
  labels = np.array([1, 3, 1])
  results, per_video = evaluators.evaluate(
    _identity_predict,
    None,
    _batches({'logits_label': views}, {'label': labels}, batch=2),
    num_classes=4,
    multi_label=False,
    return_scores=True,
  )
  assert results['top1'] == pytest.approx(200 / 3)
  assert results['num_examples'] == 3
  assert results['per_class_top1'][1] == 50.0 and results['per_class_top1'][3] == 100.0
  assert np.isnan(results['per_class_top1'][0]) and np.isnan(results['per_class_top1'][2])
  np.testing.assert_array_equal(per_video['video_index'], [0, 1, 2])
  np.testing.assert_allclose(per_video['scores/label'].sum(axis=1), 1.0)
  assert per_video['scores/label'][0, 1] == pytest.approx(0.687, abs=1e-3)
  assert np.argmax(views[0].mean(axis=0)) == 2  # the logit average would have been wrong


def test_charades_scores_are_max_over_clips_and_map():
  views = np.full((2, 3, 2), -5.0)
  views[0, 1, 0] = 3.0  # one clip of video 0 sees class 0
  views[1, 2, 1] = 2.0  # one clip of video 1 sees class 1
  views[1, 0, 0] = 1.0
  targets = np.array([[1, 0], [0, 1]], np.float32)
  results = evaluators.evaluate(
    _identity_predict,
    None,
    _batches({'logits_label': views}, {'label': targets}, batch=4),
    num_classes=2,
    multi_label=True,
    view_aggregation='max',
  )
  # Class 0: video 0 (3.0) ranks above video 1 (1.0): AP 1. Class 1: video 1 first: AP 1.
  assert results['mAP'] == pytest.approx(100.0)
  assert results['per_class_ap'] == pytest.approx([100.0, 100.0])


def test_epic_verb_noun_action():
  verb = np.zeros((2, 1, 3))
  noun = np.zeros((2, 1, 4))
  verb[0, 0, 1], noun[0, 0, 2] = 5.0, 5.0  # video 0: (1, 2) right
  verb[1, 0, 0], noun[1, 0, 3] = 5.0, 5.0  # video 1: verb right, noun wrong
  results = evaluators.evaluate(
    _identity_predict,
    None,
    _batches(
      {'logits_label_verb': verb, 'logits_label_noun': noun},
      {'label_verb': np.array([1, 0]), 'label_noun': np.array([2, 1])},
      batch=2,
    ),
    num_classes={'verb': 3, 'noun': 4},
    multi_label=False,
  )
  assert results['verb_top1'] == 100.0 and results['noun_top1'] == 50.0
  assert results['action_top1'] == 50.0
  assert results['top1_verb'] == 100.0
