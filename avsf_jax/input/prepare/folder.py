r"""Your own videos: `<root>/<split>/<class name>/<video>`, no CSV; classes are the folders.

  python -m avsf_jax.main --config=configs/demo.py --workdir=DIR \
      --config.input.dataset=folder --config.input.data_dir=/my/videos \
      --config.model.num_classes=5

For this dataset `input.data_dir` is the folder of videos: `train/`, `validation/` (or
`val/`) and optionally `test/`, each holding one folder per class. Any file PyAV can read is
a video (mp4, webm, mkv, avi, mov, ...); a file it cannot read is skipped and listed, with its
reason, in `skipped.jsonl` (the report `tools/prepare_dataset` writes). Class names are the
sorted names of the class folders of every split.

On first use the videos are prepared like any other dataset (`builders.VideoBuilder`: JPEG
frames and 16 kHz audio in ArrayRecord files) into
`$AVSF_DATA_DIR/folder/<root name>-<hash>`, the hash covering the root and every file's name,
size and modification time: adding, removing or changing a video makes a new prepared copy.
The module is also the data source of `--config.input.dataset=folder`
(`experiment.data_source`): `dataset_info`, `make_train_iterator` and `make_eval_iterator` are
the tf.data pipeline's, over the prepared copy.
"""

import collections
import hashlib
import os

from avsf_jax.input.prepare import builders

NAME = 'folder'
# Folder name -> split name of the prepared dataset.
SPLIT_FOLDERS = {'train': 'train', 'validation': 'validation', 'val': 'validation', 'test': 'test'}
LAYOUT = '<root>/<split>/<class name>/<video file>, split one of train, validation (or val), test'


def scan(root: str) -> tuple[list[str], dict[str, list[tuple[str, str]]]]:
  """(class names, {split: [(path, class name), ...]}) of a folder dataset.

  Raises FileNotFoundError naming the root and the expected layout when there is nothing
  to train on.
  """
  if not os.path.isdir(root):
    raise FileNotFoundError(f'{root}: no such folder of videos (expected {LAYOUT})')
  splits: dict[str, list[tuple[str, str]]] = {}
  classes = set()
  for entry in sorted(os.listdir(root)):
    split = SPLIT_FOLDERS.get(entry)
    if split is None or not os.path.isdir(os.path.join(root, entry)):
      continue
    if split in splits:
      raise ValueError(f'{root}: both val/ and validation/ exist; keep one')
    items = []
    for class_name in sorted(os.listdir(os.path.join(root, entry))):
      folder = os.path.join(root, entry, class_name)
      if class_name.startswith('.') or not os.path.isdir(folder):
        continue
      classes.add(class_name)
      for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
        items += [
          (os.path.join(dirpath, f), class_name) for f in sorted(filenames) if not f.startswith('.')
        ]
    splits[split] = items
  if 'train' not in splits or not splits['train']:
    raise FileNotFoundError(f'{root}: no videos in {root}/train/<class name>/ (expected {LAYOUT})')
  return sorted(classes), splits


def fingerprint(root: str) -> str:
  """A short hash of the root's absolute path and every file's path, size and mtime."""
  digest = hashlib.sha256(os.path.abspath(root).encode())
  for _, items in sorted(scan(root)[1].items()):
    for path, _ in items:
      stat = os.stat(path)
      digest.update(f'{os.path.relpath(path, root)}|{stat.st_size}|{stat.st_mtime_ns}'.encode())
  return digest.hexdigest()[:10]


