"""AVA-layout detection data (`ava`, `synthetic_ava`), read straight from the dataset's files.

Selected by `config.input.dataset` in {'ava', 'synthetic_ava'} (`experiment.data_source`).
The layout is spec `ava.md` 1.1: `frames/<vid>/<vid>_%06d.jpg` (frame index i is file i + 1,
index 0 at the segment start), `videos/<vid>.mp4` for the audio, `frame_lists/<split>.csv`,
and under `annotations/` the box CSVs, the excluded timestamps, the label map and the
person-detector boxes (file names in `config.detection.files`, defaults in `FILES`).
`synthetic_ava` is generated (`input.prepare.synthetic_ava`, deterministic in the seed) into
`<data_dir>/synthetic_ava` on first use.

An example is a keyframe with at least one box (spec 1.1):
- clip (spec 3): Fast frames `keyframe_frame_indices(ts, alpha*T, tau/alpha)`, Slow every
  alpha-th of them; audio: the log-mel of exactly the clip's window (SPEC 4, numpy here);
- training: ground-truth boxes with their multi-hot labels, PySlowFast's transform (short
  side jittered in [jitter_scales], random `crop_size` crop, flip) applied to frames and
  boxes alike (`ava_ops.train_boxes`);
- evaluation: every non-excluded keyframe with GT; boxes are the GT boxes
  (`detection.eval_boxes='gt'`) or the detector's with score >= `detection.score_threshold`
  ('detector'); full frame at short side `test_short_side`.
Boxes are padded to `detection.max_boxes` with `box_mask` (training drops boxes past it; an
evaluation keyframe with more boxes is an error, since dropping one would change the mAP).
Batch keys: 'slow', 'fast' (N, T, H, W, 3) normalised, 'audio' (N, frames, mel, 1), 'boxes'
(N, M, 4) pixels of the transformed clip, 'box_mask' (N, M), 'box_labels' (N, M, 80), and for
evaluation 'ori_boxes' (N, M, 4) normalised, 'video_index', 'timestamp' (N,) int32 and '_mask' (N,).

A training batch is a pure function of (seed, step, process). No TensorFlow here.
"""

import collections
import dataclasses
import functools
import os
from collections.abc import Iterator, Mapping

import ml_collections
import numpy as np
from PIL import Image

from avsf_jax.input import ava_ops, in_memory
from avsf_jax.input import info as info_lib
from avsf_jax.input.prepare import ava_files

DATASETS = ('ava', 'synthetic_ava')
# Annotation file names per dataset (under <root>/annotations); `config.detection.files`
# overrides any of them.
FILES = {
  'ava': {
    'train': 'ava_train_v2.2.csv',
    'val': 'ava_val_v2.2.csv',
    'excluded': 'ava_val_excluded_timestamps_v2.2.csv',
    'label_map': 'ava_action_list_v2.2_for_activitynet_2019.pbtxt',
    'val_detections': 'ava_detection_val_boxes_and_labels.csv',
  },
  'synthetic_ava': {
    'train': 'synthetic_ava_train.csv',
    'val': 'synthetic_ava_val.csv',
    'excluded': 'synthetic_ava_val_excluded_timestamps.csv',
    'label_map': 'label_map.pbtxt',
    'val_detections': 'synthetic_ava_val_predicted_boxes.csv',
  },
}
EVAL_BOXES = ('gt', 'detector')


@dataclasses.dataclass(frozen=True)
class AvaDatasetInfo(info_lib.DatasetInfo):
  """`DatasetInfo` plus what the detection evaluator needs.

  `class_names` holds the label map's names in `evaluated_class_ids` order; `num_classes`
  is the model's outputs (80 for AVA: every class id c is column c - 1).
  """

  evaluated_class_ids: tuple[int, ...] = ()
  eval_video_ids: tuple[str, ...] = ()
  groundtruth: tuple = ()  # ava_files.BoxRow of the eval split, excluded keyframes removed
  excluded_keys: tuple[str, ...] = ()
  frame_size: tuple[int, int] = (0, 0)  # stored frames' (height, width)


def default_data_dir() -> str:
  """`$AVSF_DATA_DIR`, else ~/.cache/avsf_jax/datasets (as `input.pipeline`)."""
  return os.environ.get('AVSF_DATA_DIR') or os.path.expanduser('~/.cache/avsf_jax/datasets')


def dataset_root(config: ml_collections.ConfigDict) -> str:
  """The dataset's folder; `synthetic_ava` is generated there on first use."""
  name = config.input.dataset
  if name not in DATASETS:
    raise ValueError(f'input.dataset={name!r}: the AVA pipeline reads {DATASETS}')
  root = os.path.join(config.input.data_dir or default_data_dir(), name)
  if name == 'synthetic_ava' and not os.path.exists(os.path.join(root, 'dataset_info.json')):
    from avsf_jax.input.prepare import synthetic_ava  # noqa: PLC0415

    synthetic_ava.generate(root, seed=0)
  if not os.path.isdir(os.path.join(root, 'annotations')):
    raise FileNotFoundError(f'{root}: expected the AVA layout (annotations/, frames/, ...)')
  return root


