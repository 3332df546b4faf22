"""avsf_jax.evaluation.ava: the spec's fixture run through the official evaluator, and the
protocol's edge cases computed by hand."""

import math

import numpy as np
import pytest

from avsf_jax.evaluation import ava
from tests.eval.test_plots import png_size

B = ava.Box


def _spec_fixture():
  """`ava.md` 5 "Verified fixture": the official evaluator gives AP 0.75 / 0.0 / NaN."""
  gt = [
    B('v,0902', (0.1, 0.1, 0.4, 0.4), 1),
    B('v,0902', (0.1, 0.1, 0.4, 0.4), 2),
    B('v,0903', (0.5, 0.5, 0.9, 0.9), 1),
    B('v,0904', (0.2, 0.2, 0.3, 0.3), 1),  # excluded keyframe
  ]
  det = [
    B('v,0902', (0.1, 0.1, 0.4, 0.4), 1, 0.9),
    B('v,0902', (0.1, 0.1, 0.4, 0.4), 1, 0.8),  # duplicate -> FP
    B('v,0902', (0.6, 0.6, 0.8, 0.8), 3, 0.5),
    B('v,0903', (0.7, 0.5, 1.1, 0.9), 1, 0.7),  # IoU 1/3 -> FP
    B('v,0903', (0.5, 0.5, 0.9, 0.9), 1, 0.6),  # TP
  ]
  return gt, det


def test_spec_fixture_matches_the_official_evaluator():
  gt, det = _spec_fixture()
  result = ava.frame_map(gt, det, class_ids=[1, 2, 3], excluded_keys=['v,0904'])
  assert result.class_ids == (1, 2, 3)
  assert abs(result.average_precision[0] - 0.75) <= 1e-12
  assert abs(result.average_precision[1] - 0.0) <= 1e-12
  assert math.isnan(result.average_precision[2])
  assert abs(result.mean_ap - 0.375) <= 1e-12
  np.testing.assert_array_equal(result.num_groundtruth, [2, 1, 0])


def test_excluded_keyframe_counts_on_neither_side():
  gt, det = _spec_fixture()
  # Without the exclusion the excluded GT box is a miss: recall of class 1 caps at 2/3.
  kept = ava.frame_map(gt, det, [1, 2, 3])
  assert kept.average_precision[0] == pytest.approx(0.5, abs=1e-12)  # (1/3)*1 + (1/3)*0.5
  # A detection in an excluded keyframe would be a top-ranked FP; excluded, it changes nothing.
  extra = det + [B('v,0904', (0.0, 0.0, 0.1, 0.1), 1, 0.99)]
  result = ava.frame_map(gt, extra, [1, 2, 3], excluded_keys=['v,0904'])
  assert result.average_precision[0] == pytest.approx(0.75, abs=1e-12)


def test_classes_outside_the_evaluated_list_are_ignored():
  gt, det = _spec_fixture()
  result = ava.frame_map(gt, det, class_ids=[1], excluded_keys=['v,0904'])
  assert result.mean_ap == pytest.approx(0.75, abs=1e-12)  # class 2's AP 0 no longer counts


def test_iou_of_exactly_half_is_a_true_positive():
  gt = [B('a,0902', (0.0, 0.0, 1.0, 1.0), 1)]
  det = [B('a,0902', (0.0, 0.0, 0.5, 1.0), 1, 0.5)]
  assert ava.iou(np.array([det[0].box]), np.array([gt[0].box]))[0, 0] == 0.5
  assert ava.frame_map(gt, det, [1]).mean_ap == 1.0
  det = [B('a,0902', (0.0, 0.0, 0.499, 1.0), 1, 0.5)]
  assert ava.frame_map(gt, det, [1]).mean_ap == 0.0


def test_a_ground_truth_matched_twice_gives_one_tp_and_one_fp_in_score_order():
  truth = np.array([[0.0, 0.0, 1.0, 1.0]])
  detected = np.array([[0.0, 0.0, 0.9, 1.0], [0.0, 0.0, 1.0, 1.0]])
  # The lower-scoring exact box comes first in the input; the higher-scoring one takes the GT.
  tp = ava.match_detections(detected, np.array([0.3, 0.8]), truth)
  np.testing.assert_array_equal(tp, [False, True])
  tp = ava.match_detections(detected, np.array([0.8, 0.3]), truth)
  np.testing.assert_array_equal(tp, [True, False])


