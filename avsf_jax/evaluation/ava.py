"""AVA frame-level mAP@0.5 IoU: the official ActivityNet (PASCAL VOC) protocol, in numpy.

Spec `ava.md` 5. Per keyframe ("image", keyed `"%s,%04d" % (video_id, timestamp)`) and per
evaluated class, detections are matched greedily in descending score order: a detection is a
true positive when the ground-truth box of that class it overlaps most has IoU >= 0.5 and was
not matched before; otherwise (and always in keyframes without such ground truth) it is a false
positive. Per class, the detections of every keyframe are ranked by score, and the VOC AP is the
area under the precision envelope at the recall steps. A class without ground truth has AP NaN
and is left out of the mean (`nanmean`, as the official evaluator does); a class with ground
truth but no detection has AP 0. Excluded keyframes are dropped from both sides, and only the
evaluated (label-map) classes count.

Boxes are x1, y1, x2, y2 (normalised) as in the CSVs. The official code swaps them to
y1, x1, y2, x2 before computing IoU (PySlowFast's column order [0, 2, 1, 4, 3]); IoU is the same
either way when both sides use one order, so no swap is needed here.

Rows are `Box` tuples, or for the full validation set (3.6M detection rows: every box times 60
classes) a `BoxTable` of arrays; matching is vectorised over keyframes per class (`_class_tp`,
checked against the per-keyframe loop `match_detections`). Measured on the shared 2-core
machine: 3.6M rows, 60 classes in 14 s.

Ties: within a keyframe and class, equal scores keep their input order (stable sort); across
keyframes, equal scores are ranked as `np.argsort(scores)[::-1]` with a stable sort over the
rows in input order, i.e. the later one first. The official code sorts with numpy's default (unstable) quicksort, so on exact
ties the two may order differently; AP changes only when tied detections differ in TP/FP.
"""

import csv
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from avsf_jax.evaluation import plots

MATCHING_IOU = 0.5


def image_key(video_id: str, timestamp: int) -> str:
  """The evaluator's keyframe key, `"%s,%04d" % (video_id, timestamp)`."""
  return f'{video_id},{int(timestamp):04d}'


class Box(NamedTuple):
  """One labelled box of a keyframe: ground truth (score 1) or a detection."""

  key: str
  box: tuple[float, float, float, float]  # x1, y1, x2, y2
  class_id: int
  score: float = 1.0


class FrameMapResult(NamedTuple):
  """Per-class AP (NaN without ground truth), in `class_ids` order, and their nanmean."""

  class_ids: tuple[int, ...]
  average_precision: np.ndarray
  mean_ap: float
  num_groundtruth: np.ndarray  # boxes per class, after exclusions


def iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
  """(A, 4) x (B, 4) -> (A, B) intersection over union, no +1 pixel term (normalised boxes)."""
  a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
  b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
  area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
  area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  ix = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
  iy = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
  inter = np.maximum(ix, 0.0) * np.maximum(iy, 0.0)
  union = area_a[:, None] + area_b[None, :] - inter
  with np.errstate(divide='ignore', invalid='ignore'):
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def match_detections(
  detected: np.ndarray, scores: np.ndarray, groundtruth: np.ndarray, threshold: float = MATCHING_IOU
) -> np.ndarray:
  """TP flags of one keyframe's detections of one class, in the order given.

  Detections are visited by descending score (stable); each takes the ground-truth box it
  overlaps most, and is a TP if that IoU >= `threshold` and the box is still unmatched.
  """
  detected = np.asarray(detected, np.float64).reshape(-1, 4)
  tp = np.zeros(len(detected), bool)
  groundtruth = np.asarray(groundtruth, np.float64).reshape(-1, 4)
  if len(detected) == 0 or len(groundtruth) == 0:
    return tp
  overlaps = iou(detected, groundtruth)
  best = np.argmax(overlaps, axis=1)
  matched = np.zeros(len(groundtruth), bool)
  for i in np.argsort(-np.asarray(scores, np.float64), kind='stable'):
    g = best[i]
    if overlaps[i, g] >= threshold and not matched[g]:
      tp[i] = matched[g] = True
  return tp


def voc_average_precision(scores: np.ndarray, tp: np.ndarray, num_groundtruth: int) -> float:
  """VOC AP of ranked detections: area under the right-to-left maximum of precision.

  NaN when `num_groundtruth` is 0; 0 when there are ground truths but no detections.
  """
  scores = np.asarray(scores, np.float64)
  tp = np.asarray(tp, bool)
  if num_groundtruth == 0:
    return float('nan')
  if tp.sum() > num_groundtruth:
    raise ValueError(f'tp: {tp.sum()} true positives for {num_groundtruth} ground-truth boxes')
  if scores.size == 0:
    return 0.0
  order = np.argsort(scores, kind='stable')[::-1]
  hits = tp[order].astype(np.int64)
  cum_tp = np.cumsum(hits)
  cum_fp = np.cumsum(1 - hits)
  precision = np.concatenate([[0.0], cum_tp / (cum_tp + cum_fp), [0.0]])
  recall = np.concatenate([[0.0], cum_tp / num_groundtruth, [1.0]])
  precision = np.maximum.accumulate(precision[::-1])[::-1]
  steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
  return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


