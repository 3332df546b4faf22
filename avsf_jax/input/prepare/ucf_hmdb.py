"""UCF-101 and HMDB-51 as TFDS builders, one builder config per official split (1, 2, 3).

The self-supervised evaluation (spec 3) trains a linear probe or fine-tunes on these and reports
top-1 averaged over the three splits. Expected `manual_dir` layouts, as the official archives
extract:

- **UCF-101** (`UCF101.rar` + `UCF101TrainTestSplits-RecognitionTask.zip`): the videos anywhere
  below `manual_dir` (normally `UCF-101/<Class>/v_<Class>_gGG_cCC.avi`) and the split folder
  `ucfTrainTestlist/` with `classInd.txt` (`1 ApplyEyeMakeup`), `trainlist0{1,2,3}.txt`
  (`ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1`) and `testlist0{1,2,3}.txt` (no label; it
  comes from the folder). 13,320 clips, 101 classes.
- **HMDB-51** (`hmdb51_org.rar`, whose per-class rars extract to `<class>/<video>.avi`, +
  `test_train_splits.rar`): the videos anywhere below `manual_dir` and the split folder
  `testTrainMulti_7030_splits/` with `<class>_test_split{1,2,3}.txt`, lines `<video>.avi <id>`
  with id 1 = train, 2 = test, 0 = unused (70 / 30 per class). 6,766 clips, 51 classes, in the
  alphabetical order of the split files' class names.

Labels are stored as integers; the class names read from the split files are saved next to the
prepared data (`class_names.json`) at build time. Many UCF-101 clips have no audio track: with
`keep_no_audio` (the default) they are kept with `has_audio = 0`, and `audio_report.json` next
to `skipped.jsonl` says how many per split.
"""

import collections
import dataclasses
import json
import os

import tensorflow as tf
import tensorflow_datasets as tfds

from avsf_jax.input import media
from avsf_jax.input.prepare import annotations, builders

SPLIT_NUMBERS = (1, 2, 3)
AUDIO_REPORT_FILENAME = 'audio_report.json'
HMDB_SPLIT_SUFFIX = '_test_split{}.txt'
HMDB_SPLIT_IDS = {1: 'train', 2: 'test'}  # 0 = unused in that split


def _find_file(root: str, name: str) -> str:
  """The first file called `name` below `root` (sorted walk)."""
  for folder, dirs, files in os.walk(root):
    dirs.sort()
    if name in files:
      return os.path.join(folder, name)
  raise FileNotFoundError(f'{root}: no {name} found below it')


def _check_split(split: int) -> None:
  if split not in SPLIT_NUMBERS:
    raise ValueError(f'split must be one of {SPLIT_NUMBERS}; got {split!r}')


def _record(video_name: str, label: int, videos: dict) -> dict:
  stem = os.path.splitext(video_name)[0]
  found = videos.get(stem)
  return {
    'key': stem,
    'video_id': stem,
    'path': found[0] if found else None,
    'start': None,
    'end': None,
    'label': label,
  }


def ucf101_class_names(manual_dir: str) -> list[str]:
  """Class names in label order, from `classInd.txt` (`<1-based index> <name>` lines)."""
  path = _find_file(manual_dir, 'classInd.txt')
  names = {}
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      parts = line.split()
      if len(parts) != 2 or not parts[0].isdigit():
        raise ValueError(f'{path}:{number}: expected "<index> <class>", got {line.strip()!r}')
      names[int(parts[0]) - 1] = parts[1]
  if sorted(names) != list(range(len(names))):
    raise ValueError(f'{path}: class indices must run 1..{len(names)}')
  return [names[i] for i in range(len(names))]


def ucf101_records(manual_dir: str, split: int) -> dict[str, list[dict]]:
  """{'train': records, 'test': records} of official split `split`; the label is the class of
  the list entry's folder (the test lists carry no label column)."""
  _check_split(split)
  lists = os.path.dirname(_find_file(manual_dir, 'classInd.txt'))
  # Folders match classInd.txt ignoring case: the official files write `HandstandPushups` for
  # videos named `v_HandStandPushups_*`.
  index = {name.lower(): i for i, name in enumerate(ucf101_class_names(manual_dir))}
  videos = annotations.index_videos(manual_dir)
  out = {}
  for name, filename in (('train', f'trainlist0{split}.txt'), ('test', f'testlist0{split}.txt')):
    path = os.path.join(lists, filename)
    if not os.path.exists(path):
      raise FileNotFoundError(f'{path}: missing (UCF101TrainTestSplits-RecognitionTask.zip)')
    records = []
    with open(path) as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        fields = line.split()
        folder, _, video_name = fields[0].replace('\\', '/').rpartition('/')
        label = index.get(folder.lower())
        if label is None:
          raise ValueError(f'{path}:{number}: class {folder!r} is not in classInd.txt')
        if len(fields) > 1 and fields[1] != str(label + 1):
          raise ValueError(
            f'{path}:{number}: index {fields[1]} disagrees with classInd.txt for {folder!r}'
          )
        records.append(_record(video_name, label, videos))
    out[name] = records
  return out


def _hmdb_split_files(manual_dir: str, split: int) -> dict[str, str]:
  suffix = HMDB_SPLIT_SUFFIX.format(split)
  files = {}
  for folder, dirs, names in os.walk(manual_dir):
    dirs.sort()
    for name in sorted(names):
      if name.endswith(suffix):
        files.setdefault(name[: -len(suffix)], os.path.join(folder, name))
  if not files:
    raise FileNotFoundError(
      f'{manual_dir}: no <class>{suffix} files (testTrainMulti_7030_splits from test_train_splits.rar)'
    )
  return dict(sorted(files.items()))