def test_detections_in_keyframes_without_ground_truth_are_false_positives():
  gt = [B('a,0902', (0.1, 0.1, 0.5, 0.5), 1)]
  det = [B('b,0902', (0.1, 0.1, 0.5, 0.5), 1, 0.9), B('a,0902', (0.1, 0.1, 0.5, 0.5), 1, 0.8)]
  # Ranked: FP (p 0), TP (p 1/2, r 1): the envelope gives AP = 1 * 0.5.
  assert ava.frame_map(gt, det, [1]).mean_ap == pytest.approx(0.5, abs=1e-12)


def test_class_with_ground_truth_but_no_detection_has_ap_zero():
  gt = [B('a,0902', (0.1, 0.1, 0.5, 0.5), 1), B('a,0902', (0.1, 0.1, 0.5, 0.5), 2)]
  det = [B('a,0902', (0.1, 0.1, 0.5, 0.5), 1, 0.8)]
  result = ava.frame_map(gt, det, [1, 2])
  np.testing.assert_array_equal(result.average_precision, [1.0, 0.0])
  assert result.mean_ap == 0.5


def test_voc_ap_uses_the_precision_envelope():
  """Ranked TP, FP, TP, FP, TP with 4 GT: precisions 1, 1/2, 2/3, 1/2, 3/5 at recalls
  1/4, 1/4, 1/2, 1/2, 3/4; envelope at the recall steps: 1, 2/3, 3/5 -> AP = (1 + 2/3 + 3/5) / 4."""
  scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
  tp = np.array([True, False, True, False, True])
  expected = (1.0 + 2.0 / 3.0 + 3.0 / 5.0) / 4.0
  assert ava.voc_average_precision(scores, tp, 4) == pytest.approx(expected, abs=1e-12)
  shuffled = np.array([3, 0, 4, 1, 2])
  assert ava.voc_average_precision(scores[shuffled], tp[shuffled], 4) == pytest.approx(
    expected, abs=1e-12
  )
  assert math.isnan(ava.voc_average_precision(scores, np.zeros(5, bool), 0))


def test_detection_rows_write_every_evaluated_class_of_every_valid_box(tmp_path):
  scores = np.arange(2 * 5, dtype=np.float64).reshape(2, 5) / 10.0
  rows = ava.detection_rows(
    ['v,0902', 'v,0903'], np.array([[0.1, 0.2, 0.3, 0.4]] * 2), scores, [1, 4], [True, False]
  )
  assert rows == [
    B('v,0902', (0.1, 0.2, 0.3, 0.4), 1, 0.0),
    B('v,0902', (0.1, 0.2, 0.3, 0.4), 4, 0.3),
  ]
  path = ava.write_detections_csv(str(tmp_path / 'det.csv'), rows)
  assert open(path).read().splitlines() == [
    'v,0902,0.100,0.200,0.300,0.400,1,0.000000',
    'v,0902,0.100,0.200,0.300,0.400,4,0.300000',
  ]
  assert ava.image_key('v', 902) == 'v,0902'


def test_per_class_ap_plot(tmp_path):
  gt, det = _spec_fixture()
  result = ava.frame_map(gt, det, [1, 2, 3], excluded_keys=['v,0904'])
  path = ava.plot_per_class_ap(result, {1: 'a', 2: 'b', 3: 'c'}, str(tmp_path / 'ap.png'))
  width, height = png_size(path)
  assert width == 800 and height >= 300


