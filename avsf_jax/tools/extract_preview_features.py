r"""Feature banks for IMGAUD-SKIMMING: z^I, z^A and Psi of every image-audio pair of every video.

  python -m avsf_jax.tools.extract_preview_features --student_export=DIR --out=BANKS \
      [--hop_s=0.5] [--splits=train,val] [--train_per_class=40 --val_per_class=10] \
      [--process_index=0 --process_count=1]

Videos are `synthetic_untrimmed`'s, generated in memory from the same seeds as its `generate`
(so they equal the written files). A pair is the frame at a time stamp (every `--hop_s`) and the
next 1 s of audio as the student's 101 x 40 log-mel (`input.ltl_data`: the training clips'
normalisation, read from the export's `preprocessing.audio_mean/std` when present). The student is rebuilt from the export's `model_config` (`models.ltl_models`)
and its variables; its aux outputs are the banks.

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
      "'imgaud' student export (clip_finetune or tools.ltl_demo.write_student_export)"
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


def extract_split(args, split: str, per_class: int, features) -> str | None:
  """Writes this process's parts of a split; merges them when all exist. Returns the merged
  file's path once written."""
  parts = os.path.join(args.out, 'parts', split)
  os.makedirs(parts, exist_ok=True)
  videos = su.video_list(split, per_class, args.seed)
  times = su.pair_times(args.duration_s, args.hop_s)
  for index, (name, seed) in enumerate(videos):
    path = os.path.join(parts, f'{index:05d}.npz')
    if index % args.process_count != args.process_index or os.path.exists(path):
      continue
    video = su.video(name, seed, args.duration_s)
    aux = jax.device_get(features(pair_media_inputs(video, args.hop_s)))
    segment = su.segment_pairs(video.segment_start_s, video.segment_end_s, times)
    _write_atomic(
      path,
      image=aux['image'],
      audio=aux['audio'],
      fused=aux['fused'],
      label=np.int32(video.label),
      segment=np.asarray(segment, np.int32),
    )
  paths = [os.path.join(parts, f'{i:05d}.npz') for i in range(len(videos))]
  if not all(os.path.exists(p) for p in paths):
    return None
  data = [dict(np.load(p)) for p in paths]
  out = os.path.join(args.out, f'{split}.npz')
  feature_banks.save_banks(
    out,
    [d['image'] for d in data],
    [d['audio'] for d in data],
    [int(d['label']) for d in data],
    segments=[tuple(d['segment']) for d in data],
    fused=[d['fused'] for d in data],
  )
  return out


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
  per_class = {'train': args.train_per_class, 'val': args.val_per_class}
  written = {}
  for split in args.splits.split(','):
    if split not in per_class:
      parser.error(f'--splits: unknown split {split!r}; known: train, val')
    written[split] = extract_split(args, split, per_class[split], features)
  print(json.dumps(written))
  return written


if __name__ == '__main__':
  console.guard('extract_preview_features', main)()
