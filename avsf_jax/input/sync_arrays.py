"""`synthetic_av_sync` as in-memory arrays: the CPU-scale data of the self-supervised check.

Selected by `config.input.dataset == 'synthetic_av_sync_np'` (`experiment.data_source`). The
clips are those of `input/prepare/synthetic_av_sync.py` (same seeds, same splits), rendered
with `clip_media` and kept as arrays instead of being encoded to mp4 and decoded again: at the
demo's 32-pixel crops that saves the codec round trip, which costs more CPU than the training
it feeds. Built on first use and cached as one compressed `.npz` under
`$AVSF_DATA_DIR/synthetic_av_sync_np` (default `~/.cache/avsf_jax/datasets`).

Stored per clip (section `config.sync_data`, `SYNC_DATA` holds the defaults):
- video: `STORE_FPS` = 15 frames a second (nearest frame of the clip's own 24/25/30 fps),
  box-filtered from 112 x 80 to `WIDTH` x `HEIGHT` = 44 x 32, uint8;
- audio: a log-mel of the mono mix, 25 ms Hann windows every 10 ms (`MEL_RATE` = 100 frames a
  second), `NUM_MELS` HTK mel bands up to 8 kHz, log(power + 1e-6), normalised with the
  pretraining split's mean and standard deviation.

A clip is `T * tau` frames at 30 fps (the pipeline's `target_fps`), i.e. `T * tau / 2` stored
frames; Slow takes every `tau / 2`-th stored frame and Fast every `tau / (2 alpha)`-th. Its
audio is the same time window, max-pooled to `audio.num_frames` rows (a 30 ms burst survives
any pooling; index resampling could miss it). Training examples get a random window, a random
horizontal square crop, an optional flip, then (when `sync_data.rotation` is 'one_per_clip')
the same k x 90-degree rotation of Slow and Fast (`np.rot90`'s sense, as `input/rotation.py`)
with `rotation` = k, and a hard negative: the same clip's audio >= `input.min_negative_shift`
seconds away. Every random choice is a pure function of (seed, step, process) for training
and of the example index for evaluation. No TensorFlow.

Evaluation batches: classification-style multi-view ones ((b, V, ...) views, `label`,
`video_index`, `_mask`) or, for `config.task == 'pretraining'`, single-view pretext batches
(a fixed rotation and hard negative per held-out clip) so that the held-out rotation and sync
ranking accuracies are measured on clips the pretraining never saw.
"""

import functools
import hashlib
import os
from collections.abc import Iterator

import ml_collections
import numpy as np

from avsf_jax.input import in_memory
from avsf_jax.input import info as info_lib
from avsf_jax.input.prepare import synthetic_av_sync as sync

DATASET = 'synthetic_av_sync_np'
STORE_FPS = 15
HEIGHT, WIDTH = 32, 44
MEL_RATE = 100  # log-mel frames per second
NUM_MELS = 40
FORMAT_VERSION = 1
SPLIT_NUMBERS = {split: number for number, split in enumerate(sync.SPLITS)}
ROTATION_MODES = ('none', 'one_per_clip')

SYNC_DATA = {
  'seed': 0,  # the generator's seed (the clips are those of synthetic_av_sync with this seed)
  'clips_per_class': dict(sync.SPLITS),
  'rotation': 'none',  # 'one_per_clip' for the ROT pretext
  'features_split': 'train',  # the probe's `features` mode extracts from this split
}


def settings(config) -> dict:
  """`config.sync_data` over the defaults; unknown fields are an error naming them."""
  section = dict(config.get('sync_data') or {})
  unknown = sorted(set(section) - set(SYNC_DATA))
  if unknown:
    raise ValueError(f'config.sync_data has unknown fields {unknown}; known: {sorted(SYNC_DATA)}')
  out = {**SYNC_DATA, **section}
  out['clips_per_class'] = dict(out['clips_per_class'])
  if out['rotation'] not in ROTATION_MODES:
    raise ValueError(f'config.sync_data.rotation={out["rotation"]!r}; one of {ROTATION_MODES}')
  return out


# -- building the arrays ------------------------------------------------------------------------