def _files(config) -> dict[str, str]:
  files = dict(FILES[config.input.dataset])
  section = config.get('detection') or {}
  overrides = dict(section.get('files') or {})
  unknown = sorted(set(overrides) - set(files))
  if unknown:
    raise ValueError(f'detection.files has unknown keys {unknown}; known: {sorted(files)}')
  files.update(overrides)
  return files


def _detection(config) -> dict:
  section = config.get('detection')
  if section is None:
    raise ValueError('config.detection: the AVA pipeline needs the detection section')
  if section.eval_boxes not in EVAL_BOXES:
    raise ValueError(f'detection.eval_boxes={section.eval_boxes!r}; one of {EVAL_BOXES}')
  return section


class Keyframe(collections.namedtuple('Keyframe', 'video_id timestamp boxes labels')):
  """One example: normalised (K, 4) boxes and their (K, classes) multi-hot labels."""


def _group(rows, num_classes: int) -> dict[tuple[str, int], Keyframe]:
  """Box rows -> keyframes; rows with the same keyframe and box are one box (labels merged)."""
  boxes: dict[tuple[str, int], dict[tuple, list[int]]] = collections.defaultdict(dict)
  for r in rows:
    boxes[(r.video_id, r.timestamp)].setdefault(tuple(r.box), []).append(r.action_id)
  out = {}
  for key, per_box in sorted(boxes.items()):
    items = list(per_box.items())
    out[key] = Keyframe(
      key[0],
      key[1],
      np.array([b for b, _ in items], np.float32).reshape(-1, 4),
      ava_ops.multi_hot([ids for _, ids in items], num_classes),
    )
  return out


@functools.lru_cache(maxsize=8)
def _tables(root: str, files: tuple, num_classes: int, eval_boxes: str, threshold: float):
  """Parsed annotation tables (cached per process)."""
  files = dict(files)
  ann = os.path.join(root, 'annotations')
  label_map = ava_files.read_label_map(os.path.join(ann, files['label_map']))
  excluded = ava_files.read_excluded_timestamps(os.path.join(ann, files['excluded']))
  train = _group(
    ava_files.read_boxes(os.path.join(ann, files['train']), num_classes=num_classes), num_classes
  )
  val_rows = [
    r
    for r in ava_files.read_boxes(os.path.join(ann, files['val']), num_classes=num_classes)
    if (r.video_id, r.timestamp) not in excluded
  ]
  val_gt = _group(val_rows, num_classes)
  if eval_boxes == 'detector':
    detections = [
      r
      for r in ava_files.read_boxes(
        os.path.join(ann, files['val_detections']), detections=True, num_classes=num_classes
      )
      if r.score >= threshold
    ]
    found = _group(detections, num_classes)
    none = np.zeros((0, 4), np.float32)
    # The keyframes with GT (excluded ones removed), with the detector's boxes (maybe none);
    # their labels are unused (zeros): evaluation matches the boxes against the GT.
    val = {}
    for k in val_gt:
      boxes = found[k].boxes if k in found else none
      val[k] = Keyframe(k[0], k[1], boxes, np.zeros((len(boxes), num_classes), np.float32))
  else:
    val = val_gt
  frame_counts = {}
  for split in ('train', 'val'):
    counts = collections.Counter(
      r.original_video_id
      for r in ava_files.read_frame_list(os.path.join(root, 'frame_lists', f'{split}.csv'))
    )
    frame_counts.update(counts)
  return label_map, excluded, list(train.values()), list(val.values()), val_rows, frame_counts


def _load(config):
  det = _detection(config)
  root = dataset_root(config)
  files = tuple(sorted(_files(config).items()))
  num_classes = int(config.model.num_classes)
  return root, _tables(root, files, num_classes, det.eval_boxes, float(det.score_threshold))


def dataset_info(config: ml_collections.ConfigDict) -> AvaDatasetInfo:
  root, (label_map, excluded, train, val, val_rows, _) = _load(config)
  ids = tuple(sorted(label_map))
  first = os.path.join(root, 'frames', train[0].video_id, f'{train[0].video_id}_000001.jpg')
  with Image.open(first) as image:
    width, height = image.size
  return AvaDatasetInfo(
    num_train_examples=len(train),
    num_eval_examples=len(val),
    num_classes=int(config.model.num_classes),
    class_names=tuple(label_map[c] for c in ids),
    multi_label=True,
    evaluated_class_ids=ids,
    eval_video_ids=tuple(sorted({k.video_id for k in val})),
    groundtruth=tuple(val_rows),
    excluded_keys=tuple(sorted(f'{v},{t:04d}' for v, t in excluded)),
    frame_size=(height, width),
  )


