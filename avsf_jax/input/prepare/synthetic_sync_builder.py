"""The TFDS builder of `synthetic_av_sync` (self-supervised spec 5.2): generated, then prepared
like Kinetics, with its three splits 'pretrain' (labels unused by the loss), 'train' and 'test'
(the linear probe's)."""

import concurrent.futures
import csv
import multiprocessing
import os
import sys

import tensorflow_datasets as tfds

from avsf_jax.input.prepare import annotations, builders
from avsf_jax.input.prepare import synthetic_av_sync as sync

SPLIT_FILES = {split: f'{split}.csv' for split in sync.SPLITS}
_GENERATOR_STAMP = f'synthetic_av_sync generator {sync.GENERATOR_VERSION}\n'


def sync_records(manual_dir: str) -> dict[str, list[dict]]:
  """Records of every split whose `<split>.csv` is present (Kinetics columns)."""
  videos = annotations.index_videos(manual_dir)
  splits = {}
  for split, filename in SPLIT_FILES.items():
    path = os.path.join(manual_dir, filename)
    if not os.path.exists(path):
      continue
    records = []
    with open(path, newline='') as f:
      for row in csv.DictReader(f):
        video_id = row['youtube_id']
        if row['label'] not in sync.CLASS_NAMES:
          raise ValueError(f'{path}: unknown class {row["label"]!r}; one of {sync.CLASS_NAMES}')
        video = videos.get(video_id)
        key = f'{video_id}_{int(row["time_start"]):06d}_{int(row["time_end"]):06d}'
        records.append(
          {
            'key': key,
            'video_id': video_id,
            'path': video[0] if video else None,
            'start': None,
            'end': None,
            'label': row['label'],
          }
        )
    splits[split] = records
  if not splits:
    raise FileNotFoundError(f'{manual_dir}: expected {sorted(SPLIT_FILES.values())}')
  return splits


class SyntheticAvSync(builders.VideoBuilder, skip_registration=True):
  """Generated as mp4 into manual_dir (if absent), then prepared like Kinetics."""

  name = 'synthetic_av_sync'
  VERSION = tfds.core.Version('1.2.0')
  RELEASE_NOTES = {
    **builders.VideoBuilder.RELEASE_NOTES,
    '1.2.0': f'Generator {sync.GENERATOR_VERSION}: event gaps are the dead time plus a gamma '
    f'variable of shape {sync.GAP_SHAPE:g} (an exponential before), so the rate attribute can '
    'be read from a clip (self-supervised spec 5.4 calibration).',
  }
  seed = 0
  clips_per_class = sync.SPLITS

  def class_names(self):
    return list(sync.CLASS_NAMES)

  def make_raw_files(self, manual_dir: str) -> None:
    """Generates the mp4s and CSVs unless this generator version's completion marker is there
    (files of another version, or a half-written folder, are generated again)."""
    marker = os.path.join(manual_dir, builders.RAW_COMPLETE)
    if builders.generated_by(marker, _GENERATOR_STAMP):
      return
    if any(os.path.exists(os.path.join(manual_dir, f)) for f in SPLIT_FILES.values()):
      print(f"synthetic_av_sync: {manual_dir} holds another generator's files", file=sys.stderr)
    print(f'synthetic_av_sync: generating mp4 files in {manual_dir}', file=sys.stderr)
    context = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(self.num_workers, mp_context=context) as pool:
      count = sync.generate(manual_dir, self.seed, pool, self.clips_per_class)
    builders.write_marker(marker, f'{count} clips\n{_GENERATOR_STAMP}')

  def _records(self, manual_dir):
    return sync_records(manual_dir)


builders.BUILDERS[SyntheticAvSync.name] = SyntheticAvSync  # `builders.get_builder` finds it
