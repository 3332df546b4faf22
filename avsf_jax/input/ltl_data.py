"""In-memory data of the Listen to Look demo: trimmed clips and feature banks (no TensorFlow).

Three datasets, picked by `config.input.dataset` (`experiment.data_source` dispatches here):

  'synthetic_ltl_clips'  trimmed 2-s action clips of `synthetic_untrimmed` (spec §8.1): per
                         clip the first frame ('image', H x W x 3), the first second of audio
                         as a 101 x 40 log-mel ('audio'), and the whole clip for the teacher
                         ('video', 16 x H x W x 3), with 'label'. Train and held-out clips come
                         from disjoint seeds. Used by the teacher and the distillation.
  'synthetic_ltl_pairs'  image-audio pairs of the untrimmed *training videos*, each with its
                         video's label (spec §8.2 step 3, the paper's clip-level fine-tuning:
                         most pairs are background, so the student learns what a background
                         pair does not tell): `pairs_per_video` time stamps per video, drawn
                         once from the seed; 'image', 'audio', 'label'. Its held-out split is
                         the held-out trimmed clips (clip accuracy). Used by the fine-tuning.
  'ltl_banks'            feature banks written by `tools.extract_preview_features`
                         (`config.skim.banks_dir`/{train,val}.npz): per video the (L, D) image and
                         audio banks, 'mask', 'label', 'segment'. Used by skimming.

The module has the `experiment.data_source` interface: `dataset_info(config)`,
`make_train_iterator(config, *, seed, start_step, process_index, process_count)` (endless; batch
`s` depends only on (seed, s)) and `make_eval_iterator(config, *, multi_view, ...)` (finite,
padded to whole batches with '_mask'). Everything is numpy and deterministic in the seeds; the
clips are generated once per process and cached.

Pixel values are scaled to [0, 1] and normalised with ImageNet's mean and std (the student's
convention); the log-mel is the paper's (`preview_audio.PreviewAudioConfig`: 25-ms periodic Hann
in a 512-point FFT, 10-ms hop, 40 HTK mel bins with Slaney areas, log(S + 1e-6)) normalised by
`config.audio.mean` / `config.audio.std` (the configs set them to the training clips'
statistics, `audio_statistics`; an export carries them as `preprocessing.audio_mean/std`).
`log_mel` is a numpy copy of `preview_audio.log_mel`
(tested equal), so that data preparation needs no TensorFlow.
"""

import functools
from collections.abc import Iterator

import ml_collections
import numpy as np

from avsf_jax.input import in_memory
from avsf_jax.input import info as info_lib
from avsf_jax.input.prepare import synthetic_untrimmed as su

CLIPS = 'synthetic_ltl_clips'
PAIRS = 'synthetic_ltl_pairs'
BANKS = 'ltl_banks'
DATASETS = (CLIPS, PAIRS, BANKS)
IMAGENET_MEAN = np.asarray((0.485, 0.456, 0.406), np.float32)
IMAGENET_STD = np.asarray((0.229, 0.224, 0.225), np.float32)
# The preview log-mel (spec §2.2): 1 s at 16 kHz -> 101 x 40.
SAMPLE_RATE, WINDOW, HOP, FFT, MELS, LOG_OFFSET = 16000, 400, 160, 512, 40, 1e-6
SEGMENT_SAMPLES = SAMPLE_RATE
NUM_AUDIO_FRAMES = 1 + SEGMENT_SAMPLES // HOP

# Defaults of the `ltl_data` config section (sizes of the in-memory clip dataset).
LTL_DATA = {
  'seed': 0,  # the generator's seed (the clips of a split are a function of it)
  'train_clips_per_class': 48,
  'eval_clips_per_class': 12,
  # synthetic_ltl_pairs: the untrimmed training videos (their seeds are `su.video_list`'s for
  # the generator seed `seed`) and how many of each video's pairs are used.
  'train_videos_per_class': su.SPLITS['train'],
  'pairs_per_video': 16,
  # synthetic_ltl_pairs also trains on the trimmed training clips' pairs (first frame, first
  # second of audio, the clip's label) when set.
  'with_clips': False,
}


def _section(config) -> dict:
  section = dict(config.get('ltl_data') or {})
  unknown = sorted(set(section) - set(LTL_DATA))
  if unknown:
    raise ValueError(f'config.ltl_data has unknown fields {unknown}; known: {sorted(LTL_DATA)}')
  return {**LTL_DATA, **section}


# -- audio and pixels -------------------------------------------------------------------------


