"""ActivityNet v1.3 as a TFDS builder: Listen to Look's video-level dataset (paper 004 §4).

Built by `builders.VideoBuilder`'s shared path (16-kHz audio, per-frame JPEG store,
`skipped.jsonl` listing every file that could not become an example, with its reason) from the
official layout in `manual_dir`:

  manual_dir/activity_net.v1-3.min.json                   the official annotations
  manual_dir/**/v_<id>.mp4 or <id>.<ext>                  the videos (the usual downloaders' names)

Splits 'train' (subset `training`) and 'validation' (`validation`); the `testing` subset has no
labels and is left out. Classes are the 200 leaves of the JSON's taxonomy, sorted by name.
Videos are untrimmed and stored whole, with their annotated segments (label, start, end in
seconds); `label` is the video's activity (the label covering the most annotated time when
several occur). A video without annotations is skipped as `no_label`.

  python -m avsf_jax.tools.prepare_dataset --dataset=activitynet --manual_dir=ANET --data_dir=DIR
"""

import collections
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from avsf_jax.input.prepare import annotations, builders

ACTIVITYNET_JSON = 'activity_net.v1-3.min.json'
ACTIVITYNET_SUBSETS = {'train': 'training', 'validation': 'validation'}


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


builders.BUILDERS[ActivityNet.name] = ActivityNet  # `builders.get_builder` finds it
