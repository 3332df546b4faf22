"""AVA clip and box sampling as small numpy functions (spec `ava.md` 3, PySlowFast `ava_dataset`).

- Clips are centred on the keyframe: frame indices `range(c - L/2, c + L/2, stride)` clamped to
  the video, with c = (sec - 900) * fps and L = num_frames * stride.
- Boxes go from normalised x1, y1, x2, y2 to the pixels of the transformed clip with the same
  steps as the frames: scale to the decoded frame, short-side scale (random in training), crop,
  horizontal flip, and clipping to the final image.
- Boxes are padded to a static `max_boxes` per clip with a validity mask, and labels become an
  80-dim multi-hot per box (class id c in column c - 1; an unlabelled box is all zero).

Pixel conventions follow PySlowFast's OpenCV path so that boxes match its released models:
clipping is to [0, W - 1] x [0, H - 1] and a flip maps x to W - 1 - x. The random draws
(`jitter_short_side`, `crop_offsets`, the flip coin) take a `np.random.Generator` so that the
same draw can be applied to the frames.
"""

import math
from collections.abc import Sequence

import numpy as np

AVA_FPS = 30
SEGMENT_START_S = 900


def keyframe_frame_indices(
  timestamp: int,
  *,
  num_frames: int,
  stride: int,
  total_frames: int,
  fps: int = AVA_FPS,
  segment_start_s: int = SEGMENT_START_S,
) -> np.ndarray:
  """Frame indices of the clip centred on keyframe `timestamp` (s), clamped to the video."""
  if total_frames < 1:
    raise ValueError(f'total_frames: expected a positive frame count, got {total_frames}')
  centre = (timestamp - segment_start_s) * fps
  half = num_frames * stride // 2
  indices = np.arange(centre - half, centre + half, stride)
  return np.clip(indices, 0, total_frames - 1)


def audio_window(frame_indices: Sequence[int], fps: int = AVA_FPS) -> tuple[float, float]:
  """[start, end) seconds from the segment start covered by the clip's frames:
  [t_first, t_last + 1/fps), the window whose log-mel goes to the Audio pathway."""
  return frame_indices[0] / fps, (frame_indices[-1] + 1) / fps


def to_pixels(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
  """Normalised (K, 4) x1, y1, x2, y2 -> pixels of an (height, width) frame, clipped to it."""
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4) * np.array(
    [width, height, width, height], np.float32
  )
  return clip_boxes(boxes, height, width)


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
  """Clips pixel boxes to [0, width - 1] x [0, height - 1] (PySlowFast's convention)."""
  boxes = np.array(boxes, np.float32).reshape(-1, 4)
  boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0.0, width - 1.0)
  boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0.0, height - 1.0)
  return boxes


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
  """(height, width) after scaling the short side to `short_side` (the long side floored)."""
  if width <= height:
    return int(math.floor(height / width * short_side)), short_side
  return short_side, int(math.floor(width / height * short_side))


def scale_boxes(boxes: np.ndarray, height: int, width: int, short_side: int) -> np.ndarray:
  """Pixel boxes of an (height, width) frame -> those of its short-side-scaled version.

  One factor for both axes, that of the long side (as PySlowFast's `scale_boxes`).
  """
  new_height, new_width = short_side_size(height, width, short_side)
  factor = new_height / height if width < height else new_width / width
  return np.asarray(boxes, np.float32) * np.float32(factor)


def jitter_short_side(rng: np.random.Generator, min_size: int, max_size: int) -> int:
  """Random short side in [min_size, max_size], uniform in 1/size as PySlowFast draws it."""
  return int(round(1.0 / rng.uniform(1.0 / max_size, 1.0 / min_size)))


def crop_offsets(rng: np.random.Generator, height: int, width: int, size: int) -> tuple[int, int]:
  """(y, x) offsets of a random size x size crop (0 where the frame is exactly `size`)."""
  if height < size or width < size:
    raise ValueError(f'crop: a {size}x{size} crop does not fit a {height}x{width} frame')
  y = int(rng.integers(0, height - size)) if height > size else 0
  x = int(rng.integers(0, width - size)) if width > size else 0
  return y, x


