"""Shared fixtures of the data tests: small mp4 files generated with PyAV, a prepared dataset."""

import csv

import numpy as np
import pytest

from tests.input.media_helpers import write_clip

KINETICS_CLASSES = ('abseiling', 'air drumming', 'applauding')


@pytest.fixture(scope='session')
def kinetics_dir(tmp_path_factory):
  """A Kinetics-style folder: 9 good train clips, 3 val clips, and every kind of bad input."""
  root = tmp_path_factory.mktemp('kinetics_raw')
  rows = {'train': [], 'validate': []}
  for split, count in (('train', 9), ('validate', 3)):
    for i in range(count):
      label = KINETICS_CLASSES[i % 3]
      vid = f'{split[:2]}vid{i:05d}x'
      folder = root / split / label
      folder.mkdir(parents=True, exist_ok=True)
      write_clip(str(folder / f'{vid}_{0:06d}_{3:06d}.mp4'), seed=i)
      rows[split].append((label, vid, 0, 3))
  bad = root / 'bad'
  bad.mkdir()
  (bad / 'zerolenxxxx.mp4').write_bytes(b'')
  # Seeded: os.urandom's bytes now and then probe as some container (then 'no_video_stream').
  (bad / 'garbagexxxx.mp4').write_bytes(np.random.default_rng(0).bytes(5000))
  write_clip(str(bad / 'truncatexxx.mp4'), seed=1)
  data = (bad / 'truncatexxx.mp4').read_bytes()
  (bad / 'truncatexxx.mp4').write_bytes(data[: len(data) // 2])
  write_clip(str(bad / 'noaudioxxxx.mp4'), seed=2, audio=False)
  # An untrimmed video (named by id only): the CSV's [1, 2) s segment is cut out of it.
  write_clip(str(bad / 'untrimmedxx.mkv'), seed=3, seconds=4.0)
  rows['train'] += [
    ('applauding', 'zerolenxxxx', 0, 3),
    ('applauding', 'garbagexxxx', 0, 3),
    ('applauding', 'truncatexxx', 0, 3),
    ('applauding', 'missingxxxx', 0, 3),
    ('applauding', 'noaudioxxxx', 0, 3),
    ('applauding', 'untrimmedxx', 1, 2),
    ('not a kinetics class', 'trvid00000x', 0, 3),
  ]
  for split, items in rows.items():
    with open(root / f'{split}.csv', 'w', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(('label', 'youtube_id', 'time_start', 'time_end', 'split'))
      writer.writerows([(*r, split) for r in items])
  return str(root)


@pytest.fixture(scope='session')
def kinetics_prepared(kinetics_dir, tmp_path_factory):
  """The folder above prepared as `kinetics400`; returns (data_dir, builder)."""
  from avsf_jax.input.prepare import builders

  data_dir = str(tmp_path_factory.mktemp('kinetics_data'))
  builder = builders.get_builder('kinetics400', data_dir, num_workers=2)
  builders.build(builder, kinetics_dir)
  return data_dir, builder