def test_synthetic_ava_oracle_labels_on_detector_boxes(tmp_path):
  """End to end through the files: the val GT scored as detections gives mAP 1; detector boxes
  scored 1 for the labels of the GT box they overlap most and 0 otherwise (an oracle action
  classifier, which cannot tell a false-positive box from a person) score well at the 0.8
  threshold, and worse with every box (threshold 0), since false positives then count."""
  from avsf_jax.input.prepare import ava_files, synthetic_ava

  root = str(tmp_path)
  synthetic_ava.generate(root, seed=1, write_media=False)
  ann = tmp_path / 'annotations'
  classes = sorted(ava_files.read_label_map(str(ann / 'label_map.pbtxt')))
  excluded = ava_files.read_excluded_timestamps(
    str(ann / 'synthetic_ava_val_excluded_timestamps.csv')
  )
  keys = [ava.image_key(v, t) for v, t in excluded]
  truth_rows = ava_files.read_boxes(str(ann / 'synthetic_ava_val.csv'), num_classes=6)
  truth = ava.rows_to_boxes(truth_rows)
  assert ava.frame_map(truth, truth, classes, keys).mean_ap == 1.0
  detected = ava_files.read_boxes(
    str(ann / 'synthetic_ava_val_predicted_boxes.csv'), detections=True
  )

  def oracle(threshold):
    rows = []
    for d in detected:
      if d.score < threshold:
        continue
      key = ava.image_key(d.video_id, d.timestamp)
      same = [g for g in truth if g.key == key]
      best = max(same, key=lambda g: ava.iou([d.box], [g.box])[0, 0])
      labels = {g.class_id for g in same if g.box == best.box}
      rows += [ava.Box(key, d.box, c, float(c in labels)) for c in classes]
    return ava.frame_map(truth, rows, classes, keys).mean_ap

  at_08, at_0 = oracle(0.8), oracle(0.0)
  assert at_08 > 0.85 and at_0 < at_08 - 0.1  # measured: 0.90 and 0.61


def test_vectorised_matching_equals_the_per_keyframe_loop():
  """`frame_map` matches all keyframes of a class at once; the TP flags must be those of
  `match_detections` run keyframe by keyframe (random boxes, with near-duplicates so that
  GT boxes are claimed twice), and `detection_table` must equal `detection_rows`."""
  rng = np.random.default_rng(0)
  gt, det = [], []
  for k in range(40):
    key = ava.image_key('v', 902 + k)
    for _ in range(rng.integers(0, 4)):
      x, y = rng.uniform(0, 0.6, size=2)
      box = (x, y, x + 0.3, y + 0.3)
      gt.append(B(key, box, int(rng.integers(1, 4))))
      for _ in range(rng.integers(0, 4)):
        jitter = tuple(np.array(box) + rng.normal(0, 0.04, 4))
        det.append(B(key, jitter, int(rng.integers(1, 4)), float(rng.uniform())))
  det += [B('w,0902', (0.1, 0.1, 0.2, 0.2), 1, 0.5)]  # a keyframe without GT
  result = ava.frame_map(gt, det, [1, 2, 3])
  for i, c in enumerate([1, 2, 3]):
    scores, flags = [], []
    for key in sorted({d.key for d in det}):
      rows = [d for d in det if d.key == key and d.class_id == c]
      truth = [g.box for g in gt if g.key == key and g.class_id == c]
      s = np.array([r.score for r in rows])
      flags.append(ava.match_detections(np.array([r.box for r in rows]), s, np.array(truth)))
      scores.append(s)
    n = sum(g.class_id == c for g in gt)
    expected = ava.voc_average_precision(np.concatenate(scores), np.concatenate(flags), n)
    assert result.average_precision[i] == pytest.approx(expected, abs=1e-12)
    assert 0.0 < expected < 1.0
  keys = [d.key for d in det[:5]]
  boxes = np.array([d.box for d in det[:5]])
  scores = rng.uniform(size=(5, 80))
  table = ava.detection_table(keys, boxes, scores, [1, 3], mask=[1, 1, 0, 1, 1])
  rows = ava.box_table(ava.detection_rows(keys, boxes, scores, [1, 3], [1, 1, 0, 1, 1]))
  assert len(table.keys) == 8
  for ours, expected in zip(table, rows):
    np.testing.assert_array_equal(ours, expected)


def test_box_column_order_swap_changes_nothing():
  """PySlowFast's `get_ava_eval_data` reorders x1, y1, x2, y2 rows as columns [0, 2, 1, 4, 3]
  (y1, x1, y2, x2 after the batch index) for the official evaluator; swapping both sides the
  same way leaves every IoU, hence every AP, unchanged, so the evaluator here needs no swap."""
  gt, det = _spec_fixture()
  row = np.array([7.0, 0.1, 0.2, 0.3, 0.4])  # batch index, x1, y1, x2, y2
  np.testing.assert_array_equal(row[[0, 2, 1, 4, 3]], [7.0, 0.2, 0.1, 0.4, 0.3])

  def swap(rows):
    return [r._replace(box=tuple(np.array(r.box)[[1, 0, 3, 2]])) for r in rows]

  a = ava.frame_map(gt, det, [1, 2, 3], ['v,0904'])
  b = ava.frame_map(swap(gt), swap(det), [1, 2, 3], ['v,0904'])
  np.testing.assert_array_equal(a.average_precision, b.average_precision)