@functools.cache
def _box_matrix(size_in: int, size_out: int) -> np.ndarray:
  """(size_out, size_in) area-averaging weights (each output pixel averages its footprint)."""
  edges = np.linspace(0.0, size_in, size_out + 1)
  weights = np.zeros((size_out, size_in))
  for o in range(size_out):
    for i in range(size_in):
      weights[o, i] = max(0.0, min(edges[o + 1], i + 1) - max(edges[o], i))
  return weights / weights.sum(axis=1, keepdims=True)


def _mel_filters(sample_rate: int, fft_size: int, num_mels: int, fmax: float = 8000.0):
  """(fft_size // 2 + 1, num_mels) triangular HTK-mel filters, each of unit peak."""

  def to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

  points = 700.0 * (10.0 ** (np.linspace(0.0, to_mel(fmax), num_mels + 2) / 2595.0) - 1.0)
  freqs = np.linspace(0.0, sample_rate / 2.0, fft_size // 2 + 1)
  lower = (freqs[None, :] - points[:-2, None]) / (points[1:-1] - points[:-2])[:, None]
  upper = (points[2:, None] - freqs[None, :]) / (points[2:] - points[1:-1])[:, None]
  return np.maximum(0.0, np.minimum(lower, upper)).T


def log_mel(audio: np.ndarray, sample_rate: int, duration_s: float) -> np.ndarray:
  """(duration_s * MEL_RATE, NUM_MELS) float32 log-mel of (channels, samples) audio."""
  mono = np.asarray(audio, np.float64).mean(axis=0)
  window = int(round(0.025 * sample_rate))
  hop = sample_rate / MEL_RATE
  fft_size = 1 << (window - 1).bit_length()
  count = int(round(duration_s * MEL_RATE))
  padded = np.pad(mono, (window // 2, window))
  starts = np.round(np.arange(count) * hop).astype(int)
  frames = padded[starts[:, None] + np.arange(window)[None, :]] * np.hanning(window)
  power = np.abs(np.fft.rfft(frames, fft_size)) ** 2
  return np.log(power @ _mel_filters(sample_rate, fft_size, NUM_MELS) + 1e-6).astype(np.float32)


def clip_arrays(class_name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(video (F, HEIGHT, WIDTH, 3) uint8 at STORE_FPS, unnormalised log-mel (M, NUM_MELS))."""
  clip = sync.clip_media(class_name, seed)
  count = int(round(sync.DURATION_S * STORE_FPS))
  index = np.floor(np.arange(count) / STORE_FPS * clip.fps + 1e-6).astype(int)
  frames = clip.frames[np.minimum(index, len(clip.frames) - 1)].astype(np.float32)
  rows = _box_matrix(frames.shape[1], HEIGHT).astype(np.float32)
  cols = _box_matrix(frames.shape[2], WIDTH).astype(np.float32)
  # (F, C, H, W): rows @ frame @ cols.T per channel, back to (F, HEIGHT, WIDTH, C).
  small = np.matmul(np.matmul(rows, frames.transpose(0, 3, 1, 2)), cols.T).transpose(0, 2, 3, 1)
  video = np.clip(np.round(small), 0, 255).astype(np.uint8)
  return video, log_mel(clip.audio, clip.sample_rate, sync.DURATION_S)


def _cache_path(options: dict) -> str:
  root = os.environ.get('AVSF_DATA_DIR') or os.path.expanduser('~/.cache/avsf_jax/datasets')
  key = repr(
    (
      FORMAT_VERSION,
      sync.GENERATOR_VERSION,
      sync.SQUARE_SIDES,
      options['seed'],
      sorted(options['clips_per_class'].items()),
    )
  )
  digest = hashlib.sha256(key.encode()).hexdigest()[:12]
  return os.path.join(root, DATASET, f'{digest}.npz')


def build(seed: int, clips_per_class: dict) -> dict[str, np.ndarray]:
  """Every split's arrays: `<split>/video`, `<split>/log_mel`, `<split>/label`, and the
  normalisation `mel_mean`, `mel_std` (of the first split, the pretraining one)."""
  out = {}
  for split, per_class in clips_per_class.items():
    videos, mels, labels = [], [], []
    for class_number, name in enumerate(sync.CLASS_NAMES):
      for i in range(per_class):
        clip_seed = sync.clip_seed(seed, SPLIT_NUMBERS[split], class_number, i)
        video, mel = clip_arrays(name, clip_seed)
        videos.append(video)
        mels.append(mel)
        labels.append(class_number)
    out[f'{split}/video'] = np.stack(videos)
    out[f'{split}/log_mel'] = np.stack(mels)
    out[f'{split}/label'] = np.asarray(labels, np.int32)
  first = next(iter(clips_per_class))
  out['mel_mean'] = np.float32(out[f'{first}/log_mel'].mean())
  out['mel_std'] = np.float32(out[f'{first}/log_mel'].std())
  return out


_LOADED: dict[str, dict[str, np.ndarray]] = {}


def load(config) -> dict[str, np.ndarray]:
  """The dataset's arrays, built and cached on first use (then read from the cache)."""
  options = settings(config)
  path = _cache_path(options)
  if path in _LOADED:
    return _LOADED[path]
  if not os.path.exists(path):
    arrays = build(options['seed'], options['clips_per_class'])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.tmp-{os.getpid()}.npz'
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
  with np.load(path) as f:
    arrays = {k: f[k] for k in f.files}
  _LOADED[path] = arrays
  return arrays


def _split(config, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  arrays = load(config)
  if f'{split}/video' not in arrays:
    splits = sorted({k.split('/')[0] for k in arrays if '/' in k})
    raise ValueError(f'{DATASET}: no split {split!r}; the dataset has {splits}')
  mel = (arrays[f'{split}/log_mel'] - arrays['mel_mean']) / arrays['mel_std']
  return arrays[f'{split}/video'], mel, arrays[f'{split}/label']


# -- the data-source interface ------------------------------------------------------------------


def dataset_info(config: ml_collections.ConfigDict) -> info_lib.DatasetInfo:
  options = settings(config)
  counts = options['clips_per_class']
  for field in ('train_split', 'eval_split'):
    if config.input[field] not in counts:
      raise ValueError(
        f'config.input.{field}={config.input[field]!r}; {DATASET} has splits {sorted(counts)}'
      )
  classes = len(sync.CLASS_NAMES)
  return info_lib.DatasetInfo(
    num_train_examples=classes * counts[config.input.train_split],
    num_eval_examples=classes * counts[config.input.eval_split],
    num_classes=classes,
    class_names=tuple(sync.CLASS_NAMES),
    multi_label=False,
  )


def _geometry(config) -> dict[str, int]:
  """Stored-frame strides and the clip length of the config's T, tau and alpha."""
  inp, alpha = config.input, config.model.alpha
  step = 30 // STORE_FPS
  if inp.tau % (step * alpha) or inp.crop_size != HEIGHT or inp.test_crop_size != HEIGHT:
    raise ValueError(
      f'{DATASET}: input.tau={inp.tau} must be a multiple of {step} x model.alpha={alpha}, and '
      f'input.crop_size={inp.crop_size} and input.test_crop_size={inp.test_crop_size} must be '
      f'{HEIGHT} (square crops of the stored {HEIGHT}-row frames)'
    )
  slow = inp.tau // step
  return {'slow': slow, 'fast': slow // alpha, 'length': inp.num_frames * slow}


def _normalise(video: np.ndarray, config) -> np.ndarray:
  mean = np.asarray(config.input.mean, np.float32)
  std = np.asarray(config.input.std, np.float32)
  return (video.astype(np.float32) / 255.0 - mean) / std


def _audio_window(mel: np.ndarray, start_s: float, config) -> np.ndarray:
  """(audio.num_frames, NUM_MELS, 1): the clip window's log-mel rows, max-pooled."""
  geometry = _geometry(config)
  first = int(round(start_s * MEL_RATE))
  count = int(round(geometry['length'] / STORE_FPS * MEL_RATE))
  rows = mel[first : first + count]
  edges = np.linspace(0, len(rows), config.audio.num_frames + 1).astype(int)
  pooled = np.stack([rows[a : max(b, a + 1)].max(axis=0) for a, b in zip(edges[:-1], edges[1:])])
  if pooled.shape[1] != config.audio.num_mel_bins:
    raise ValueError(f'{DATASET}: audio.num_mel_bins must be {NUM_MELS}; got {pooled.shape[1]}')
  return pooled[..., None].astype(np.float32)


def _example(video, mel, config, rng, *, start, left, flip, rotation, negative_start):
  """The model inputs of one view of one clip."""
  geometry = _geometry(config)
  clip = video[start : start + geometry['length']]
  size = clip.shape[1]
  clip = clip[:, :, left : left + size]
  if flip:
    clip = clip[:, :, ::-1]
  out = {
    'slow': clip[:: geometry['slow']],
    'fast': clip[:: geometry['fast']],
  }
  if rotation is not None:
    for key in ('slow', 'fast'):
      out[key] = np.rot90(out[key], rotation, axes=(1, 2))
  out = {k: _normalise(v, config) for k, v in out.items()}
  out['audio'] = _audio_window(mel, start / STORE_FPS, config)
  if negative_start is not None:
    out['audio_negative'] = _audio_window(mel, negative_start / STORE_FPS, config)
  return out


def _negative_start(rng, start: int, last: int, config) -> int:
  """A window start >= min_negative_shift seconds from `start` (always exists: clips are
  2.5 s, windows about 1 s)."""
  shift = int(np.ceil(config.input.min_negative_shift * STORE_FPS))
  choices = [s for s in range(last + 1) if abs(s - start) >= shift]
  return int(choices[rng.integers(len(choices))])


def _pretext_batch(examples: list[dict], labels: np.ndarray) -> dict[str, np.ndarray]:
  """Stacked pretext examples with `label` and the all-ones `has_audio` and
  `audio_negative_is_hard` (every synthetic_av_sync clip has audio and a hard negative)."""
  batch = in_memory.stack(examples)
  batch['label'] = labels.astype(np.int32)
  batch['has_audio'] = np.ones((len(labels),), np.float32)
  batch['audio_negative_is_hard'] = np.ones((len(labels),), np.float32)
  return batch


def augmented_batch(config, split: str, index: np.ndarray, rng: np.random.Generator) -> dict:
  """One training view per clip `index` of `split`: random window and crop, flip, rotation,
  hard negative, `label`, `has_audio`, `audio_negative_is_hard` (and `rotation`)."""
  video, mel, labels = _split(config, split)
  options = settings(config)
  geometry = _geometry(config)
  size = config.input.crop_size
  examples = []
  for i in index:
    last = video.shape[1] - geometry['length']
    start = int(rng.integers(last + 1))
    rotation = int(rng.integers(4)) if options['rotation'] == 'one_per_clip' else None
    example = _example(
      video[i],
      mel[i],
      config,
      rng,
      start=start,
      left=int(rng.integers(WIDTH - size + 1)),
      flip=bool(config.input.flip and rng.integers(2)),
      rotation=rotation,
      negative_start=_negative_start(rng, start, last, config),
    )
    if rotation is not None:
      example['rotation'] = np.int32(rotation)
    examples.append(example)
  return _pretext_batch(examples, labels[index])


def make_train_iterator(
  config: ml_collections.ConfigDict,
  *,
  seed: int,
  start_step: int = 0,
  process_index: int = 0,
  process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Endless per-process batches of `input.train_split`; batch `s` depends on (seed, s)."""
  global_batch = config.input.batch_size
  b = in_memory.process_share(config, 'batch_size', process_count)
  split = config.input.train_split
  n = len(_split(config, split)[2])
  step = start_step
  while True:
    order = in_memory.example_rng(seed, 0, step).integers(0, n, global_batch)
    index = order[process_index * b : (process_index + 1) * b]
    yield augmented_batch(config, split, index, in_memory.example_rng(seed, 1, step, process_index))
    step += 1


def augmented_copies(config, split: str, copy: int) -> Iterator[dict[str, np.ndarray]]:
  """One augmented view of every clip of `split` (seeded by `copy`), in order, padded to whole
  `eval_batch_size` batches with `_mask`: the `features` probe's K copies."""
  n = len(_split(config, split)[2])
  b = config.input.eval_batch_size
  for first in range(0, n, b):
    index = first + np.arange(b)
    mask = (index < n).astype(np.float32)
    index = np.minimum(index, n - 1)
    batch = augmented_batch(
      config, split, index, in_memory.example_rng(config.seed, 3, copy, first)
    )
    batch['_mask'] = mask
    yield batch


def num_eval_batches(config) -> int:
  return -(-dataset_info(config).num_eval_examples // config.input.eval_batch_size)


def _view_starts(last: int, views: int) -> list[int]:
  return (
    [int(round(x)) for x in np.linspace(0, last, views + 2)[1:-1]] if views > 1 else [last // 2]
  )


def eval_views(config, split: str, index: np.ndarray) -> dict[str, np.ndarray]:
  """Every view of clips `index`: (b, V, ...) with V = temporal x spatial views, centred
  evenly spaced windows and left / centre / right crops (no flip, no rotation)."""
  video, mel, labels = _split(config, split)
  geometry = _geometry(config)
  size = config.input.test_crop_size
  last = video.shape[1] - geometry['length']
  starts = _view_starts(last, config.input.num_temporal_views)
  spatial = config.input.num_spatial_views
  lefts = (
    [int(round(x)) for x in np.linspace(0, WIDTH - size, spatial)]
    if spatial > 1
    else [(WIDTH - size) // 2]
  )
  clips = []
  for i in index:
    views = [
      _example(
        video[i],
        mel[i],
        config,
        None,
        start=s,
        left=x,
        flip=False,
        rotation=None,
        negative_start=None,
      )
      for s in starts
      for x in lefts
    ]
    clips.append(in_memory.stack(views))
  batch = in_memory.stack(clips)
  batch['label'] = labels[index].astype(np.int32)
  return batch


def pretext_eval_batch(config, split: str, index: np.ndarray) -> dict[str, np.ndarray]:
  """Held-out pretext examples: centre window and crop, a rotation and hard negative fixed by
  the clip's index (the same in every run)."""
  video, mel, labels = _split(config, split)
  geometry = _geometry(config)
  size = config.input.test_crop_size
  last = video.shape[1] - geometry['length']
  rotate = settings(config)['rotation'] == 'one_per_clip'
  examples = []
  for i in index:
    rng = in_memory.example_rng(12345, 4, i)
    rotation = int(rng.integers(4))
    start = last // 2
    example = _example(
      video[i],
      mel[i],
      config,
      rng,
      start=start,
      left=(WIDTH - size) // 2,
      flip=False,
      rotation=rotation if rotate else None,
      negative_start=_negative_start(rng, start, last, config),
    )
    if rotate:
      example['rotation'] = np.int32(rotation)
    examples.append(example)
  return _pretext_batch(examples, labels[index])


def make_eval_iterator(
  config: ml_collections.ConfigDict,
  *,
  split: str | None = None,
  multi_view: bool = True,
  process_index: int = 0,
  process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Finite batches of `input.eval_split`, padded with `_mask`: pretext examples for the
  pretraining task, else (b, V, ...) views (V = 1 when not `multi_view`)."""
  split = split or config.input.eval_split
  global_batch = config.input.eval_batch_size
  b = in_memory.process_share(config, 'eval_batch_size', process_count)
  n = len(_split(config, split)[2])
  pretext = config.get('task') == 'pretraining'
  single = config.copy_and_resolve_references()
  if not multi_view:
    single.input.num_temporal_views, single.input.num_spatial_views = 1, 1
  for first in range(0, n, global_batch):
    index = first + process_index * b + np.arange(b)
    mask = (index < n).astype(np.float32)
    index = np.minimum(index, n - 1)
    if pretext:
      batch = pretext_eval_batch(config, split, index)
    else:
      batch = eval_views(single, split, index)
      batch['has_audio'] = np.ones((b,), np.float32)
    batch['video_index'] = index.astype(np.int32)
    batch['_mask'] = mask
    yield batch