def hmdb51_class_names(manual_dir: str) -> list[str]:
  """Class names in label order: alphabetical, from the split files of split 1."""
  return list(_hmdb_split_files(manual_dir, 1))


def hmdb51_records(manual_dir: str, split: int) -> dict[str, list[dict]]:
  """{'train': records, 'test': records} of official split `split` (ids 1 / 2; 0 is unused)."""
  _check_split(split)
  files = _hmdb_split_files(manual_dir, split)
  classes = hmdb51_class_names(manual_dir)
  if list(files) != classes:
    raise ValueError(f'{manual_dir}: split {split} has classes {list(files)}, split 1 {classes}')
  videos = annotations.index_videos(manual_dir)
  out = {'train': [], 'test': []}
  for label, path in enumerate(files.values()):
    with open(path) as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ('0', '1', '2'):
          raise ValueError(f'{path}:{number}: expected "<video>.avi <0|1|2>", got {line.strip()!r}')
        subset = HMDB_SPLIT_IDS.get(int(parts[1]))
        if subset is not None:
          out[subset].append(_record(parts[0], label, videos))
  return out


@dataclasses.dataclass(eq=False)
class SplitVideoConfig(builders.VideoConfig):
  """Storage options and the official split; the name records both (`split1_ss320`)."""

  split_number: int = 1


def split_config(
  split: int = 1, short_side: int = media.DEFAULT_SHORT_SIDE, keep_no_audio: bool = True
) -> SplitVideoConfig:
  _check_split(split)
  name = f'split{split}_ss{short_side}' + ('' if keep_no_audio else '_audio')
  return SplitVideoConfig(
    name=name, short_side=short_side, keep_no_audio=keep_no_audio, split_number=split
  )


class _SplitBuilder(builders.VideoBuilder, skip_registration=True):
  """Shared by UCF-101 and HMDB-51: integer labels, splits 1-3, no-audio accounting."""

  BUILDER_CONFIGS = [split_config(n) for n in SPLIT_NUMBERS]
  num_classes = 0

  @classmethod
  def storage_config(cls, short_side: int, keep_no_audio: bool, variant: str = ''):
    """`variant` names the official split: `split2` (or a config name, `split2_ss320`, whose
    storage options must then agree); none is split 1."""
    split_name, _, stored = (variant or 'split1').partition('_')
    number = split_name.removeprefix('split')
    if not split_name.startswith('split') or not number.isdigit():
      raise ValueError(
        f'dataset {cls.name}/{variant}: expected {cls.name}/splitN with N in {SPLIT_NUMBERS}'
      )
    config = split_config(int(number), short_side, keep_no_audio)
    if stored and config.name != variant:
      raise ValueError(
        f'dataset {cls.name}/{variant} asks for stored data {stored!r}, but '
        f'input.frame_short_side={short_side} and input.keep_no_audio={keep_no_audio} give '
        f'{config.name}: name the split only ({cls.name}/{split_name})'
      )
    return config

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.no_audio = collections.Counter()
    self.examples = collections.Counter()

  def _label_features(self):
    return {'label': tfds.features.ClassLabel(num_classes=self.num_classes)}

  def class_names(self):
    """From the split files as copied at build time; `class_000`.. before that."""
    path = os.path.join(self.data_dir, builders.CLASS_NAMES_FILENAME)
    if tf.io.gfile.exists(path):
      with tf.io.gfile.GFile(path) as f:
        return json.load(f)
    return [f'class_{i:03d}' for i in range(self.num_classes)]

  def _generate_examples(self, records, split):
    for key, example in super()._generate_examples(records, split):
      self.examples[split] += 1
      self.no_audio[split] += int(not example['has_audio'])
      yield key, example

  def write_skipped(self) -> str:
    """`skipped.jsonl`, and `audio_report.json`: examples and those kept without audio."""
    report = {
      split: {'examples': self.examples[split], 'no_audio': self.no_audio[split]}
      for split in sorted(self.examples)
    }
    with tf.io.gfile.GFile(os.path.join(self.data_dir, AUDIO_REPORT_FILENAME), 'w') as f:
      json.dump(report, f, indent=2)
    return super().write_skipped()


class Ucf101(_SplitBuilder, skip_registration=True):
  """UCF-101 with the three official train/test lists."""

  name = 'ucf101'
  num_classes = 101

  def read_class_names(self, manual_dir):
    return ucf101_class_names(manual_dir)

  def _records(self, manual_dir):
    return ucf101_records(manual_dir, self.builder_config.split_number)


class Hmdb51(_SplitBuilder, skip_registration=True):
  """HMDB-51 with the three official 70/30 splits."""

  name = 'hmdb51'
  num_classes = 51

  def read_class_names(self, manual_dir):
    return hmdb51_class_names(manual_dir)

  def _records(self, manual_dir):
    return hmdb51_records(manual_dir, self.builder_config.split_number)


BUILDERS = {cls.name: cls for cls in (Ucf101, Hmdb51)}
builders.BUILDERS.update(BUILDERS)  # `builders.get_builder('ucf101/split2', ...)`


def get_builder(
  name: str,
  data_dir: str,
  *,
  split: int = 1,
  short_side: int = media.DEFAULT_SHORT_SIDE,
  keep_no_audio: bool = True,
  **kwargs,
) -> _SplitBuilder:
  """The builder of `name` ('ucf101' or 'hmdb51') for official split `split`."""
  if name not in BUILDERS:
    raise ValueError(f'unknown dataset {name!r}; one of {sorted(BUILDERS)}')
  return builders.get_builder(
    f'{name}/split{split}', data_dir, short_side=short_side, keep_no_audio=keep_no_audio, **kwargs
  )
