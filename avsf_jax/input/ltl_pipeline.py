"""tf.data clips of Listen to Look's IMGAUD2VID jobs over the prepared video datasets.

The paper variants of `configs/listen_to_look.py` (teacher, distillation*, finetune,
undistilled*) read their clips here (`experiment.data_source` dispatches on
`config.input.source == 'ltl_clips'`) from any dataset `pipeline.get_builder` prepares (ucf101,
activitynet, kinetics400 / kinetics_sounds, synthetic_av, ...). Per example (spec §2.1-2.2):

  'video'  the teacher's clip: `input.num_frames` frames `input.tau` source frames apart at
           `input.target_fps` (the spec's `teacher_frame_stride`, [assumption] 2 at 30 fps:
           16 frames span 1.07 s), `input.crop_size` square, normalised by `input.mean/std`;
  'image'  the clip's starting frame (the same decoded frame, the same crop and flip as the
           clip's first frame), normalised by `ltl_clips.image_mean/image_std` (ImageNet's:
           the student's ResNet-18);
  'audio'  the 101 x 40 preview log-mel (`preview_audio`) of 1 s anchored at the clip start
           (`ltl_clips.audio_anchor`, 'start' or 'centre' on the clip), normalised by
           `audio.mean/std`, (101, 40, 1); zeros for a video without audio (spec §5
           [assumption]), with 'has_audio' 0;
  'label'  the video's label; at evaluation also 'video_index' and the padding '_mask'.

Only the keys in `ltl_clips.keys` are produced, and only they cost decoding: without 'video'
only the clip's first JPEG frame is read and decoded; without 'audio' no log-mel is computed.

Training: a uniformly random clip start, short-side scale jitter (`input.jitter_scales`) +
random `input.crop_size` crop + flip (`ops.sample_train_clip`, `ops.decode_train_frames`), the
stream a pure function of (seed, step) as in `pipeline`. Evaluation [assumption: spec §2.4
gives no protocol]: one clip per video, centred in time, short side to `input.test_short_side`
and the centre `input.test_crop_size` square (which must equal `input.crop_size`: the models'
input spec); `input.num_temporal_views` and `num_spatial_views` must be 1, and `multi_view`
changes nothing. Reading, sampling, decoding, batching and padding are
`pipeline`'s and `ops`' (this module only supplies the per-example functions).
"""

from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from avsf_jax.input import info as info_lib
from avsf_jax.input import ops, pipeline, preview_audio

SOURCE = 'ltl_clips'  # config.input.source
KEYS = ('video', 'image', 'audio')
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Defaults of the `ltl_clips` config section.
LTL_CLIPS = {
  'keys': KEYS,  # the batch keys to produce (the model's inputs)
  'image_mean': IMAGENET_MEAN,  # the student's pixel normalisation of 'image'
  'image_std': IMAGENET_STD,
  'audio_anchor': 'start',  # spec §2.2 audio_segment_anchor: 'start' or 'centre'
}


def section(config) -> dict:
  """The `ltl_clips` section over its defaults, checked against the rest of the config."""
  given = dict(config.get('ltl_clips') or {})
  unknown = sorted(set(given) - set(LTL_CLIPS))
  if unknown:
    raise ValueError(f'config.ltl_clips has unknown fields {unknown}; known: {sorted(LTL_CLIPS)}')
  s = {**LTL_CLIPS, **given}
  keys = tuple(s['keys'])
  bad = sorted(set(keys) - set(KEYS))
  if bad or not keys:
    raise ValueError(
      f'config.ltl_clips.keys={keys}: unknown {bad}; expected a non-empty subset of {KEYS}'
    )
  s['keys'] = keys
  if s['audio_anchor'] not in preview_audio.ANCHORS:
    raise ValueError(
      f'config.ltl_clips.audio_anchor={s["audio_anchor"]!r}; one of {preview_audio.ANCHORS}'
    )
  inp = config.input
  if ('video' in keys or 'image' in keys) and inp.test_crop_size != inp.crop_size:
    raise ValueError(
      f'config.input.test_crop_size={inp.test_crop_size} but input.crop_size={inp.crop_size}: '
      "the clip models' inputs ('video', 'image') have one size, input.crop_size "
      '(tasks.clip_finetune.clip_inputs)'
    )
  views = (inp.num_temporal_views, inp.num_spatial_views)
  if views != (1, 1):
    raise ValueError(
      f'config.input.num_temporal_views={views[0]}, input.num_spatial_views={views[1]}: the '
      'Listen to Look clips are evaluated on one centre clip per video; set both to 1'
    )
  if 'audio' in keys:
    front = audio_config(config, s)
    if (front.num_frames, front.num_mel_bins) != (
      config.audio.num_frames,
      config.audio.num_mel_bins,
    ):
      raise ValueError(
        f'config.audio.num_frames={config.audio.num_frames}, '
        f'audio.num_mel_bins={config.audio.num_mel_bins}: the preview log-mel of 1 s at '
        f'{front.sample_rate} Hz is {front.num_frames} x {front.num_mel_bins} '
        '(preview_audio.PreviewAudioConfig)'
      )
  return s


def audio_config(config, s: dict) -> preview_audio.PreviewAudioConfig:
  """The preview front end: `PreviewAudioConfig`'s STFT (the paper's 101 x 40 of 1 s), with
  `audio.sample_rate`, `audio.num_mel_bins`, `audio.mean/std` and the section's anchor."""
  return preview_audio.PreviewAudioConfig(
    sample_rate=int(config.audio.sample_rate),
    num_mel_bins=int(config.audio.num_mel_bins),
    mean=float(config.audio.mean),
    std=float(config.audio.std),
    anchor=s['audio_anchor'],
  )