@functools.lru_cache(maxsize=8192)
def _frame(root: str, video_id: str, index: int) -> np.ndarray:
  path = os.path.join(root, 'frames', video_id, f'{video_id}_{index + 1:06d}.jpg')
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert('RGB'))
  except FileNotFoundError as e:
    raise FileNotFoundError(f'{path}: frame {index} of {video_id} is missing') from e


@functools.lru_cache(maxsize=64)
def _audio(root: str, video_id: str, sample_rate: int) -> np.ndarray:
  from avsf_jax.input import media  # noqa: PLC0415 (PyAV)

  return media.decode_audio(os.path.join(root, 'videos', f'{video_id}.mp4'), sample_rate)


@functools.cache
def mel_weights(sample_rate: int, fft_size: int, num_mel_bins: int) -> np.ndarray:
  """(fft_size // 2 + 1, num_mel_bins) HTK-scale triangles with Slaney area normalisation:
  librosa's `mel(htk=True)`, as `input.audio.mel_matrix` (which lives beside TensorFlow)."""
  to_mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)  # noqa: E731
  to_hz = lambda mel: 700.0 * (10.0 ** (mel / 2595.0) - 1.0)  # noqa: E731
  fft_freqs = np.linspace(0.0, sample_rate / 2.0, fft_size // 2 + 1)
  edges = to_hz(np.linspace(0.0, to_mel(sample_rate / 2.0), num_mel_bins + 2))
  ramps = edges[:, None] - fft_freqs[None, :]
  widths = np.diff(edges)
  lower, upper = -ramps[:-2] / widths[:-1, None], ramps[2:] / widths[1:, None]
  weights = np.maximum(0.0, np.minimum(lower, upper))
  weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
  return weights.T


def log_mel(samples: np.ndarray, audio_config) -> np.ndarray:
  """Normalised (num_frames, num_mel_bins, 1) log-mel of float samples: SPEC 4's front end
  (window 512, hop 256, periodic Hann, power, HTK mel with Slaney norm, log), index-resampled
  to `num_frames` rows, as `input.audio.clip_log_mel` computes it in TensorFlow."""
  a = audio_config
  window = a.window_size
  samples = np.asarray(samples, np.float64)
  if len(samples) < window:
    samples = np.pad(samples, (0, window - len(samples)))
  count = 1 + (len(samples) - window) // a.hop_size
  frames = np.stack([samples[i * a.hop_size : i * a.hop_size + window] for i in range(count)])
  hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)
  power = np.abs(np.fft.rfft(frames * hann, a.fft_size)) ** 2
  mel = np.log(power @ mel_weights(a.sample_rate, a.fft_size, a.num_mel_bins) + a.log_offset)
  rows = np.linspace(0.0, count - 1, a.num_frames).astype(np.int32)
  return ((mel[rows] - a.mean) / a.std).astype(np.float32)[..., None]


def _resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  if frames.shape[1:3] == (height, width):
    return frames
  return np.stack(
    [np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR)) for f in frames]
  )


def example(config, root, frame_counts, keyframe: Keyframe, rng, train: bool) -> dict:
  """One keyframe's clip, boxes and labels (training transform with `rng`, or the test one)."""
  det = _detection(config)
  inp = config.input
  alpha = config.model.alpha
  t = inp.num_frames
  if inp.tau % alpha:
    raise ValueError(f'input.tau={inp.tau} must be a multiple of model.alpha={alpha}')
  vid = keyframe.video_id
  indices = ava_ops.keyframe_frame_indices(
    keyframe.timestamp,
    num_frames=t * alpha,
    stride=inp.tau // alpha,
    total_frames=frame_counts[vid],
  )
  frames = np.stack([_frame(root, vid, int(i)) for i in indices])
  height, width = frames.shape[1:3]
  if train:
    boxes, draws = ava_ops.train_boxes(
      keyframe.boxes,
      height,
      width,
      rng,
      min_size=inp.jitter_scales[0],
      max_size=inp.jitter_scales[1],
      crop_size=inp.crop_size,
      flip=inp.flip,
    )
    frames = _resize(frames, *ava_ops.short_side_size(height, width, draws['short_side']))
    y, x = draws['offsets']
    frames = frames[:, y : y + inp.crop_size, x : x + inp.crop_size]
    if draws['flip']:
      frames = frames[:, :, ::-1]
  else:
    boxes = ava_ops.eval_boxes(keyframe.boxes, height, width, inp.test_short_side)
    frames = _resize(frames, *ava_ops.short_side_size(height, width, inp.test_short_side))
  video = (frames.astype(np.float32) / 255.0 - np.float32(inp.mean)) / np.float32(inp.std)
  out = {}
  if 'fast' in config.model.pathways:
    out['fast'] = video
  if 'slow' in config.model.pathways:
    out['slow'] = video[::alpha]
  if 'audio' in config.model.pathways:
    a = config.audio
    samples = _audio(root, vid, a.sample_rate)
    start, end = ava_ops.audio_window(indices)
    first, last = int(round(start * a.sample_rate)), int(round(end * a.sample_rate))
    window = np.zeros(last - first, np.float32)
    lo, hi = max(first, 0), min(last, len(samples))
    if hi > lo:
      window[lo - first : hi - first] = samples[lo:hi]
    out['audio'] = log_mel(window, a)
  padded, labels, mask, dropped = ava_ops.pad_boxes(boxes, keyframe.labels, det.max_boxes)
  if dropped and not train:
    # A dropped box would silently change the evaluated detections (and so the mAP).
    raise ValueError(
      f'keyframe {vid},{keyframe.timestamp:04d} has {len(boxes)} evaluation boxes but '
      f'detection.max_boxes={det.max_boxes}; raise detection.max_boxes'
    )
  ori, _, _, _ = ava_ops.pad_boxes(keyframe.boxes, keyframe.labels, det.max_boxes)
  out.update(boxes=padded, box_labels=labels, box_mask=mask, ori_boxes=ori)
  return out


