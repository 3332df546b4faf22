"""Reads the annotation files of each dataset into records (no TensorFlow, no decoding).

A record is a plain dict: `key` (unique), `path` (None when the file is missing), `start` /
`end` (seconds into the file, None for a trimmed clip), and the label fields of its dataset.
Records whose video is missing are still returned so that the build can report them.
An annotation file that cannot be read (missing, denied, empty, binary) or holds a bad row (a
missing column, a value that is not a number) is a `storage.FileFault` naming the file, the
line and the fault.
"""

import csv
import io
import os
import re

from avsf_jax import storage

VIDEO_EXTENSIONS = ('.mp4', '.webm', '.mkv', '.avi', '.mov')
# `<youtube_id>_<start:06d>_<end:06d>` as the common Kinetics downloaders name trimmed clips.
_TRIMMED = re.compile(r'^(?P<id>.+)_(?P<start>\d{6})_(?P<end>\d{6})$')

KINETICS_SPLITS = {'train': 'train.csv', 'validation': 'validate.csv', 'test': 'test.csv'}


class _Rows:
  """The rows of a CSV file, as a context manager that turns a bad row into a FileFault
  naming the file and the line (`with _Rows(path) as rows: for row in rows: ...`)."""

  def __init__(self, path: str, what: str = 'annotation CSV', columns: tuple[str, ...] = ()):
    self.path = path
    self.line = 1
    self._reader = csv.DictReader(io.StringIO(storage.read_text(path, what), newline=''))
    missing = [c for c in columns if c not in (self._reader.fieldnames or ())]
    if missing:
      raise storage.FileFault(
        f'{path}: not a valid {what}: the header lacks {missing} (found {self._reader.fieldnames})'
      )

  def __enter__(self):
    return self

  def __iter__(self):
    for row in self._reader:
      self.line = self._reader.line_num
      yield row

  def __exit__(self, kind, error, traceback):
    if isinstance(error, KeyError):
      raise storage.FileFault(
        f'{self.path}: line {self.line}: no column {error} (columns: {self._reader.fieldnames})'
      ) from None
    if isinstance(error, ValueError | TypeError | AttributeError | IndexError) and not (
      isinstance(error, storage.FileFault)
    ):
      raise storage.FileFault(
        f'{self.path}: line {self.line}: bad value ({storage.first_line(error)})'
      ) from None
    return False


def index_videos(root: str) -> dict[str, tuple[str, bool]]:
  """Maps a video id to (path, is_trimmed) for every video file anywhere below `root`.

  A trimmed clip (`<id>_<start>_<end>.ext`) is preferred over an untrimmed `<id>.ext`.
  """
  found = {}
  for folder, _, files in os.walk(root):
    for name in sorted(files):
      stem, ext = os.path.splitext(name)
      if ext.lower() not in VIDEO_EXTENSIONS:
        continue
      match = _TRIMMED.match(stem)
      video_id, trimmed = (match['id'], True) if match else (stem, False)
      if video_id not in found or (trimmed and not found[video_id][1]):
        found[video_id] = (os.path.join(folder, name), trimmed)
  return found


def read_class_list(path: str) -> list[str]:
  text = storage.read_text(path, 'class-name file')
  return [line.strip() for line in text.splitlines() if line.strip()]


def kinetics_records(manual_dir: str, class_names: list[str]) -> dict[str, list[dict]]:
  """Records of every split whose CSV (`train.csv`, `validate.csv`, `test.csv`) is present.

  Rows whose label is not in `class_names` are left out (that is how Kinetics-Sounds is cut
  from Kinetics-400); rows without a label (an unlabelled test set) get label -1.
  """
  videos = index_videos(manual_dir)
  known = set(class_names)
  splits = {}
  for split, filename in KINETICS_SPLITS.items():
    path = os.path.join(manual_dir, filename)
    if not os.path.exists(path):
      continue
    records = []
    with _Rows(path, columns=('youtube_id', 'time_start', 'time_end')) as rows:
      for row in rows:
        label = (row.get('label') or '').strip()
        if label and label not in known:
          continue
        start, end = float(row['time_start']), float(row['time_end'])
        video_id = row['youtube_id']
        video = videos.get(video_id)
        key = f'{video_id}_{int(start):06d}_{int(end):06d}'
        records.append(
          {
            'key': key,
            'video_id': video_id,
            'path': video[0] if video else None,
            'start': None if (video is None or video[1]) else start,
            'end': None if (video is None or video[1]) else end,
            'label': label or -1,
          }
        )
    splits[split] = records
  if not splits:
    raise FileNotFoundError(
      f'{manual_dir}: expected Kinetics CSVs {sorted(KINETICS_SPLITS.values())} '
      '(columns label,youtube_id,time_start,time_end,split)'
    )
  return splits