def _geometry(config) -> dict:
  inp = config.input
  return {'num_frames': inp.num_frames, 'tau': inp.tau, 'alpha': 1, 'target_fps': inp.target_fps}


def _pixels(frames, config, s: dict) -> dict:
  """'video' and/or 'image' from the clip's frames (n, H, W, 3) in [0, 255]; frame 0 starts it."""
  out = {}
  if 'video' in s['keys']:
    out['video'] = ops.normalize_video(frames, config.input.mean, config.input.std)
  if 'image' in s['keys']:
    out['image'] = ops.normalize_video(frames[0], s['image_mean'], s['image_std'])
  return out


def _audio(features, first_frame, config, s: dict) -> dict:
  """'audio' (the normalised preview log-mel of the clip starting at `first_frame`), 'has_audio'."""
  front = audio_config(config, s)
  inp = config.input
  time_stamp = tf.cast(first_frame, tf.float64) / tf.cast(features['fps'], tf.float64)
  start = preview_audio.segment_start(time_stamp, inp.num_frames * inp.tau / inp.target_fps, front)
  spectrogram = preview_audio.segment_log_mel(features['audio'], start, front)
  has_audio = tf.cast(features['has_audio'], tf.bool)
  return {
    'audio': tf.where(has_audio, spectrogram, tf.zeros_like(spectrogram)),
    'has_audio': tf.cast(has_audio, tf.float32),
  }


def train_example(features, seed, config, builder, reader) -> dict:
  """One training example (`pipeline.make_train_dataset`'s `example_fn`)."""
  s = section(config)
  inp = config.input
  features = ops.sample_train_clip(features, seed, **_geometry(config))
  index = features['fast_index']
  out = {}
  if 'video' in s['keys'] or 'image' in s['keys']:
    if 'video' not in s['keys']:
      index = index[:1]  # the student's image only: decode the first frame alone
    features['frames'] = reader.frames(features, index)
    features['frame_index'] = tf.range(tf.shape(index)[0])
    features = ops.decode_train_frames(
      features,
      seed,
      index_key='frame_index',
      jitter_scales=tuple(inp.jitter_scales),
      crop_size=inp.crop_size,
      flip=inp.flip,
    )
    out.update(_pixels(features['video'], config, s))
  if 'audio' in s['keys']:
    out.update(_audio(features, features['fast_index'][0], config, s))
  out.update(pipeline._labels(features, builder))
  return out


def eval_example(features, config, builder, reader, multi_view: bool) -> dict:
  """One evaluation example: the centre clip, centre crop (`pipeline.make_eval_dataset`'s)."""
  del multi_view  # one clip per video (module docstring)
  s = section(config)
  inp = config.input
  features = ops.sample_eval_clips(features, num_views=1, view_starts='spread', **_geometry(config))
  index = features['fast_index'][0]
  out = {}
  if 'video' in s['keys'] or 'image' in s['keys']:
    if 'video' not in s['keys']:
      index = index[:1]
    jpegs = reader.frames(features, index)
    images = ops.decode_frames(jpegs, tf.range(tf.shape(index)[0]))
    crops = ops.spatial_crops(
      images, short_side=inp.test_short_side, crop_size=inp.test_crop_size, num_crops=1
    )
    out.update(_pixels(tf.round(crops[0]), config, s))
  if 'audio' in s['keys']:
    out.update(_audio(features, features['fast_index'][0, 0], config, s))
  out.update(pipeline._labels(features, builder))
  return out


# -- the data_source interface ----------------------------------------------------------------


def dataset_info(config) -> info_lib.DatasetInfo:
  section(config)  # a bad section stops the job before the dataset is opened
  return pipeline.dataset_info(config)


def make_train_iterator(
  config, *, seed: int, start_step: int = 0, process_index: int = 0, process_count: int = 1
) -> Iterator[dict[str, np.ndarray]]:
  """Endless batches; batch `s` depends only on (seed, s) (`pipeline.make_train_dataset`)."""
  section(config)
  return pipeline.make_train_dataset(
    config,
    seed=seed,
    start_step=start_step,
    process_index=process_index,
    process_count=process_count,
    example_fn=train_example,
  ).as_numpy_iterator()


def make_eval_iterator(
  config,
  *,
  split: str | None = None,
  multi_view: bool = True,
  process_index: int = 0,
  process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """The eval split once, padded to whole batches ('_mask' 0 on padding)."""
  section(config)
  return pipeline.make_eval_dataset(
    config,
    split=split,
    multi_view=multi_view,
    process_index=process_index,
    process_count=process_count,
    example_fn=eval_example,
  ).as_numpy_iterator()


def audio_statistics(config, num_batches: int, seed: int = 0) -> tuple[float, float]:
  """The mean and std of the unnormalised preview log-mel over `num_batches` training batches
  of clips with audio (spec §2.2: "computed on the training set"; set them as `audio.mean` /
  `audio.std`). Only the audio is produced: no frame is decoded."""
  config = config.copy_and_resolve_references()
  config.audio.mean, config.audio.std = 0.0, 1.0
  config.ltl_clips = {**dict(config.get('ltl_clips') or {}), 'keys': ('audio',)}
  total, squares, count = 0.0, 0.0, 0
  batches = make_train_iterator(config, seed=seed)
  for _ in range(num_batches):
    batch = next(batches)
    values = np.asarray(batch['audio'], np.float64)[np.asarray(batch['has_audio']) > 0]
    total, squares, count = total + values.sum(), squares + (values**2).sum(), count + values.size
  if not count:
    raise ValueError(f'{config.input.dataset}: no clip with audio in {num_batches} batches')
  mean = total / count
  return float(mean), float(np.sqrt(max(squares / count - mean**2, 0.0)))