class FolderBuilder(builders.VideoBuilder, skip_registration=True):
  """A folder of videos sorted by split and class, prepared like every other dataset."""

  name = NAME

  def __init__(self, *, video_root: str | None = None, **kwargs):
    self.video_root = video_root
    super().__init__(**kwargs)

  def class_names(self):
    stored = builders._stored_class_names(self)  # noqa: SLF001 - the shared class-list file
    if stored is not None:
      return stored
    if self.video_root is None:
      raise FileNotFoundError(f'{self.data_dir}: folder dataset not prepared (no class list)')
    return scan(self.video_root)[0]

  def read_class_names(self, manual_dir: str):
    return scan(manual_dir)[0]

  def _records(self, manual_dir: str) -> dict[str, list[dict]]:
    _, splits = scan(manual_dir)
    records = {}
    for split, items in splits.items():
      records[split] = [
        {
          'key': os.path.relpath(path, manual_dir),
          'video_id': os.path.splitext(os.path.basename(path))[0],
          'path': path,
          'start': None,
          'end': None,
          'label': class_name,
        }
        for path, class_name in items
      ]
    return records


builders.BUILDERS[NAME] = FolderBuilder


def prepared_dir(root: str, data_root: str) -> str:
  """Where the prepared copy of the videos under `root` lives (below `data_root`)."""
  name = os.path.basename(os.path.normpath(os.path.abspath(root))) or 'videos'
  return os.path.join(data_root, NAME, f'{name}-{fingerprint(root)}')


def prepare(config, *, num_workers: int | None = None) -> str:
  """Prepares `config.input.data_dir` (once) and returns the prepared copy's data root.

  Prints the same summary as `tools/prepare_dataset`: prepared, skipped by reason, and
  where `skipped.jsonl` is.
  """
  from avsf_jax import console  # noqa: PLC0415
  from avsf_jax.input import pipeline  # noqa: PLC0415 (TensorFlow)

  root = config.input.data_dir
  if not root:
    raise FileNotFoundError(
      f'input.dataset=folder needs input.data_dir: the folder of your videos (expected {LAYOUT})'
    )
  root = os.path.expanduser(str(root))
  class_names, splits = scan(root)
  for split in (config.input.train_split, config.input.eval_split):
    if not splits.get(split):
      folders = [f for f, s in SPLIT_FOLDERS.items() if s == split]
      raise FileNotFoundError(
        f'{root}: no videos for split {split!r} (expected {" or ".join(folders)}/<class name>/)'
      )
  data_root = prepared_dir(root, pipeline.default_data_dir())
  pipeline.hide_accelerators_from_tf()
  builder = builders.get_builder(
    NAME,
    data_root,
    short_side=config.input.frame_short_side,
    keep_no_audio=config.input.keep_no_audio,
    video_root=root,
    num_workers=num_workers,
  )
  if not builders.is_prepared(builder):
    count = sum(len(v) for v in splits.values())
    console.stage('dataset', f'preparing {count} videos of {len(class_names)} classes from {root}')
    skipped_file = builders.build(builder, root)
    reasons = collections.Counter(s['reason'] for s in builder.skipped)
    by_reason = ', '.join(f'{r} {n}' for r, n in sorted(reasons.items()))
    console.stage(
      'dataset',
      f'{builder.prepared} prepared, {len(builder.skipped)} skipped'
      + (f' ({by_reason}; see {skipped_file})' if builder.skipped else ''),
    )
  return data_root


_prepared: dict[tuple, str] = {}


def prepared_config(config):
  """A copy of `config` whose `input.data_dir` is the prepared copy of the videos."""
  key = (str(config.input.data_dir), config.input.frame_short_side, config.input.keep_no_audio)
  if key not in _prepared:
    _prepared[key] = prepare(config)
  copy = config.copy_and_resolve_references()
  copy.input.data_dir = _prepared[key]
  return copy


def dataset_info(config):
  from avsf_jax.input import pipeline  # noqa: PLC0415

  return pipeline.dataset_info(prepared_config(config))


def make_train_iterator(config, **kwargs):
  from avsf_jax.input import pipeline  # noqa: PLC0415

  return pipeline.make_train_iterator(prepared_config(config), **kwargs)


def make_eval_iterator(config, **kwargs):
  from avsf_jax.input import pipeline  # noqa: PLC0415

  return pipeline.make_eval_iterator(prepared_config(config), **kwargs)