@functools.cache
def _mel_weights() -> np.ndarray:
  """(FFT // 2 + 1, MELS) HTK mel filters with Slaney area normalisation (librosa htk=True)."""

  def to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)

  def to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)

  fft_freqs = np.linspace(0.0, SAMPLE_RATE / 2.0, FFT // 2 + 1)
  mel_freqs = to_hz(np.linspace(to_mel(0.0), to_mel(SAMPLE_RATE / 2.0), MELS + 2))
  ramps = mel_freqs[:, None] - fft_freqs[None, :]
  widths = np.diff(mel_freqs)
  weights = np.maximum(
    0.0, np.minimum(-ramps[:-2] / widths[:-1, None], ramps[2:] / widths[1:, None])
  )
  weights *= (2.0 / (mel_freqs[2:] - mel_freqs[:-2]))[:, None]
  return weights.T.astype(np.float32)


@functools.cache
def _window() -> np.ndarray:
  n = np.arange(WINDOW)
  hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / WINDOW)
  left = (FFT - WINDOW) // 2
  return np.pad(hann, (left, FFT - WINDOW - left)).astype(np.float32)


def log_mel(segments, xp=np):
  """Unnormalised (..., 101, 40) log-mel of (..., 16000) float samples in [-1, 1].

  `xp` is numpy (default) or `jax.numpy`: the feature-bank extractor computes the log-mel of
  a video's 80 pairs inside its jitted student call (XLA's FFT: ~10x faster than numpy's on
  2 cores); both agree within float32 round-off (tested).
  """
  segments = xp.asarray(segments, np.float32)
  if segments.shape[-1] != SEGMENT_SAMPLES:
    raise ValueError(f'log_mel: expected (..., {SEGMENT_SAMPLES}) samples, got {segments.shape}')
  pad = FFT // 2
  padded = xp.pad(segments, [(0, 0)] * (segments.ndim - 1) + [(pad, pad)])
  starts = np.arange(NUM_AUDIO_FRAMES) * HOP
  frames = padded[..., starts[:, None] + np.arange(FFT)] * _window()
  spectrum = xp.fft.rfft(frames, FFT, axis=-1)
  power = spectrum.real.astype(np.float32) ** 2 + spectrum.imag.astype(np.float32) ** 2
  return xp.log(power @ _mel_weights() + LOG_OFFSET).astype(np.float32)


