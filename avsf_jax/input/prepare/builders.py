"""TFDS builders (manual_dir) for the video datasets, all sharing one preparation path.

Every builder reads its annotations into records (`annotations.py`), decodes them in a pool of
worker processes (`prepare.py`, PyAV), and stores 16 kHz mono int16 audio and metadata as TFDS
examples in ArrayRecord files. The JPEG frames go, one record per frame, into an uncompressed
ArrayRecord file per split next to them (`frames-<split>.array_record`); an example holds the
index of its first frame there (`frame_offset`), so the pipeline reads only the sampled frames
of a clip, not the whole video.
Files that cannot become an aligned example are listed with their reason in `skipped.jsonl`
next to the prepared data.

Shared caches: a build holds a file lock beside the data (`<data_dir>.lock`), so two processes
on one machine that find the same cache empty build it once (the second finds it prepared).
Generated raw files and a finished dataset each get a completion marker, written last and
atomically (`RAW_COMPLETE` in the raw folder, `PREPARED_MARKER` in the data folder): a folder
without its marker is unfinished, whatever else it holds. A dataset prepared before the
markers existed (TFDS's `dataset_info.json` there, no marker) is accepted once `check_files`
finds every shard it lists intact; otherwise the build stops with a one-line `FileFault`
naming the shard and saying what to do, and touches nothing.
"""

import concurrent.futures
import contextlib
import dataclasses
import importlib
import json
import multiprocessing
import os
import pathlib
import sys

import filelock
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from array_record.python import array_record_module

from avsf_jax import storage
from avsf_jax.input import media
from avsf_jax.input.prepare import annotations, beam_results, synthetic
from avsf_jax.input.prepare import records as prepare

DATA_DIR = pathlib.Path(__file__).resolve().parents[3] / 'data'
SKIPPED_FILENAME = 'skipped.jsonl'
RAW_COMPLETE = '.raw_complete'  # in a generated manual_dir: every raw file is written
PREPARED_MARKER = '.prepared'  # in a data_dir: build() finished (data, class names, report)


def generated_by(marker: str, stamp: str) -> bool:
  """Whether a generated folder's RAW_COMPLETE `marker` exists and its text ends with `stamp`
  (the generator version that wrote the files): otherwise they are generated again."""
  if not os.path.exists(marker):
    return False
  with open(marker) as f:
    return f.read().endswith(stamp)


def write_marker(path: str, text: str = 'done\n') -> None:
  """Writes a completion marker atomically: a temporary file renamed into place."""
  tmp = f'{path}.tmp-{os.getpid()}'
  with tf.io.gfile.GFile(tmp, 'w') as f:
    f.write(text)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def frames_path(data_dir: str, split: str) -> str:
  """The per-frame JPEG store of one split."""
  return os.path.join(data_dir, f'frames-{split}.array_record')


@dataclasses.dataclass(eq=False)
class VideoConfig(tfds.core.BuilderConfig):
  """Storage options; the config name records them (`ss320`, `ss320_audio`)."""

  short_side: int = media.DEFAULT_SHORT_SIDE
  keep_no_audio: bool = True


def video_config(
  short_side: int = media.DEFAULT_SHORT_SIDE, keep_no_audio: bool = True
) -> VideoConfig:
  name = f'ss{short_side}' + ('' if keep_no_audio else '_audio')
  return VideoConfig(name=name, short_side=short_side, keep_no_audio=keep_no_audio)


def _common_features() -> dict:
  return {
    'frame_offset': np.int64,  # index of frame 0 in `frames_path(data_dir, split)`
    'audio': tfds.features.Tensor(
      shape=(None,), dtype=np.int16, encoding=tfds.features.Encoding.BYTES
    ),
    'fps': np.float32,
    'duration': np.float32,
    'num_frames': np.int32,
    'height': np.int32,
    'width': np.int32,
    'has_audio': np.bool_,
    'path': tfds.features.Text(),
    'video_id': tfds.features.Text(),
  }


class VideoBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base: subclasses define `name`, `class_names()`, `_records(manual_dir)` and, for labels
  other than one class per example, `_label_features()`."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {
    '1.1.0': 'JPEG frames in a per-frame store; examples hold `frame_offset`.',
    '1.0.0': 'Frames inside the example records.',
  }

  @classmethod
  def storage_config(cls, short_side: int, keep_no_audio: bool, variant: str = ''):
    """The builder config of these storage options; `variant` is the part of a dataset name
    after '/' (none here: builders with variants override this)."""
    if variant:
      raise ValueError(f'dataset {cls.name!r} has no variants; got {cls.name}/{variant}')
    return video_config(short_side, keep_no_audio)

  BUILDER_CONFIGS = [video_config()]
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'See docs/data.md for the expected layout of manual_dir.'
  multi_label = False
  # No downloads: skips TFDS's checksum-file lookup, which needs the optional
  # `importlib_resources` package for builders defined outside tensorflow_datasets.
  url_infos = None

  def __init__(self, *, num_workers: int | None = None, decoded_dir: str | None = None, **kwargs):
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)
    self.num_workers = num_workers or os.cpu_count() or 1
    # Records already decoded elsewhere (Apache Beam: `beam_prepare.py`), read instead of
    # decoding here.
    self.decoded_dir = decoded_dir
    self.skipped: list[dict] = []
    self.prepared = 0
    self.built_here = False  # set by `build` when this process prepared the data

  def _label_features(self) -> dict:
    return {'label': tfds.features.ClassLabel(names=self.class_names())}

  def read_class_names(self, manual_dir: str):
    """Class names shipped with the annotations (None when the class list lives in `data/`)."""
    del manual_dir

  def make_raw_files(self, manual_dir: str) -> None:
    """Creates the raw files in `manual_dir` where the dataset can make them (synthetic only)."""
    del manual_dir

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict({**_common_features(), **self._label_features()}),
      supervised_keys=None,
    )

  def _split_generators(self, dl_manager):
    splits = self._records(str(dl_manager.manual_dir))
    return {split: self._generate_examples(records, split) for split, records in splits.items()}

  def _decode(self, records, split):
    """(key, example, skip) of each record, in order: decoded in worker processes here, or
    read from `decoded_dir`."""
    if self.decoded_dir:
      yield from beam_results.read(self.decoded_dir, split, len(records))
      return
    config = self.builder_config
    args = (config.short_side, media.DEFAULT_SAMPLE_RATE, config.keep_no_audio)
    context = multiprocessing.get_context('spawn')
    workers = min(self.num_workers, max(1, len(records)))
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
      futures = [pool.submit(prepare.prepare_record, r, *args) for r in records]
      for future in futures:
        yield future.result()

  def _generate_examples(self, records, split):
    # TFDS points `data_dir` at its temporary build folder here, renamed when the build succeeds.
    frames = array_record_module.ArrayRecordWriter(
      frames_path(self.data_dir, split), 'group_size:1,uncompressed'
    )
    count = 0
    try:
      for key, example, skip in self._decode(records, split):
        if skip is not None:
          self.skipped.append(skip)
          continue
        example['frame_offset'] = np.int64(count)
        for jpeg in example.pop('frames'):
          frames.write(jpeg)
        count += int(example['num_frames'])
        self.prepared += 1
        yield key, example
    finally:
      frames.close()

  def write_skipped(self) -> str:
    """Writes `skipped.jsonl` (one JSON object per skipped file) next to the prepared data."""
    path = os.path.join(self.data_dir, SKIPPED_FILENAME)
    # storage.write_text, not tf.io.gfile: a GFile never written to creates no file, and
    # an empty report (nothing skipped) must exist too.
    storage.write_text(path, ''.join(json.dumps(entry) + '\n' for entry in self.skipped))
    return path


class Kinetics400(VideoBuilder, skip_registration=True):
  """Kinetics-400 from the official CSVs and a Kinetics-downloader folder (trimmed or not)."""

  name = 'kinetics400'
  class_file = 'kinetics400_classes.txt'

  def class_names(self):
    path = DATA_DIR / self.class_file
    if not path.exists():
      raise FileNotFoundError(
        f'{path}: class list missing; write one class per line (e.g. '
        '`tail -n +2 train.csv | cut -d, -f1 | sort -u`)'
      )
    return annotations.read_class_list(str(path))

  def _records(self, manual_dir):
    return annotations.kinetics_records(manual_dir, self.class_names())


class Kinetics600(Kinetics400, skip_registration=True):
  name = 'kinetics600'
  class_file = 'kinetics600_classes.txt'


