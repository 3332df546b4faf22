r"""Frame-level mAP@0.5 IoU of an AVA detections CSV, as the official ActivityNet script reports it.

  python -m avsf_jax.tools.ava_eval --groundtruth=ava_val_v2.2.csv \
      --detections=detections.csv --label_map=ava_action_list_v2.2_for_activitynet_2019.pbtxt \
      --excluded=ava_val_excluded_timestamps_v2.2.csv [--plot=per_class_ap.png] [--json]

Detections are rows `video_id, timestamp, x1, y1, x2, y2, class_id, score` (what
`evaluation.ava.write_detections_csv` writes); the label map's classes are evaluated; excluded
keyframes are dropped from both sides (`evaluation/ava.py`).
"""

import json

import numpy as np
from absl import app, flags

from avsf_jax import console
from avsf_jax.evaluation import ava
from avsf_jax.input.prepare import ava_files


def evaluate(
  groundtruth: str, detections: str, label_map: str, excluded: str | None = None
) -> tuple[ava.FrameMapResult, dict[int, str]]:
  """Reads the four files and returns the evaluation and the class names."""
  classes = ava_files.read_label_map(label_map)
  excluded_keys = ava_files.read_excluded_timestamps(excluded) if excluded else set()
  truth = ava.rows_to_boxes(ava_files.read_boxes(groundtruth))
  rows = ava_files.read_boxes(detections, detections=True)
  table = ava.BoxTable(
    np.array([ava.image_key(r.video_id, r.timestamp) for r in rows], dtype=object),
    np.array([r.box for r in rows], np.float64).reshape(-1, 4),
    np.array([r.action_id for r in rows], np.int64),
    np.array([r.score for r in rows], np.float64),
  )
  keys = [ava.image_key(v, t) for v, t in excluded_keys]
  return ava.frame_map(truth, table, sorted(classes), keys), classes


def summary(result: ava.FrameMapResult, classes: dict[int, str]) -> dict:
  """The official script's keys: per-class AP and `PascalBoxes_Precision/mAP@0.5IOU`."""
  out = {'PascalBoxes_Precision/mAP@0.5IOU': result.mean_ap}
  for class_id, ap in zip(result.class_ids, result.average_precision):
    out[f'PascalBoxes_PerformanceByCategory/AP@0.5IOU/{classes[class_id]}'] = float(ap)
  return out


def main(argv):
  del argv
  f = flags.FLAGS
  result, classes = evaluate(f.groundtruth, f.detections, f.label_map, f.excluded)
  table = summary(result, classes)
  if f.plot:
    ava.plot_per_class_ap(result, classes, f.plot, title=f.detections)
  if f.json:
    print(json.dumps(table, sort_keys=True))
  else:
    for name, value in table.items():
      print(f'{name}: {value:.4f}')


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, because this module is
  also imported as a library (absl flags are process-global)."""
  flags.DEFINE_string('groundtruth', None, 'Ground-truth CSV (ava_val_v2.x.csv).')
  flags.DEFINE_string('detections', None, 'Detections CSV.')
  flags.DEFINE_string('label_map', None, 'label_map.pbtxt of the evaluated classes.')
  flags.DEFINE_string('excluded', None, 'Excluded timestamps CSV.')
  flags.DEFINE_string('plot', None, 'Optional per-class AP bar chart (PNG).')
  flags.DEFINE_bool('json', False, 'Print one JSON object instead of lines.')
  console.define_flags()


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['groundtruth', 'detections', 'label_map'])
  app.run(console.guard('ava_eval', main))
