"""avsf_jax.tools.ava_eval: the files of `synthetic_ava` through the command line's code path."""

import pytest

from avsf_jax.evaluation import ava
from avsf_jax.input.prepare import ava_files, synthetic_ava
from avsf_jax.tools import ava_eval


def test_ground_truth_as_detections_scores_one_and_a_dropped_class_scores_zero(tmp_path):
  root = tmp_path / 'data'
  synthetic_ava.generate(str(root), seed=2, videos={'train': 1, 'val': 2}, write_media=False)
  ann = root / 'annotations'
  truth = ava_files.read_boxes(str(ann / 'synthetic_ava_val.csv'), num_classes=6)
  # Every GT row as a detection with score 0.9, except class 4 (wave): AP 1 for the others,
  # 0 for wave; stand (3) is written too but is not in the label map.
  rows = [ava.Box(ava.image_key(r.video_id, r.timestamp), r.box, r.action_id, 0.9) for r in truth]
  detections = ava.write_detections_csv(
    str(tmp_path / 'det.csv'), [r for r in rows if r.class_id != 4]
  )
  result, classes = ava_eval.evaluate(
    str(ann / 'synthetic_ava_val.csv'),
    detections,
    str(ann / 'label_map.pbtxt'),
    str(ann / 'synthetic_ava_val_excluded_timestamps.csv'),
  )
  table = ava_eval.summary(result, classes)
  assert table['PascalBoxes_PerformanceByCategory/AP@0.5IOU/walk'] == 1.0
  assert table['PascalBoxes_PerformanceByCategory/AP@0.5IOU/wave'] == 0.0
  assert 'PascalBoxes_PerformanceByCategory/AP@0.5IOU/stand' not in table
  assert table['PascalBoxes_Precision/mAP@0.5IOU'] == pytest.approx(4 / 5, abs=1e-12)