class KineticsSounds(Kinetics400, skip_registration=True):
  """The 32 Kinetics-400 classes of paper 000 appendix B, cut from the Kinetics-400 CSVs."""

  name = 'kinetics_sounds'
  class_file = 'kinetics_sounds_classes.txt'


_GENERATOR_STAMP = f'generator {synthetic.GENERATOR_VERSION}\n'


def raw_marker_text(count: int) -> str:
  """The RAW_COMPLETE marker of generated synthetic_av files: the clip count and the generator
  version (files of another version are generated again)."""
  return f'{count} clips\n{_GENERATOR_STAMP}'


class SyntheticAv(Kinetics400, skip_registration=True):
  """The embedded dataset: generated as mp4 into manual_dir (if absent), then as Kinetics."""

  name = 'synthetic_av'
  VERSION = tfds.core.Version('1.2.0')
  RELEASE_NOTES = {
    **VideoBuilder.RELEASE_NOTES,
    '1.2.0': f'Generator {synthetic.GENERATOR_VERSION}: larger bright squares with a white border '
    'on a dark background that pans with them.',
  }
  seed = 0
  clips_per_class = synthetic.SPLITS

  def class_names(self):
    return list(synthetic.CLASS_NAMES)

  def make_raw_files(self, manual_dir: str) -> None:
    """Generates the mp4s and CSVs unless their completion marker, written by this generator
    version, is there (a folder left half-written by a killed run is generated again: every
    clip's content is a function of its seed)."""
    marker = os.path.join(manual_dir, RAW_COMPLETE)
    if generated_by(marker, _GENERATOR_STAMP):
      return
    if os.path.exists(marker):
      print(f"synthetic_av: {manual_dir} holds an older generator's files", file=sys.stderr)
    print(f'synthetic_av: generating mp4 files in {manual_dir}', file=sys.stderr)
    context = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(self.num_workers, mp_context=context) as pool:
      count = synthetic.generate(manual_dir, self.seed, pool, self.clips_per_class)
    write_marker(marker, raw_marker_text(count))


CLASS_NAMES_FILENAME = 'class_names.json'


def _stored_class_names(builder: VideoBuilder):
  path = os.path.join(builder.data_dir, CLASS_NAMES_FILENAME)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


class Charades(VideoBuilder, skip_registration=True):
  """Charades v1: multi-label (157 classes) with action segments."""

  name = 'charades'
  multi_label = True
  num_classes = 157

  def class_names(self):
    """From `Charades_v1_classes.txt` as copied at build time; `c000`.. before that."""
    return _stored_class_names(self) or [f'c{i:03d}' for i in range(self.num_classes)]

  def read_class_names(self, manual_dir):
    return annotations.charades_class_names(manual_dir)

  def _label_features(self):
    label = tfds.features.ClassLabel(num_classes=self.num_classes)
    return {
      'labels': tfds.features.Sequence(label),
      'segments': tfds.features.Sequence(
        {
          'label': tfds.features.ClassLabel(num_classes=self.num_classes),
          'start': np.float32,
          'end': np.float32,
        }
      ),
    }

  def _records(self, manual_dir):
    return annotations.charades_records(manual_dir)


class EpicKitchens(VideoBuilder, skip_registration=True):
  """EPIC-KITCHENS-100 action segments with verb (97) and noun (300) labels."""

  name = 'epic_kitchens'
  num_verbs, num_nouns = 97, 300

  def class_names(self):
    """From `EPIC_100_{verb,noun}_classes.csv` as copied at build time; `verb_0`.. before."""
    return _stored_class_names(self) or {
      'verb': [f'verb_{i}' for i in range(self.num_verbs)],
      'noun': [f'noun_{i}' for i in range(self.num_nouns)],
    }

  def read_class_names(self, manual_dir):
    return annotations.epic_class_names(manual_dir)

  def _label_features(self):
    return {
      'label_verb': tfds.features.ClassLabel(num_classes=self.num_verbs),
      'label_noun': tfds.features.ClassLabel(num_classes=self.num_nouns),
    }

  def _records(self, manual_dir):
    return annotations.epic_records(manual_dir)


