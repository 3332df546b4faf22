r"""Feature banks for IMGAUD-SKIMMING: z^I, z^A and Psi of every image-audio pair of every video.

  python -m avsf_jax.tools.extract_preview_features --student_export=DIR --out=BANKS \
      [--hop_s=0.5] [--splits=train,val] [--train_per_class=40 --val_per_class=10] \
      [--process_index=0 --process_count=1]
  python -m avsf_jax.tools.extract_preview_features --student_export=DIR --out=BANKS \
      --dataset=activitynet [--data_dir=DIR] [--hop_frames=16] [--image_size=0] \
      [--train_split=train --eval_split=validation] [--process_index=0 --process_count=1]

Without `--dataset`, the videos are `synthetic_untrimmed`'s, generated in memory from the same
seeds as its `generate` (so they equal the written files), with a pair every `--hop_s`. With
`--dataset`, they are the videos of a prepared dataset (`tools.prepare_dataset`: ActivityNet,
UCF-101, Kinetics-Sounds, ...), with a pair every `--hop_frames` frames of the stored video
(spec 3.1 [assumption]: 16, about 0.53 s at 30 fps) and the frame resized (short side) and
centre-cropped to the export's `preprocessing.image_size`; `--train_split` / `--eval_split`
become train.npz / val.npz, and with annotated segments (ActivityNet) each video's 'segment' is
the longest one of its label. A pair is the frame at a time stamp and the next 1 s of audio
(silent past the end) as the student's 101 x 40 log-mel (`input.ltl_data`: normalised by the
export's `preprocessing.audio_mean/std` when present, else the demo clips' statistics). The
student is rebuilt from the export's `model_config` (`models.ltl_models`) and its variables; its
aux outputs are the banks.

Resumable and sharded: each video is written to BANKS/parts/<split>/<index>.npz (atomically)
by the process with index % process_count == process_index, and skipped when present; when
every part of a split exists, the process that finishes last writes BANKS/<split>.npz
(`feature_banks.save_banks`, with 'segments' in pairs and 'fused'), which `input.ltl_data`
streams (`input.dataset='ltl_banks'`, `skim.banks_dir=BANKS`).
"""

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from avsf_jax import console, export
from avsf_jax.input import feature_banks, ltl_data
from avsf_jax.input.prepare import synthetic_untrimmed as su
from avsf_jax.models import ltl_models


def pair_inputs(video: su.Video, hop_s: float, stats) -> dict[str, np.ndarray]:
  """The student's inputs for every pair of a video: 'image' (N, H, W, 3), 'audio' (N, 101,
  40, 1)."""
  frames, audio = su.pair_media(video, hop_s)
  return {
    'image': ltl_data.normalise_frames(frames),
    'audio': ltl_data.normalise_log_mel(ltl_data.log_mel(audio), stats),
  }


def pair_media_inputs(video: su.Video, hop_s: float) -> dict[str, np.ndarray]:
  """`pair_inputs` before the log-mel: 'image' normalised, 'samples' (N, 16000) raw audio."""
  frames, audio = su.pair_media(video, hop_s)
  return {'image': ltl_data.normalise_frames(frames), 'samples': audio.astype(np.float32)}


def load_student(export_dir: str, stats=None):
  """(jitted features fn (inputs -> aux), the export's metadata) of a student export.

  With `stats` (the log-mel's mean, std) the function takes `pair_media_inputs`' raw
  'samples' instead of 'audio' and computes the normalised log-mel inside the jitted call
  (`ltl_data.log_mel` on jax.numpy), which is what the extraction does.
  """
  exported = export.load(export_dir)
  config = dict(exported.metadata['model_config'])
  if config.get('name') != 'imgaud':
    raise ValueError(
      f'{export_dir}: model_config.name={config.get("name")!r}; expected an '
      "'imgaud' student export (of a clip_finetune or distillation workdir)"
    )
  model = ltl_models.build(config, f'{export_dir} model_config')
  variables = exported.variables

  @jax.jit
  def features(inputs):
    if stats is not None:
      mel = ltl_data.log_mel(inputs['samples'], xp=jnp)
      inputs = {'image': inputs['image'], 'audio': ltl_data.normalise_log_mel(mel, stats)}
    _, aux = model.apply(variables, inputs, train=False)
    return aux

  return features, exported.metadata