def make_train_iterator(
  config: ml_collections.ConfigDict,
  *,
  seed: int,
  start_step: int = 0,
  process_index: int = 0,
  process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Endless per-process batches of GT-box keyframes; batch `s` depends only on (seed, s)."""
  root, (_, _, train, _, _, frame_counts) = _load(config)
  global_batch = config.input.batch_size
  b = in_memory.process_share(config, 'batch_size', process_count)
  step = start_step
  while True:
    order = in_memory.example_rng(seed, 0, step).integers(0, len(train), global_batch)
    mine = order[process_index * b : (process_index + 1) * b]
    examples = [
      example(
        config,
        root,
        frame_counts,
        train[int(k)],
        in_memory.example_rng(seed, 1, step, int(k), j),
        True,
      )
      for j, k in enumerate(mine)
    ]
    batch = in_memory.stack(examples)
    batch.pop('ori_boxes')
    yield batch
    step += 1


def num_eval_batches(config: ml_collections.ConfigDict) -> int:
  _, (_, _, _, val, _, _) = _load(config)
  return -(-len(val) // config.input.eval_batch_size)


def make_eval_iterator(
  config: ml_collections.ConfigDict,
  *,
  multi_view: bool = True,
  process_index: int = 0,
  process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """The eval keyframes in order, padded to whole batches (`_mask` 0 on padding). One view
  (the full frame): `multi_view` changes nothing for detection."""
  del multi_view
  root, (_, _, _, val, _, frame_counts) = _load(config)
  videos = {v: i for i, v in enumerate(sorted({k.video_id for k in val}))}
  global_batch = config.input.eval_batch_size
  b = in_memory.process_share(config, 'eval_batch_size', process_count)
  for i in range(num_eval_batches(config)):
    index = i * global_batch + process_index * b + np.arange(b)
    mask = (index < len(val)).astype(np.float32)
    index = np.minimum(index, len(val) - 1)
    examples = [example(config, root, frame_counts, val[int(k)], None, False) for k in index]
    batch = in_memory.stack(examples)
    batch['video_index'] = np.array([videos[val[int(k)].video_id] for k in index], np.int32)
    batch['timestamp'] = np.array([val[int(k)].timestamp for k in index], np.int32)
    batch['_mask'] = mask
    yield batch


def keyframes(config: ml_collections.ConfigDict, split: str) -> list[Keyframe]:
  """The examples of 'train' (GT boxes) or 'val' (the eval boxes), in iterator order."""
  _, (_, _, train, val, _, _) = _load(config)
  return {'train': train, 'val': val}[split]


def load_example(
  config: ml_collections.ConfigDict, keyframe: Keyframe, *, rng=None, train: bool
) -> dict:
  """`example` with the dataset's root and frame counts (tests, previews)."""
  root, (*_, frame_counts) = _load(config)
  return example(config, root, frame_counts, keyframe, rng, train)


def eval_keys(config: ml_collections.ConfigDict) -> list[str]:
  """Keyframe keys 'video,%04d' of the eval examples, in iterator order."""
  _, (_, _, _, val, _, _) = _load(config)
  return [f'{k.video_id},{k.timestamp:04d}' for k in val]


def video_ids(info: AvaDatasetInfo) -> Mapping[int, str]:
  """`video_index` -> video id, for rebuilding keyframe keys from a batch."""
  return dict(enumerate(info.eval_video_ids))
