"""The `folder` dataset: your own videos as <root>/<split>/<class name>/<file>, no CSV."""

import json
import os

import pytest

from avsf_jax.input.prepare import folder, synthetic
from tests import helpers


def _touch(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(b'x')


def test_scan_reads_classes_from_folders(tmp_path):
  root = str(tmp_path)
  for rel in (
    'train/zebra/a.mp4',
    'train/aardvark/b.webm',
    'train/aardvark/more/c.mkv',  # nested folders belong to their class
    'train/aardvark/.hidden.mp4',
    'val/zebra/d.mp4',
    'val/cat/e.avi',  # a class seen only in validation still gets an index
    'notes/x.mp4',  # not a split folder
  ):
    _touch(os.path.join(root, rel))
  names, splits = folder.scan(root)
  assert names == ['aardvark', 'cat', 'zebra']
  assert sorted(splits) == ['train', 'validation']
  assert [(os.path.relpath(p, root), c) for p, c in splits['train']] == [
    ('train/aardvark/b.webm', 'aardvark'),
    ('train/aardvark/more/c.mkv', 'aardvark'),
    ('train/zebra/a.mp4', 'zebra'),
  ]
  assert [(os.path.relpath(p, root), c) for p, c in splits['validation']] == [
    ('val/cat/e.avi', 'cat'),
    ('val/zebra/d.mp4', 'zebra'),
  ]


def test_scan_errors_name_the_folder_and_the_layout(tmp_path):
  with pytest.raises(FileNotFoundError, match=f'{tmp_path}/nope: no such folder of videos'):
    folder.scan(str(tmp_path / 'nope'))
  _touch(str(tmp_path / 'validation' / 'cat' / 'a.mp4'))
  with pytest.raises(FileNotFoundError, match=r'no videos in .*/train/<class name>/ \(expected'):
    folder.scan(str(tmp_path))


def test_fingerprint_changes_with_the_files(tmp_path):
  _touch(str(tmp_path / 'train' / 'cat' / 'a.mp4'))
  before = folder.fingerprint(str(tmp_path))
  assert folder.fingerprint(str(tmp_path)) == before
  _touch(str(tmp_path / 'train' / 'cat' / 'b.mp4'))
  assert folder.fingerprint(str(tmp_path)) != before


@pytest.mark.slow
def test_folder_trains_the_demo_model(tmp_path, monkeypatch, capsys):
  """Two classes of synthetic clips (a red square moving left with a low tone, a blue one
  moving right with a high tone) and one unreadable file, in the folder layout; the demo
  model trains 2 steps on it and evaluates it, with the class names of the folders."""
  from avsf_jax import train  # noqa: PLC0415

  root = tmp_path / 'my_videos'
  for split, count in (('train', 4), ('val', 2)):
    for name, synthetic_class in (('dogs', 'red_left_low'), ('cats', 'blue_right_high')):
      os.makedirs(root / split / name)
      for i in range(count):
        frames, fps, audio, rate = synthetic.clip_media(synthetic_class, seed=100 * i + len(name))
        synthetic.write_video(str(root / split / name / f'clip{i}.mp4'), frames, fps, audio, rate)
  (root / 'train' / 'cats' / 'broken.mp4').write_bytes(b'not a video at all' * 100)
  monkeypatch.setenv('AVSF_DATA_DIR', str(tmp_path / 'prepared'))

  config = helpers.load_config('configs/demo.py')
  config.input.dataset = 'folder'
  config.input.data_dir = str(root)
  config.model.num_classes = 2
  config.optim.num_epochs = 4.0  # 8 clips, batch 16: 2 steps
  config.optim.warmup_epochs = 1.0
  config.evals.precise_bn_batches = 1
  config.input.num_temporal_views = 1
  config.input.num_spatial_views = 1
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))

  assert results['class_names'] == ['cats', 'dogs']
  assert results['num_examples'] == 4 and results['step'] == 2
  assert len(results['per_class_top1']) == 2
  saved = json.loads((tmp_path / 'run' / 'eval_results.json').read_text())
  assert saved['class_names'] == ['cats', 'dogs']
  (prepared,) = (tmp_path / 'prepared' / 'folder').iterdir()
  assert prepared.name.startswith('my_videos-')
  (skipped_file,) = prepared.rglob('skipped.jsonl')
  (skip,) = [json.loads(line) for line in skipped_file.read_text().splitlines()]
  assert skip['path'] == str(root / 'train' / 'cats' / 'broken.mp4')
  out = capsys.readouterr().out
  assert f'preparing 13 videos of 2 classes from {root}' in out
  assert f'12 prepared, 1 skipped ({skip["reason"]} 1; see {skipped_file})' in out
  assert 'folder: 8 training / 4 evaluation videos, 2 classes' in out