def _write_atomic(path: str, **arrays) -> None:
  tmp = f'{path}.tmp{os.getpid()}.npz'
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def _extract_parts(args, split: str, count: int, video_banks) -> str | None:
  """Writes this process's parts of a split (BANKS/parts/<split>/) (`video_banks(index)`: the arrays of one video);
  merges them when all exist. Returns the merged file's path once written."""
  parts = os.path.join(args.out, 'parts', split)
  os.makedirs(parts, exist_ok=True)
  for index in range(count):
    path = os.path.join(parts, f'{index:05d}.npz')
    if index % args.process_count != args.process_index or os.path.exists(path):
      continue
    _write_atomic(path, **video_banks(index))
  paths = [os.path.join(parts, f'{i:05d}.npz') for i in range(count)]
  if not all(os.path.exists(p) for p in paths):
    return None
  data = [dict(np.load(p)) for p in paths]
  out = os.path.join(args.out, f'{split}.npz')
  with_segments = all('segment' in d for d in data)
  feature_banks.save_banks(
    out,
    [d['image'] for d in data],
    [d['audio'] for d in data],
    [int(d['label']) for d in data],
    segments=[tuple(d['segment']) for d in data] if with_segments else None,
    fused=[d['fused'] for d in data],
  )
  return out


def extract_split(args, split: str, per_class: int, features) -> str | None:
  """The banks of `synthetic_untrimmed`'s videos of `split`."""
  videos = su.video_list(split, per_class, args.seed)
  times = su.pair_times(args.duration_s, args.hop_s)

  def video_banks(index):
    name, seed = videos[index]
    video = su.video(name, seed, args.duration_s)
    aux = jax.device_get(features(pair_media_inputs(video, args.hop_s)))
    segment = su.segment_pairs(video.segment_start_s, video.segment_end_s, times)
    return {
      'image': aux['image'],
      'audio': aux['audio'],
      'fused': aux['fused'],
      'label': np.int32(video.label),
      'segment': np.asarray(segment, np.int32),
    }

  return _extract_parts(args, split, len(videos), video_banks)


# -- prepared datasets (TFDS builders: ActivityNet, UCF-101, Kinetics, ...) ------------------


def pair_frame_indices(num_frames: int, hop_frames: int) -> np.ndarray:
  """The frames of a prepared video's time stamps: one every `hop_frames` frames from frame 0
  (spec 3.1 [assumption]: one pair per 16-frame hop, about 0.53 s at 30 fps)."""
  if hop_frames < 1:
    raise ValueError(f'--hop_frames={hop_frames}; expected >= 1')
  return np.arange(0, max(int(num_frames), 1), hop_frames)


def segment_pair_range(times: np.ndarray, start_s: float, end_s: float) -> tuple[int, int]:
  """(first, end) indices of the time stamps in [start_s, end_s)."""
  inside = np.flatnonzero((times >= start_s) & (times < end_s))
  return (int(inside[0]), int(inside[-1]) + 1) if len(inside) else (0, 0)


def prepared_pair_media(example: dict, jpegs: np.ndarray, frame_index: np.ndarray, image_size: int):
  """A prepared video's pairs: 'image' (N, S, S, 3) normalised (short side to S, centre crop)
  and 'samples' (N, 16000): the 1 s of 16-kHz audio from each time stamp, silent past the end
  and for a video without audio."""
  import tensorflow as tf  # noqa: PLC0415 - only prepared datasets need it

  from avsf_jax.input import ops  # noqa: PLC0415

  images = tf.stack([tf.io.decode_jpeg(j, channels=3) for j in jpegs])
  crops = ops.spatial_crops(images, short_side=image_size, crop_size=image_size, num_crops=1)[0]
  frames = np.clip(np.round(crops.numpy()), 0, 255).astype(np.uint8)
  audio = np.asarray(example['audio'], np.float32) / 32768.0
  if not bool(example['has_audio']):
    audio = np.zeros(0, np.float32)
  starts = np.round(frame_index / float(example['fps']) * ltl_data.SAMPLE_RATE).astype(np.int64)
  padded = np.concatenate([audio, np.zeros(ltl_data.SEGMENT_SAMPLES, np.float32)])
  samples = np.stack(
    [padded[min(s, len(audio)) : min(s, len(audio)) + ltl_data.SEGMENT_SAMPLES] for s in starts]
  )
  return {'image': ltl_data.normalise_frames(frames), 'samples': samples}