class BoxTable(NamedTuple):
  """Rows of boxes as arrays (the fast form of a list of `Box`): one row per (box, class)."""

  keys: np.ndarray  # (R,) str keyframe keys
  boxes: np.ndarray  # (R, 4) x1, y1, x2, y2
  class_ids: np.ndarray  # (R,) int
  scores: np.ndarray  # (R,) float


def box_table(rows: Iterable[Box] | BoxTable) -> BoxTable:
  """A list of `Box` (or a `BoxTable`, returned as is) -> `BoxTable`."""
  if isinstance(rows, BoxTable):
    return rows
  rows = list(rows)
  return BoxTable(
    np.array([r.key for r in rows], dtype=object),
    np.array([r.box for r in rows], np.float64).reshape(-1, 4),
    np.array([r.class_id for r in rows], np.int64),
    np.array([r.score for r in rows], np.float64),
  )


def _select(table: BoxTable, keep: np.ndarray) -> BoxTable:
  return BoxTable(*(column[keep] for column in table))


def _class_tp(
  det_keys: np.ndarray,
  det_boxes: np.ndarray,
  det_scores: np.ndarray,
  gt_keys: np.ndarray,
  gt_boxes: np.ndarray,
  threshold: float,
) -> np.ndarray:
  """`match_detections` for every keyframe of one class at once (integer keyframe ids).

  A detection only ever claims the GT box it overlaps most, so within a keyframe the TPs are
  the highest-scoring detection of each (GT box with IoU >= threshold): a sort and a
  first-occurrence pick, with the keyframe's GT boxes padded to a common count.
  """
  tp = np.zeros(len(det_keys), bool)
  if len(det_keys) == 0 or len(gt_keys) == 0:
    return tp
  order = np.argsort(gt_keys, kind='stable')
  gt_keys, gt_boxes = gt_keys[order], gt_boxes[order]
  firsts = np.searchsorted(gt_keys, gt_keys, side='left')
  slot = np.arange(len(gt_keys)) - firsts  # position of each GT box within its keyframe
  width = int(slot.max()) + 1
  unique_keys = np.unique(gt_keys)
  padded = np.full((len(unique_keys), width, 4), np.nan)
  row = np.searchsorted(unique_keys, gt_keys)
  padded[row, slot] = gt_boxes
  where = np.searchsorted(unique_keys, det_keys)
  where = np.minimum(where, len(unique_keys) - 1)
  has_gt = unique_keys[where] == det_keys
  candidates = padded[where]  # (D, width, 4)
  a, b = det_boxes[:, None, :], candidates
  ix = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
  iy = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
  inter = np.maximum(ix, 0.0) * np.maximum(iy, 0.0)
  union = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
  union = union + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) - inter
  with np.errstate(divide='ignore', invalid='ignore'):
    overlaps = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
  overlaps = np.where(np.isnan(b[..., 0]), -np.inf, overlaps)  # padding never matches
  best = np.argmax(overlaps, axis=1)
  hit = has_gt & (overlaps[np.arange(len(best)), best] >= threshold)
  # Visit by keyframe, then descending score (stable): the first claim of a GT box wins.
  visit = np.lexsort((np.arange(len(det_keys)), -det_scores, det_keys))
  visit = visit[hit[visit]]
  claims = det_keys[visit].astype(np.int64) * width + best[visit]
  _, first = np.unique(claims, return_index=True)
  tp[visit[first]] = True
  return tp


def frame_map(
  groundtruth: Iterable[Box] | BoxTable,
  detections: Iterable[Box] | BoxTable,
  class_ids: Sequence[int],
  excluded_keys: Iterable[str] = (),
  threshold: float = MATCHING_IOU,
) -> FrameMapResult:
  """Frame-level mAP of `detections` against `groundtruth` over the evaluated `class_ids`.

  Rows of other classes and of excluded keyframes are dropped from both sides first. Takes
  lists of `Box` or, for the full AVA validation set (millions of detection rows),
  `BoxTable`s.
  """
  class_ids = tuple(int(c) for c in class_ids)
  if len(set(class_ids)) != len(class_ids):
    raise ValueError(f'class_ids: expected distinct ids, got {class_ids}')
  gt, det = box_table(groundtruth), box_table(detections)
  excluded = np.array(sorted(set(excluded_keys)), dtype=object)
  gt = _select(gt, np.isin(gt.class_ids, class_ids) & ~np.isin(gt.keys, excluded))
  det = _select(det, np.isin(det.class_ids, class_ids) & ~np.isin(det.keys, excluded))
  # Keyframe keys as integers, shared by both sides.
  names, codes = np.unique(np.concatenate([gt.keys, det.keys]).astype(str), return_inverse=True)
  del names
  gt_codes, det_codes = codes[: len(gt.keys)], codes[len(gt.keys) :]
  ap, num_gt = [], []
  for c in class_ids:
    g, d = gt.class_ids == c, det.class_ids == c
    tp = _class_tp(det_codes[d], det.boxes[d], det.scores[d], gt_codes[g], gt.boxes[g], threshold)
    num_gt.append(int(g.sum()))
    ap.append(voc_average_precision(det.scores[d], tp, num_gt[-1]))
  ap = np.array(ap)
  valid = ~np.isnan(ap)
  mean = float(ap[valid].mean()) if valid.any() else float('nan')
  return FrameMapResult(class_ids, ap, mean, np.array(num_gt))


