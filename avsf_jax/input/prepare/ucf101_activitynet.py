"""UCF-101 and ActivityNet v1.3, the Listen to Look clip- and video-level datasets (paper 004 §4).

Both read their official layouts from `manual_dir` and are built by `builders.VideoBuilder`'s
shared path (16 kHz audio, per-frame JPEG store, `skipped.jsonl` listing every file that could
not become an example, with its reason):

UCF-101 (`ucf101`, `ucf101_split2`, `ucf101_split3`: the three official splits)
  manual_dir/UCF-101/<Class>/v_<Class>_gGG_cCC.avi        (the videos; any depth below works)
  manual_dir/ucfTrainTestlist/classInd.txt                `1 ApplyEyeMakeup` per line
  manual_dir/ucfTrainTestlist/trainlist0K.txt             `ApplyEyeMakeup/v_..._g08_c01.avi 1`
  manual_dir/ucfTrainTestlist/testlist0K.txt              `ApplyEyeMakeup/v_..._g01_c01.avi`
  Splits 'train' and 'validation' (the test list). Labels come from each line's class folder
  (matched to classInd.txt ignoring case: the official files write `HandstandPushups` for
  videos named `v_HandStandPushups_...`), and a train line's explicit index must agree. Many
  UCF-101 videos have no audio track: they are kept with `has_audio = 0` (the pipeline then
  gives a silent log-mel) unless the build uses `keep_no_audio=False` [assumption of the spec].

ActivityNet v1.3 (`activitynet`)
  manual_dir/activity_net.v1-3.min.json                   the official annotations
  manual_dir/**/v_<id>.mp4 or <id>.<ext>                  the videos (the usual downloaders' names)
  Splits 'train' (subset `training`) and 'validation' (`validation`); the `testing` subset has no
  labels and is left out. Classes are the 200 leaves of the JSON's taxonomy, sorted by name.
  Videos are untrimmed and stored whole, with their annotated segments (label, start, end);
  `label` is the video's activity (the label covering the most annotated time when several
  occur). A video without annotations is skipped as `no_label`.
"""

import collections
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from avsf_jax.input.prepare import annotations, builders

UCF101_LIST_DIR = 'ucfTrainTestlist'
ACTIVITYNET_JSON = 'activity_net.v1-3.min.json'
ACTIVITYNET_SUBSETS = {'train': 'training', 'validation': 'validation'}


# -- UCF-101 ---------------------------------------------------------------------------------


def ucf101_class_names(manual_dir: str) -> list[str]:
  """The 101 names of `classInd.txt`, by index (its 1-based indices become 0-based)."""
  path = os.path.join(manual_dir, UCF101_LIST_DIR, 'classInd.txt')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: missing; expected the official UCF-101 split lists there')
  names = {}
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      fields = line.split()
      if len(fields) != 2 or not fields[0].isdigit():
        raise ValueError(f'{path}:{number}: expected "<index> <ClassName>", got {line.strip()!r}')
      names[int(fields[0]) - 1] = fields[1]
  if sorted(names) != list(range(len(names))):
    raise ValueError(f'{path}: class indices are not 1..{len(names)}')
  return [names[i] for i in range(len(names))]


def ucf101_records(manual_dir: str, split_index: int = 1) -> dict[str, list[dict]]:
  """Records of `trainlist0K.txt` ('train') and `testlist0K.txt` ('validation'), K = split_index."""
  if split_index not in (1, 2, 3):
    raise ValueError(f'UCF-101 split_index={split_index}; the official splits are 1, 2, 3')
  names = ucf101_class_names(manual_dir)
  by_folder = {name.lower(): i for i, name in enumerate(names)}
  videos = annotations.index_videos(manual_dir)
  splits = {}
  for split, prefix in (('train', 'trainlist'), ('validation', 'testlist')):
    path = os.path.join(manual_dir, UCF101_LIST_DIR, f'{prefix}0{split_index}.txt')
    if not os.path.exists(path):
      raise FileNotFoundError(f'{path}: missing; expected the official UCF-101 split lists there')
    records = []
    with open(path) as f:
      for number, line in enumerate(f, 1):
        fields = line.split()
        if not fields:
          continue
        relative = fields[0]
        folder, _, filename = relative.rpartition('/')
        label = by_folder.get(folder.lower())
        if label is None:
          raise ValueError(f'{path}:{number}: class folder {folder!r} is not in classInd.txt')
        if len(fields) > 1 and int(fields[1]) - 1 != label:
          raise ValueError(
            f'{path}:{number}: index {fields[1]} disagrees with classInd.txt for {folder!r}'
          )
        video_id = os.path.splitext(filename)[0]
        video = videos.get(video_id)
        records.append(
          {
            'key': video_id,
            'video_id': video_id,
            'path': video[0] if video else None,
            'start': None,
            'end': None,
            'label': label,
          }
        )
    splits[split] = records
  return splits