BUILDERS = {
  cls.name: cls
  for cls in (Kinetics400, Kinetics600, KineticsSounds, SyntheticAv, Charades, EpicKitchens)
}
# Builders that live in modules importing this one; `builder_class` imports them on first use.
_ELSEWHERE = {
  'ucf101': 'ucf_hmdb',
  'hmdb51': 'ucf_hmdb',
  'activitynet': 'activitynet',
  'synthetic_av_sync': 'synthetic_sync_builder',
  'folder': 'folder',
}


def names() -> list[str]:
  """Every dataset name `get_builder` knows."""
  return sorted(set(BUILDERS) | set(_ELSEWHERE))


def builder_class(name: str) -> type['VideoBuilder']:
  """The builder class of dataset `name` (without a '/variant')."""
  if name not in BUILDERS and name in _ELSEWHERE:
    importlib.import_module(f'avsf_jax.input.prepare.{_ELSEWHERE[name]}')
  if name not in BUILDERS:
    raise ValueError(f'unknown dataset {name!r}; one of {names()}')
  return BUILDERS[name]


def get_builder(
  name: str,
  data_dir: str,
  *,
  short_side: int = media.DEFAULT_SHORT_SIDE,
  keep_no_audio: bool = True,
  **kwargs,
) -> VideoBuilder:
  """The builder of dataset `name`: a builder name (`kinetics400`), or `name/variant` for the
  builders with variants (`ucf101/split2`: the official split; see `storage_config`)."""
  base, _, variant = name.partition('/')
  cls = builder_class(base)
  config = cls.storage_config(short_side, keep_no_audio, variant)
  if any(c.name == config.name for c in cls.BUILDER_CONFIGS):
    config = config.name  # TFDS wants the name of a predefined config, not an equal copy
  return cls(data_dir=data_dir, config=config, **kwargs)


def is_prepared(builder: VideoBuilder) -> bool:
  return tf.io.gfile.exists(os.path.join(builder.data_dir, 'dataset_info.json'))


def is_complete(builder: VideoBuilder) -> bool:
  """Whether `build` has finished writing the dataset (its marker, written last, exists)."""
  return tf.io.gfile.exists(os.path.join(builder.data_dir, PREPARED_MARKER))


def _say(text: str) -> None:
  print(text, file=sys.stderr, flush=True)


def _shards(data_dir: str) -> list[tuple[str, int | None]]:
  """(path, number of records or None) of every ArrayRecord file of the prepared dataset in
  `data_dir`, as its `dataset_info.json` lists them, and the frame store of each split."""
  try:
    info = tfds.builder_from_directory(data_dir).info
  except Exception as e:  # noqa: BLE001 - any damage to TFDS's description reads the same
    raise storage.FileFault(
      f'{data_dir}: the description of the prepared dataset (dataset_info.json, features.json) '
      f'cannot be read ({storage.first_line(e)})'
    ) from None
  files = []
  for name, split in info.splits.items():
    files += [(str(p), int(n)) for p, n in zip(split.filepaths, split.shard_lengths, strict=True)]
    files.append((frames_path(data_dir, name), None))
  return files


DEEP_CHECK_BYTES = 1 << 30  # datasets up to this size get every chunk's hash checked


def check_files(builder: VideoBuilder, deep_check_bytes: int = DEEP_CHECK_BYTES) -> int:
  """Opens every shard of the prepared dataset and returns how many it checked; a
  `storage.FileFault` naming the first bad shard otherwise: missing, unreadable, or holding
  another number of records than `dataset_info.json` records (truncated or replaced).

  An ArrayRecord file is checked by its footer and index, which is cheap whatever its size;
  flipped bytes inside a record are found only by reading it (Riegeli checks each chunk's
  hash). So a local dataset of at most `deep_check_bytes` in all (the demo's is 60 MB,
  read in well under a second) is also read through; larger ones, and datasets in a
  bucket, are read through by training, where a damaged chunk fails the read that meets it.
  """
  shards = _shards(builder.data_dir)
  for path, _ in shards:  # missing, permission denied, empty: the one-line FileFault
    storage.check_readable(path, 'shard of the prepared dataset')
  local = '://' not in builder.data_dir  # a bucket is not read through at every start
  deep = local and sum(tf.io.gfile.stat(p).length for p, _ in shards) <= deep_check_bytes
  for path, expected in shards:
    reader = array_record_module.ArrayRecordReader(path)
    cause = None
    try:
      found = reader.num_records() if reader.ok() else None
      if deep and found:
        for start in range(0, found, 256):
          reader.read(start, min(found, start + 256))
    except RuntimeError as e:
      cause = e
    finally:
      try:
        reader.close()
      except RuntimeError as e:  # a reader that failed to open reports why on close
        cause = cause or e
    if cause is not None or found is None:
      why = storage.first_line(cause).removeprefix('RuntimeError: ') if cause else 'unreadable'
      raise storage.FileFault(
        f'{path}: the shard of the prepared dataset is damaged (not a readable ArrayRecord '
        f'file: {why})'
      )
    if expected is not None and found != expected:
      raise storage.FileFault(
        f'{path}: the shard of the prepared dataset is damaged (truncated or replaced: '
        f'{found} records, dataset_info.json lists {expected})'
      )
  return len(shards)