def rows_to_boxes(rows: Iterable, excluded: Iterable[tuple[str, int]] = ()) -> list[Box]:
  """`ava_files.BoxRow`s (annotations or detections) -> evaluator `Box`es.

  Unlabelled rows (action -1) are dropped: they belong to no class. Detections keep their
  score, annotations get 1.
  """
  excluded = set(excluded)
  return [
    Box(image_key(r.video_id, r.timestamp), tuple(r.box), int(r.action_id), float(r.score))
    for r in rows
    if r.action_id != -1 and (r.video_id, r.timestamp) not in excluded
  ]


def detection_rows(
  keys: Sequence[str],
  boxes: np.ndarray,
  scores: np.ndarray,
  class_ids: Sequence[int],
  mask: np.ndarray | None = None,
) -> list[Box]:
  """Per-box scores -> one detection per box and evaluated class (no score threshold).

  Args:
    keys: (K,) keyframe keys of the boxes.
    boxes: (K, 4) original normalised x1, y1, x2, y2 boxes.
    scores: (K, num_outputs) per-class probabilities; column `c - 1` is class id c
      (the model has all 80 outputs; only `class_ids` are written).
    class_ids: evaluated class ids.
    mask: (K,) valid boxes (padding is False); all valid by default.
  """
  boxes = np.asarray(boxes, np.float64)
  scores = np.asarray(scores, np.float64)
  if boxes.shape != (len(keys), 4) or scores.ndim != 2 or scores.shape[0] != len(keys):
    raise ValueError(
      f'expected {len(keys)} keys, (K, 4) boxes and (K, classes) scores, got boxes '
      f'{boxes.shape} and scores {scores.shape}'
    )
  if max(class_ids) > scores.shape[1]:
    raise ValueError(f'scores: {scores.shape[1]} outputs cannot hold class id {max(class_ids)}')
  mask = np.ones(len(keys), bool) if mask is None else np.asarray(mask, bool)
  return [
    Box(keys[k], tuple(boxes[k]), int(c), float(scores[k, c - 1]))
    for k in np.flatnonzero(mask)
    for c in class_ids
  ]


def detection_table(
  keys: Sequence[str],
  boxes: np.ndarray,
  scores: np.ndarray,
  class_ids: Sequence[int],
  mask: np.ndarray | None = None,
) -> BoxTable:
  """`detection_rows` as a `BoxTable`, without building a Python object per row."""
  boxes = np.asarray(boxes, np.float64)
  scores = np.asarray(scores, np.float64)
  if boxes.shape != (len(keys), 4) or scores.ndim != 2 or scores.shape[0] != len(keys):
    raise ValueError(
      f'expected {len(keys)} keys, (K, 4) boxes and (K, classes) scores, got boxes '
      f'{boxes.shape} and scores {scores.shape}'
    )
  valid = np.flatnonzero(np.ones(len(keys), bool) if mask is None else np.asarray(mask, bool))
  ids = np.asarray(class_ids, np.int64)
  n = len(ids)
  return BoxTable(
    np.repeat(np.asarray(keys, dtype=object)[valid], n),
    np.repeat(boxes[valid], n, axis=0),
    np.tile(ids, len(valid)),
    scores[valid][:, ids - 1].reshape(-1),
  )


def write_detections_csv(path: str, rows: Iterable[Box]) -> str:
  """The official detections CSV: `video_id, %04d timestamp, x1, y1, x2, y2, class_id, score`."""
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    for row in rows:
      video_id, timestamp = row.key.rsplit(',', 1)
      box = [f'{v:.3f}' for v in row.box]
      writer.writerow([video_id, timestamp, *box, row.class_id, f'{row.score:.6f}'])
  return path


def plot_per_class_ap(
  result: FrameMapResult, class_names: Mapping[int, str], path: str, title: str = ''
) -> str:
  """Per-class AP bar chart (SlowFast Fig. 3 style), in percent; classes without GT left out."""
  names = [class_names.get(c, str(c)) for c in result.class_ids]
  return plots.plot_per_class(
    100.0 * result.average_precision, names, path, title=title, metric_name='AP@0.5IoU (%)'
  )