def normalise_frames(frames: np.ndarray) -> np.ndarray:
  """uint8 RGB (..., H, W, 3) -> float32, [0, 1] then ImageNet mean/std."""
  return ((np.asarray(frames, np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(
    np.float32
  )


# -- trimmed clips ----------------------------------------------------------------------------


def _clip_seed(seed: int, split: int, label: int, index: int) -> int:
  return int(np.random.SeedSequence([seed, 77, split, label, index]).generate_state(1)[0])


@functools.cache
def _raw_clips(seed: int, split: int, per_class: int) -> dict[str, np.ndarray]:
  """Clips of one split (0 train, 1 held out), class-major: uint8 video, raw log-mel, label."""
  videos, mels, labels = [], [], []
  for label, name in enumerate(su.CLASS_NAMES):
    for i in range(per_class):
      frames, audio = su.trimmed_clip(name, _clip_seed(seed, split, label, i))
      videos.append(frames)
      mels.append(log_mel(audio[:SEGMENT_SAMPLES]))
      labels.append(label)
  return {
    'video': np.stack(videos),
    'log_mel': np.stack(mels),
    'label': np.asarray(labels, np.int32),
  }


@functools.cache
def audio_statistics(seed: int = 0, per_class: int = LTL_DATA['train_clips_per_class']):
  """(mean, std) of the training clips' log-mel: the normalisation of every preview spectrogram
  (clips and the untrimmed videos' pairs alike)."""
  mel = _raw_clips(seed, 0, per_class)['log_mel']
  return float(mel.mean()), float(mel.std())


def normalise_log_mel(mel: np.ndarray, stats: tuple[float, float]) -> np.ndarray:
  """(..., 101, 40) -> (..., 101, 40, 1) float32, (x - mean) / std."""
  return ((mel - stats[0]) / stats[1])[..., None].astype(np.float32)


@functools.cache
def clips(
  seed: int, split: str, train_per_class: int, eval_per_class: int, stats: tuple[float, float]
) -> dict:
  """Model-ready arrays of a split ('train' or 'eval'): 'image', 'audio', 'video', 'label';
  the log-mel normalised by `stats` (mean, std)."""
  if split not in ('train', 'eval'):
    raise ValueError(f"clips: split={split!r}; expected 'train' or 'eval'")
  number, per_class = (0, train_per_class) if split == 'train' else (1, eval_per_class)
  raw = _raw_clips(seed, number, per_class)
  video = normalise_frames(raw['video'])
  return {
    'image': video[:, 0],
    'audio': normalise_log_mel(raw['log_mel'], stats),
    'video': video,
    'label': raw['label'],
  }


def _clip_split(config, split: str) -> dict:
  s = _section(config)
  stats = (float(config.audio.mean), float(config.audio.std))
  return clips(s['seed'], split, s['train_clips_per_class'], s['eval_clips_per_class'], stats)


# -- pairs of the untrimmed training videos --------------------------------------------------


@functools.cache
def _jax_log_mel():
  import jax  # noqa: PLC0415 - only this dataset computes many log-mels at once
  import jax.numpy as jnp  # noqa: PLC0415

  return jax.jit(functools.partial(log_mel, xp=jnp))


def pair_indices(seed: int, video_index: int, num_pairs: int, per_video: int) -> np.ndarray:
  """The sorted time-stamp indices of video `video_index`'s pairs in `synthetic_ltl_pairs`."""
  if not 0 < per_video <= num_pairs:
    raise ValueError(f'ltl_data.pairs_per_video={per_video}; expected 1..{num_pairs}')
  rng = np.random.default_rng([seed, 78, video_index])
  return np.sort(rng.choice(num_pairs, per_video, replace=False))


@functools.cache
def _raw_pairs(seed: int, per_class: int, per_video: int) -> dict[str, np.ndarray]:
  """uint8 frames, raw log-mel (on jax.numpy, in chunks: 0.3 s per 40 pairs on numpy), video
  label and whether the pair lies in the action segment, of every training video's pairs."""
  frames, samples, labels, inside = [], [], [], []
  times = su.pair_times()
  for index, (name, video_seed) in enumerate(su.video_list('train', per_class, seed)):
    video = su.video(name, video_seed)
    keep = pair_indices(seed, index, len(times), per_video)
    image, audio = su.pair_media(video)
    first, end = su.segment_pairs(video.segment_start_s, video.segment_end_s, times)
    frames.append(image[keep])
    samples.append(audio[keep])
    labels.append(np.full(per_video, video.label, np.int32))
    inside.append((keep >= first) & (keep < end))
  samples = np.concatenate(samples)
  chunk = 64 * per_video
  mel = [np.asarray(_jax_log_mel()(samples[i : i + chunk])) for i in range(0, len(samples), chunk)]
  return {
    'image': np.concatenate(frames),
    'log_mel': np.concatenate(mel),
    'label': np.concatenate(labels),
    'in_segment': np.concatenate(inside),
  }


@functools.cache
def video_pairs(seed: int, per_class: int, per_video: int, stats: tuple[float, float]) -> dict:
  """Model-ready 'image', 'audio' and 'label' (the video's) of the training videos' pairs,
  plus 'in_segment' (bool, for diagnostics); the log-mel normalised by `stats`."""
  raw = _raw_pairs(seed, per_class, per_video)
  return {
    'image': normalise_frames(raw['image']),
    'audio': normalise_log_mel(raw['log_mel'], stats),
    'label': raw['label'],
    'in_segment': raw['in_segment'],
  }


def _train_split(config) -> dict:
  """The training examples of a clip-level dataset (trimmed clips or the videos' pairs)."""
  if config.input.dataset == CLIPS:
    return _clip_split(config, 'train')
  s = _section(config)
  stats = (float(config.audio.mean), float(config.audio.std))
  pairs = video_pairs(s['seed'], s['train_videos_per_class'], s['pairs_per_video'], stats)
  keys = ('image', 'audio', 'label')
  if not s['with_clips']:
    return {k: pairs[k] for k in keys}
  clip_pairs = _clip_split(config, 'train')
  return {k: np.concatenate([pairs[k], clip_pairs[k]]) for k in keys}


# -- feature banks ----------------------------------------------------------------------------


def _bank_path(config, split: str) -> str:
  directory = config.skim.get('banks_dir', '')
  if not directory:
    raise ValueError(
      f'input.dataset={BANKS!r} needs config.skim.banks_dir (the folder of '
      "tools.extract_preview_features' train.npz and val.npz)"
    )
  return f'{directory}/{split}.npz'


@functools.cache
def _banks(path: str):
  from avsf_jax.input import feature_banks  # noqa: PLC0415

  return feature_banks.load_banks(path)


def bank_split(config, split: str) -> dict:
  """The banks of 'train' or 'val' as `feature_banks.load_banks` returns them."""
  return _banks(_bank_path(config, split))


def num_picks(model_config) -> int:
  """How many pairs a skimming model picks: `num_steps` (Skimming), `num_picks`
  (NonRecurrentSkimming); 1 for the LSTM over every pair (its videos only need one)."""
  for field in ('num_steps', 'num_picks'):
    if field in model_config:
      return int(model_config[field])
  return 1


def bank_buckets(skim) -> tuple[int, ...]:
  """The padded lengths a bank batch may take: `skim.length` (training crops fit it) and the
  longer `skim.buckets` for whole validation videos (one compile per length used)."""
  return tuple(sorted({int(skim.length), *(int(b) for b in skim.get('buckets', ()))}))


def _bank_batch(config, data: dict, index: np.ndarray, rng: np.random.Generator | None) -> dict:
  from avsf_jax.tasks import skimming  # noqa: PLC0415 - the batching rule lives with the task

  skim = config.skim
  videos = [(data['image'][i], data['audio'][i]) for i in index]
  kwargs = {}
  if rng is not None:
    kwargs = {'max_len': int(rng.integers(skim.min_len, skim.max_len + 1)), 'rng': rng}
  batch = skimming.make_batch(
    videos,
    data['labels'][index],
    num_steps=num_picks(config.model),
    buckets=bank_buckets(skim),
    **kwargs,
  )
  if 'segments' in data:
    batch['segment'] = np.asarray(data['segments'], np.int32)[index] - batch['offset'][:, None]
  batch['video_index'] = index.astype(np.int32)
  return batch


# -- the data_source interface ----------------------------------------------------------------


def dataset_info(config: ml_collections.ConfigDict) -> info_lib.DatasetInfo:
  names = tuple(su.CLASS_NAMES)
  if config.input.dataset in (CLIPS, PAIRS):
    s = _section(config)
    clips_total = s['train_clips_per_class'] * len(names)
    train = clips_total
    if config.input.dataset == PAIRS:
      train = s['train_videos_per_class'] * len(names) * s['pairs_per_video']
      train += clips_total if s['with_clips'] else 0
    return info_lib.DatasetInfo(
      num_train_examples=train,
      num_eval_examples=s['eval_clips_per_class'] * len(names),
      num_classes=len(names),
      class_names=names,
      multi_label=False,
    )
  if config.input.dataset == BANKS:
    return info_lib.DatasetInfo(
      num_train_examples=len(bank_split(config, 'train')['labels']),
      num_eval_examples=len(bank_split(config, 'val')['labels']),
      num_classes=len(names),
      class_names=names,
      multi_label=False,
    )
  raise ValueError(f'ltl_data: input.dataset={config.input.dataset!r}; expected one of {DATASETS}')


def make_train_iterator(
  config: ml_collections.ConfigDict,
  *,
  seed: int,
  start_step: int = 0,
  process_index: int = 0,
  process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Endless batches; batch `s` is a function of (seed, s): an epoch-wise shuffle."""
  b = in_memory.process_share(config, 'batch_size', process_count)
  dataset = config.input.dataset
  clip_level = dataset in (CLIPS, PAIRS)
  data = _train_split(config) if clip_level else bank_split(config, 'train')
  n = len(data['label'] if clip_level else data['labels'])
  step = start_step
  while True:
    first = step * config.input.batch_size
    positions = first + process_index * b + np.arange(b)
    index = np.empty(b, np.int64)
    for epoch in np.unique(positions // n):
      order = in_memory.example_rng(seed, 0, int(epoch)).permutation(n)
      here = positions // n == epoch
      index[here] = order[positions[here] % n]
    if clip_level:
      batch = {k: v[index] for k, v in data.items()}
    else:
      batch = _bank_batch(config, data, index, in_memory.example_rng(seed, 1, step, process_index))
    yield batch
    step += 1


def make_eval_iterator(
  config: ml_collections.ConfigDict,
  *,
  multi_view: bool = False,
  process_index: int = 0,
  process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """The held-out split once, padded to whole batches ('_mask' 0 on padding); one view."""
  del multi_view  # one clip or one bank per example
  global_batch = config.input.eval_batch_size
  b = in_memory.process_share(config, 'eval_batch_size', process_count)
  clip_level = config.input.dataset in (CLIPS, PAIRS)
  data = _clip_split(config, 'eval') if clip_level else bank_split(config, 'val')
  n = len(data['label'] if clip_level else data['labels'])
  for first in range(0, n, global_batch):
    index = first + process_index * b + np.arange(b)
    mask = (index < n).astype(np.float32)
    index = np.minimum(index, n - 1)
    if clip_level:
      batch = {k: v[index] for k, v in data.items()}
      batch['video_index'] = index.astype(np.int32)
    else:
      batch = _bank_batch(config, data, index, None)
      batch['start_index'] = (
        in_memory.example_rng(config.seed, 2).integers(0, 2**31, n)[index] % batch['length']
      )
      batch['start_index'] = batch['start_index'].astype(np.int32)
    batch['_mask'] = mask
    yield batch