def extract_prepared_split(
  args, builder, split: str, features, image_size: int, name: str
) -> str | None:
  """The banks of every video of a prepared dataset's split, written as `name`.npz; with
  annotated segments (ActivityNet), each video's 'segment' is the longest one of its label, in
  pairs."""
  from array_record.python import array_record_data_source  # noqa: PLC0415

  from avsf_jax.input.prepare import builders  # noqa: PLC0415

  if split not in builder.info.splits:
    raise ValueError(f'{builder.data_dir}: no split {split!r}; has {sorted(builder.info.splits)}')
  examples = builder.as_data_source(split)
  frame_store = array_record_data_source.ArrayRecordDataSource(
    [builders.frames_path(builder.data_dir, split)]
  )

  def video_banks(index):
    example = examples[index]
    frame_index = pair_frame_indices(int(example['num_frames']), args.hop_frames)
    jpegs = frame_store.__getitems__([int(example['frame_offset']) + int(i) for i in frame_index])
    inputs = prepared_pair_media(example, np.asarray(jpegs, object), frame_index, image_size)
    aux = jax.device_get(features(inputs))
    out = {
      'image': aux['image'],
      'audio': aux['audio'],
      'fused': aux['fused'],
      'label': np.int32(example['label']),
    }
    if 'segments' in example:
      times = frame_index / float(example['fps'])
      seg = example['segments']
      own = [
        (float(e) - float(s), float(s), float(e))
        for label, s, e in zip(seg['label'], seg['start'], seg['end'])
        if int(label) == int(example['label'])
      ]
      _, start_s, end_s = max(own) if own else (0.0, 0.0, 0.0)
      out['segment'] = np.asarray(segment_pair_range(times, start_s, end_s), np.int32)
    return out

  return _extract_parts(args, name, len(examples), video_banks)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--student_export', required=True)
  parser.add_argument('--out', required=True, help='folder of the banks')
  parser.add_argument('--hop_s', type=float, default=su.PAIR_HOP_S)
  parser.add_argument('--duration_s', type=float, default=su.DURATION_S)
  parser.add_argument('--splits', default='train,val')
  parser.add_argument('--train_per_class', type=int, default=su.SPLITS['train'])
  parser.add_argument('--val_per_class', type=int, default=su.SPLITS['val'])
  parser.add_argument('--seed', type=int, default=0, help='synthetic_untrimmed seed')
  parser.add_argument(
    '--data_seed',
    type=int,
    default=ltl_data.LTL_DATA['seed'],
    help='ltl_data seed of the clips whose log-mel statistics normalise audio',
  )
  parser.add_argument(
    '--dataset',
    default='',
    help='a prepared dataset (tools.prepare_dataset: activitynet, ucf101, kinetics_sounds, ...) '
    'instead of synthetic_untrimmed',
  )
  parser.add_argument('--data_dir', default='', help='its root (default: $AVSF_DATA_DIR)')
  parser.add_argument('--frame_short_side', type=int, default=320, help='its stored frames')
  parser.add_argument('--hop_frames', type=int, default=16, help='prepared: frames per pair')
  parser.add_argument(
    '--image_size', type=int, default=0, help="prepared: 0 = the export's preprocessing.image_size"
  )
  parser.add_argument('--train_split', default='train', help='prepared: written as train.npz')
  parser.add_argument('--eval_split', default='validation', help='prepared: written as val.npz')
  parser.add_argument('--process_index', type=int, default=0)
  parser.add_argument('--process_count', type=int, default=1)
  console.add_verbose_argument(parser)
  args = parser.parse_args(argv)
  if not 0 <= args.process_index < args.process_count:
    parser.error(f'--process_index={args.process_index} not in [0, {args.process_count})')
  pre = export.load(args.student_export).metadata.get('preprocessing', {})
  if 'audio_mean' in pre:  # the statistics the student was trained with
    stats = (float(pre['audio_mean']), float(pre['audio_std']))
  else:
    stats = ltl_data.audio_statistics(args.data_seed)
  features, _ = load_student(args.student_export, stats)
  written = {}
  if args.dataset:
    image_size = args.image_size or int(pre.get('image_size', 0))
    if image_size <= 0:
      parser.error(f'--image_size: {args.student_export} has no preprocessing.image_size')
    builder = _prepared_builder(args)
    for name, split in (('train', args.train_split), ('val', args.eval_split)):
      written[name] = extract_prepared_split(args, builder, split, features, image_size, name)
  else:
    per_class = {'train': args.train_per_class, 'val': args.val_per_class}
    for split in args.splits.split(','):
      if split not in per_class:
        parser.error(f'--splits: unknown split {split!r}; known: train, val')
      written[split] = extract_split(args, split, per_class[split], features)
  print(json.dumps(written))
  return written


def _prepared_builder(args):
  from avsf_jax.input import pipeline  # noqa: PLC0415 - TensorFlow, for prepared datasets only
  from avsf_jax.input.prepare import builders  # noqa: PLC0415

  pipeline.hide_accelerators_from_tf()
  data_dir = args.data_dir or pipeline.default_data_dir()
  builder = builders.get_builder(args.dataset, data_dir, short_side=args.frame_short_side)
  if not builders.is_prepared(builder):
    raise FileNotFoundError(
      f'{builder.data_dir}: dataset {args.dataset!r} is not prepared; run python -m '
      f'avsf_jax.tools.prepare_dataset --dataset={args.dataset} --manual_dir=DIR '
      f'--data_dir={data_dir}'
    )
  return builder


if __name__ == '__main__':
  console.guard('extract_preview_features', main)()