def charades_records(manual_dir: str) -> dict[str, list[dict]]:
  """Charades_v1_{train,test}.csv: one record per video with all its action segments.

  `actions` is `c092 11.90 21.20;c147 0.00 12.60`: class, start, end (seconds).
  """
  videos = index_videos(manual_dir)
  splits = {}
  for split, filename in (
    ('train', 'Charades_v1_train.csv'),
    ('validation', 'Charades_v1_test.csv'),
  ):
    path = os.path.join(manual_dir, filename)
    if not os.path.exists(path):
      continue
    records = []
    with _Rows(path) as rows:
      for row in rows:
        segments = []
        for action in filter(None, (row.get('actions') or '').split(';')):
          name, begin, finish = action.split()
          segments.append((int(name[1:]), float(begin), float(finish)))
        video = videos.get(row['id'])
        records.append(
          {
            'key': row['id'],
            'video_id': row['id'],
            'path': video[0] if video else None,
            'start': None,
            'end': None,
            'labels': sorted({s[0] for s in segments}),
            'segments': segments,
          }
        )
    splits[split] = records
  if not splits:
    raise FileNotFoundError(f'{manual_dir}: expected Charades_v1_train.csv / Charades_v1_test.csv')
  return splits


def charades_class_names(manual_dir: str) -> list[str] | None:
  """`Charades_v1_classes.txt` (`c000 Holding some clothes` per line) -> names by index."""
  path = os.path.join(manual_dir, 'Charades_v1_classes.txt')
  if not os.path.exists(path):
    return None
  names = {}
  for number, line in enumerate(storage.read_text(path, 'class list').splitlines(), 1):
    if line.strip():
      code, _, name = line.strip().partition(' ')
      try:
        names[int(code[1:])] = name
      except ValueError:
        raise storage.FileFault(
          f'{path}: line {number}: expected "c<number> <name>", got {line.strip()[:60]!r}'
        ) from None
  return [names.get(i, f'c{i:03d}') for i in range(max(names) + 1)] if names else None


def epic_class_names(manual_dir: str) -> dict[str, list[str]] | None:
  """`EPIC_100_verb_classes.csv` / `EPIC_100_noun_classes.csv` (id, key, ...) -> names by id."""
  heads = {}
  for head in ('verb', 'noun'):
    path = os.path.join(manual_dir, f'EPIC_100_{head}_classes.csv')
    if not os.path.exists(path):
      return None
    with _Rows(path, 'class CSV') as rows:
      keys = {int(row['id']): row['key'] for row in rows}
    heads[head] = [keys.get(i, f'{head}_{i}') for i in range(max(keys) + 1)]
  return heads


def _seconds(timestamp: str) -> float:
  hours, minutes, seconds = timestamp.split(':')
  return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def epic_records(manual_dir: str) -> dict[str, list[dict]]:
  """EPIC_100_{train,validation}.csv: one record per narrated segment (verb and noun class)."""
  videos = index_videos(manual_dir)
  splits = {}
  for split in ('train', 'validation'):
    path = os.path.join(manual_dir, f'EPIC_100_{split}.csv')
    if not os.path.exists(path):
      continue
    records = []
    with _Rows(path) as rows:
      for row in rows:
        video = videos.get(row['video_id'])
        records.append(
          {
            'key': row['narration_id'],
            'video_id': row['video_id'],
            'path': video[0] if video else None,
            'start': _seconds(row['start_timestamp']),
            'end': _seconds(row['stop_timestamp']),
            'label_verb': int(row['verb_class']),
            'label_noun': int(row['noun_class']),
          }
        )
    splits[split] = records
  if not splits:
    raise FileNotFoundError(f'{manual_dir}: expected EPIC_100_train.csv / EPIC_100_validation.csv')
  return splits