def check_prepared(builder: VideoBuilder) -> None:
  """`check_files`, with what to do added to its FileFault: a damaged dataset is never
  repaired or deleted here (it may be someone's only copy)."""
  try:
    check_files(builder)
  except storage.FileFault as e:
    marker = '' if is_complete(builder) else f' (no {PREPARED_MARKER} marker: an unfinished build)'
    raise storage.FileFault(
      f'{e}{marker}; delete {builder.data_dir} and prepare it again'
    ) from None


def build_lock(builder: VideoBuilder):
  """A lock serialising builds of `builder`'s data_dir by processes of one machine (a
  `<data_dir>.lock` file beside it); a no-op context for URLs, where process 0 alone builds."""
  if '://' in builder.data_dir:
    return contextlib.nullcontext()
  os.makedirs(os.path.dirname(builder.data_dir), exist_ok=True)
  return filelock.FileLock(builder.data_dir + '.lock')


@contextlib.contextmanager
def _holding(lock, builder: VideoBuilder):
  """Holds `lock`; says so on stderr first when another process holds it."""
  if isinstance(lock, filelock.BaseFileLock):
    try:
      lock.acquire(timeout=0)
    except filelock.Timeout:
      _say(
        f'{builder.name}: another process is preparing it in {builder.data_dir}; waiting for '
        f'it to finish (lock {lock.lock_file})'
      )
      lock.acquire()
    try:
      yield
    finally:
      lock.release()
  else:
    with lock:
      yield


def build(builder: VideoBuilder, manual_dir: str) -> str:
  """Prepares the dataset from `manual_dir`; returns the path of `skipped.jsonl`.

  Holds `build_lock(builder)` throughout (one line on stderr when it has to wait for it).
  A complete dataset (its marker there: prepared earlier, or by the process this one waited
  for) is checked (`check_prepared`) and left as it is. A dataset prepared before the markers existed is checked
  (`check_prepared`) and marked complete when intact; a damaged or unfinished one stops with
  a FileFault naming the shard, modifying nothing. Otherwise the dataset is prepared here
  (`builder.built_here`) and the completion marker is written last.
  """
  with _holding(build_lock(builder), builder):
    skipped = os.path.join(builder.data_dir, SKIPPED_FILENAME)
    if is_complete(builder):
      check_prepared(builder)
      return skipped
    if is_prepared(builder):
      check_prepared(builder)
      _say(
        f'{builder.name}: {builder.data_dir} holds a complete dataset without a '
        f'{PREPARED_MARKER} marker (prepared by an older version); its shards check out, '
        'marking it complete'
      )
    else:
      _say(f'{builder.name}: preparing it in {builder.data_dir}')
      builder.make_raw_files(manual_dir)
      if not tf.io.gfile.isdir(manual_dir) or not tf.io.gfile.listdir(manual_dir):
        raise FileNotFoundError(
          f'{manual_dir}: the manual_dir of {builder.name} (raw videos and annotation files) '
          'is missing or empty; see docs/data.md for its layout'
        )
      download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
      builder.download_and_prepare(download_config=download_config)
      names = builder.read_class_names(manual_dir)
      if names:
        with tf.io.gfile.GFile(os.path.join(builder.data_dir, CLASS_NAMES_FILENAME), 'w') as f:
          json.dump(names, f)
      skipped = builder.write_skipped()
      builder.built_here = True
    write_marker(os.path.join(builder.data_dir, PREPARED_MARKER))
    return skipped