def crop_boxes(boxes: np.ndarray, y_offset: int, x_offset: int) -> np.ndarray:
  boxes = np.array(boxes, np.float32).reshape(-1, 4)
  boxes[:, [0, 2]] -= x_offset
  boxes[:, [1, 3]] -= y_offset
  return boxes


def flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
  """Horizontal flip of pixel boxes: x -> width - 1 - x, and x1/x2 swapped."""
  boxes = np.array(boxes, np.float32).reshape(-1, 4)
  flipped = boxes.copy()
  flipped[:, 0] = width - 1.0 - boxes[:, 2]
  flipped[:, 2] = width - 1.0 - boxes[:, 0]
  return flipped


def train_boxes(
  boxes: np.ndarray,
  height: int,
  width: int,
  rng: np.random.Generator,
  *,
  min_size: int,
  max_size: int,
  crop_size: int,
  flip: bool = True,
) -> tuple[np.ndarray, dict]:
  """Training transform of normalised boxes, and the draws the frames must share.

  Returns pixel boxes of the crop and `{'short_side', 'offsets': (y, x), 'flip'}`.
  """
  pixels = to_pixels(boxes, height, width)
  short_side = jitter_short_side(rng, min_size, max_size)
  new_height, new_width = short_side_size(height, width, short_side)
  pixels = scale_boxes(pixels, height, width, short_side)
  y, x = crop_offsets(rng, new_height, new_width, crop_size)
  pixels = crop_boxes(pixels, y, x)
  flipped = bool(flip and rng.uniform() < 0.5)
  if flipped:
    pixels = flip_boxes(pixels, crop_size)
  draws = {'short_side': short_side, 'offsets': (y, x), 'flip': flipped}
  return clip_boxes(pixels, crop_size, crop_size), draws


def eval_boxes(boxes: np.ndarray, height: int, width: int, short_side: int) -> np.ndarray:
  """Test transform: full frame scaled to `short_side`, no crop, no flip."""
  pixels = scale_boxes(to_pixels(boxes, height, width), height, width, short_side)
  new_height, new_width = short_side_size(height, width, short_side)
  return clip_boxes(pixels, new_height, new_width)


def multi_hot(action_ids: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
  """Per-box lists of action ids (1-based; -1 = unlabelled) -> (K, num_classes) float32."""
  labels = np.zeros((len(action_ids), num_classes), np.float32)
  for k, ids in enumerate(action_ids):
    for class_id in ids:
      if class_id == -1:
        continue
      if not 1 <= class_id <= num_classes:
        raise ValueError(f'action id: expected 1..{num_classes} or -1, got {class_id}')
      labels[k, class_id - 1] = 1.0
  return labels


def pad_boxes(
  boxes: np.ndarray, labels: np.ndarray, max_boxes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
  """Pads (K, 4) boxes and (K, C) labels to `max_boxes` rows.

  Returns `(boxes, labels, mask, dropped)`: padded rows are zero with mask False; boxes past
  `max_boxes` are dropped (their count is returned so the caller can report it).
  """
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  labels = np.asarray(labels, np.float32)
  if labels.ndim != 2 or len(labels) != len(boxes):
    raise ValueError(f'labels: expected ({len(boxes)}, classes), got shape {labels.shape}')
  kept = min(len(boxes), max_boxes)
  out_boxes = np.zeros((max_boxes, 4), np.float32)
  out_labels = np.zeros((max_boxes, labels.shape[1]), np.float32)
  mask = np.zeros(max_boxes, bool)
  out_boxes[:kept], out_labels[:kept], mask[:kept] = boxes[:kept], labels[:kept], True
  return out_boxes, out_labels, mask, len(boxes) - kept


def filter_by_score(scores: np.ndarray, threshold: float) -> np.ndarray:
  """Indices of detector boxes with score >= `threshold` (0.8 in the AVA configs)."""
  return np.flatnonzero(np.asarray(scores) >= threshold)