class Ucf101(builders.VideoBuilder, skip_registration=True):
  """UCF-101, official split 1 (subclasses: splits 2 and 3)."""

  name = 'ucf101'
  split_index = 1
  num_classes = 101

  def class_names(self):
    """From `classInd.txt` as copied at build time; `class_0`.. before that."""
    return builders._stored_class_names(self) or [f'class_{i}' for i in range(self.num_classes)]

  def read_class_names(self, manual_dir):
    return ucf101_class_names(manual_dir)

  def _label_features(self):
    return {'label': tfds.features.ClassLabel(num_classes=self.num_classes)}

  def _records(self, manual_dir):
    return ucf101_records(manual_dir, self.split_index)


class Ucf101Split2(Ucf101, skip_registration=True):
  name = 'ucf101_split2'
  split_index = 2


class Ucf101Split3(Ucf101, skip_registration=True):
  name = 'ucf101_split3'
  split_index = 3


# -- ActivityNet v1.3 ------------------------------------------------------------------------


def _read_activitynet_json(manual_dir: str) -> dict:
  path = os.path.join(manual_dir, ACTIVITYNET_JSON)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: missing; expected the official ActivityNet v1.3 annotations')
  with open(path) as f:
    data = json.load(f)
  for field in ('taxonomy', 'database'):
    if field not in data:
      raise ValueError(f'{path}: no {field!r} field; is this the ActivityNet v1.3 JSON?')
  return data


def activitynet_class_names(manual_dir: str) -> list[str]:
  """The taxonomy's leaves (nodes that are no other node's parent), sorted by name."""
  taxonomy = _read_activitynet_json(manual_dir)['taxonomy']
  parents = {node['parentName'] for node in taxonomy}
  return sorted({node['nodeName'] for node in taxonomy} - parents)


def _video_label(segments: list[tuple[int, float, float]]) -> int:
  """The class covering the most annotated time (ties: the smaller index); -1 if none."""
  if not segments:
    return -1
  covered = collections.Counter()
  for label, start, end in segments:
    covered[label] += max(end - start, 0.0)
  return min(covered, key=lambda label: (-covered[label], label))


def activitynet_records(manual_dir: str) -> dict[str, list[dict]]:
  """Whole-video records of the training and validation subsets, with their segments."""
  data = _read_activitynet_json(manual_dir)
  names = activitynet_class_names(manual_dir)
  index = {name: i for i, name in enumerate(names)}
  videos = annotations.index_videos(manual_dir)
  splits = {split: [] for split in ACTIVITYNET_SUBSETS}
  subsets = {subset: split for split, subset in ACTIVITYNET_SUBSETS.items()}
  for video_id, entry in sorted(data['database'].items()):
    split = subsets.get(entry.get('subset'))
    if split is None:
      continue
    segments = []
    for annotation in entry.get('annotations', []):
      if annotation['label'] not in index:
        raise ValueError(
          f'{ACTIVITYNET_JSON}: video {video_id} has label {annotation["label"]!r}, '
          'which is not a taxonomy leaf'
        )
      start, end = annotation['segment']
      segments.append((index[annotation['label']], float(start), float(end)))
    video = videos.get(f'v_{video_id}') or videos.get(video_id)
    splits[split].append(
      {
        'key': video_id,
        'video_id': video_id,
        'path': video[0] if video else None,
        'start': None,
        'end': None,
        'label': _video_label(segments),
        'segments': segments,
      }
    )
  return splits


class ActivityNet(builders.VideoBuilder, skip_registration=True):
  """ActivityNet v1.3: 200 activities, untrimmed videos with annotated segments."""

  name = 'activitynet'
  num_classes = 200

  def class_names(self):
    """The taxonomy's leaves as copied at build time; `class_0`.. before that."""
    return builders._stored_class_names(self) or [f'class_{i}' for i in range(self.num_classes)]

  def read_class_names(self, manual_dir):
    return activitynet_class_names(manual_dir)

  def _label_features(self):
    label = tfds.features.ClassLabel(num_classes=self.num_classes)
    return {
      'label': label,
      'segments': tfds.features.Sequence(
        {
          'label': tfds.features.ClassLabel(num_classes=self.num_classes),
          'start': np.float32,
          'end': np.float32,
        }
      ),
    }

  def _records(self, manual_dir):
    return activitynet_records(manual_dir)


BUILDERS = {cls.name: cls for cls in (Ucf101, Ucf101Split2, Ucf101Split3, ActivityNet)}
