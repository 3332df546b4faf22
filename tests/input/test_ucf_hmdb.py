"""UCF-101 / HMDB-51 builders on tiny fake layouts of the official archives, with real videos."""

import json
import os

import numpy as np
import pytest

from avsf_jax.evaluation import transfer
from avsf_jax.input.prepare import builders, ucf_hmdb
from tests.input.media_helpers import write_clip

UCF_CLASSES = ('ApplyEyeMakeup', 'HandstandPushups')


def _ucf_video(c, g, i):
  # The official quirk: folder `HandstandPushups`, file names `v_HandStandPushups_...`.
  name = 'HandStandPushups' if c == 'HandstandPushups' else c
  return f'v_{name}_g{g:02d}_c{i:02d}.avi'


@pytest.fixture(scope='module')
def ucf_dir(tmp_path_factory):
  """2 classes x 2 groups x 1 clip; group 1 is the test set of split 1, group 2 of split 2.
  One clip has no audio track; one listed clip is missing."""
  root = tmp_path_factory.mktemp('ucf_raw')
  for c in UCF_CLASSES:
    (root / 'UCF-101' / c).mkdir(parents=True)
    for g in (1, 2):
      no_audio = c == 'HandstandPushups' and g == 2
      write_clip(
        str(root / 'UCF-101' / c / _ucf_video(c, g, 1)), seed=g, seconds=1.0, audio=not no_audio
      )
  lists = root / 'ucfTrainTestlist'
  lists.mkdir()
  (lists / 'classInd.txt').write_text('1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n')
  for split in (1, 2, 3):
    test_group = {1: 1, 2: 2, 3: 1}[split]
    train, test = [], []
    for label, c in enumerate(UCF_CLASSES, 1):
      for g in (1, 2):
        entry = f'{c}/{_ucf_video(c, g, 1)}'
        (test if g == test_group else train).append(
          entry if g == test_group else f'{entry} {label}'
        )
    train.append(f'ApplyEyeMakeup/{_ucf_video("ApplyEyeMakeup", 9, 1)} 1')  # not on disk
    (lists / f'trainlist0{split}.txt').write_text('\r\n'.join(train) + '\r\n')
    (lists / f'testlist0{split}.txt').write_text('\r\n'.join(test) + '\r\n')
  return root


def test_ucf_lists_give_labels_from_folders_for_each_split(ucf_dir):
  assert ucf_hmdb.ucf101_class_names(str(ucf_dir)) == list(UCF_CLASSES)
  split1 = ucf_hmdb.ucf101_records(str(ucf_dir), 1)
  assert [(r['key'], r['label']) for r in split1['test']] == [
    ('v_ApplyEyeMakeup_g01_c01', 0),
    ('v_HandStandPushups_g01_c01', 1),
  ]
  assert [r['key'] for r in split1['train']] == [
    'v_ApplyEyeMakeup_g02_c01',
    'v_HandStandPushups_g02_c01',
    'v_ApplyEyeMakeup_g09_c01',
  ]
  assert split1['train'][2]['path'] is None
  assert split1['train'][0]['path'].endswith(
    os.path.join('ApplyEyeMakeup', 'v_ApplyEyeMakeup_g02_c01.avi')
  )
  split2 = ucf_hmdb.ucf101_records(str(ucf_dir), 2)
  assert [r['key'] for r in split2['test']] == [
    'v_ApplyEyeMakeup_g02_c01',
    'v_HandStandPushups_g02_c01',
  ]
  with pytest.raises(ValueError, match='split'):
    ucf_hmdb.ucf101_records(str(ucf_dir), 4)


def test_hmdb_split_ids_select_train_test_and_unused(tmp_path):
  splits = tmp_path / 'testTrainMulti_7030_splits'
  splits.mkdir()
  videos = {
    'brush_hair': ['a!b_1.avi', 'c_2.avi', 'd_3.avi'],
    'cartwheel': ['e(f)_1.avi', 'g_2.avi'],
  }
  ids = {
    1: {'brush_hair': '1 2 0', 'cartwheel': '2 1'},
    2: {'brush_hair': '0 1 2', 'cartwheel': '1 2'},
  }
  for split in (1, 2, 3):
    for c, names in videos.items():
      marks = ids.get(split, ids[1])[c].split()
      (splits / f'{c}_test_split{split}.txt').write_text(
        ''.join(f'{n} {m} \n' for n, m in zip(names, marks))
      )
  (tmp_path / 'cartwheel').mkdir()
  (tmp_path / 'cartwheel' / 'e(f)_1.avi').write_bytes(b'')
  assert ucf_hmdb.hmdb51_class_names(str(tmp_path)) == ['brush_hair', 'cartwheel']
  split1 = ucf_hmdb.hmdb51_records(str(tmp_path), 1)
  assert [(r['key'], r['label']) for r in split1['train']] == [('a!b_1', 0), ('g_2', 1)]
  assert [(r['key'], r['label']) for r in split1['test']] == [('c_2', 0), ('e(f)_1', 1)]
  assert split1['test'][1]['path'].endswith('e(f)_1.avi') and split1['test'][0]['path'] is None
  split2 = ucf_hmdb.hmdb51_records(str(tmp_path), 2)
  assert [r['key'] for r in split2['train']] == ['c_2', 'e(f)_1']
  assert [r['key'] for r in split2['test']] == ['d_3', 'g_2']
  (splits / 'cartwheel_test_split2.txt').write_text('e(f)_1.avi 7\n')
  with pytest.raises(ValueError, match='0|1|2'):
    ucf_hmdb.hmdb51_records(str(tmp_path), 2)


def test_ucf_build_of_split_1_counts_clips_without_audio(ucf_dir, tmp_path):
  builder = ucf_hmdb.get_builder('ucf101', str(tmp_path / 'data'), split=1, num_workers=1)
  assert builder.builder_config.name == 'split1_ss320'
  skipped = builders.build(builder, str(ucf_dir))
  with open(skipped) as f:
    assert [json.loads(line)['reason'] for line in f] == ['missing_file']
  with open(os.path.join(builder.data_dir, ucf_hmdb.AUDIO_REPORT_FILENAME)) as f:
    assert json.load(f) == {
      'test': {'examples': 2, 'no_audio': 0},
      'train': {'examples': 2, 'no_audio': 1},
    }
  assert builder.class_names() == list(UCF_CLASSES)
  train = {
    e['video_id'].decode(): (int(e['label']), bool(e['has_audio']))
    for e in builder.as_data_source()['train']
  }
  assert train == {'v_ApplyEyeMakeup_g02_c01': (0, True), 'v_HandStandPushups_g02_c01': (1, False)}
  assert (
    ucf_hmdb.get_builder('hmdb51', str(tmp_path), split=3).builder_config.name == 'split3_ss320'
  )
  assert ucf_hmdb.get_builder('hmdb51', str(tmp_path)).info.features['label'].num_classes == 51


def test_top1_over_views_then_mean_over_splits_by_hand():
  # 3 videos x 2 views x 3 classes. Video 0: views vote 0 and 1, the confident one (0) wins
  # the mean of softmaxes; video 1: class 2 twice; video 2: class 1 although the label is 0.
  logits = np.array(
    [
      [[5.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
      [[0.0, 0.0, 2.0], [0.0, 0.0, 3.0]],
      [[0.0, 4.0, 0.0], [1.0, 0.0, 0.0]],
    ]
  )
  assert transfer.view_top1(logits, [0, 2, 0]) == pytest.approx(200 / 3)
  assert transfer.view_top1(logits, [0, 2, 0], mask=[1, 1, 0]) == 100.0
  result = transfer.mean_over_splits({1: 77.0, 2: 78.5, 3: 76.7})
  assert result == {'split1': 77.0, 'split2': 78.5, 'split3': 76.7, 'mean': pytest.approx(77.4)}
  with pytest.raises(ValueError, match='missing'):
    transfer.mean_over_splits({1: 77.0, 2: 78.5})


def test_ucf_list_errors_name_file_and_line_and_folders_match_ignoring_case(tmp_path):
  lists = tmp_path / 'ucfTrainTestlist'
  lists.mkdir()
  (lists / 'classInd.txt').write_text('1 ApplyEyeMakeup\n2 HandstandPushups\n')
  (lists / 'testlist01.txt').write_text('handstandpushups/v_HandStandPushups_g01_c01.avi\n')
  (lists / 'trainlist01.txt').write_text('HandstandPushups/v_HandStandPushups_g02_c01.avi 1\n')
  with pytest.raises(ValueError, match=r'trainlist01\.txt:1: index 1 disagrees'):
    ucf_hmdb.ucf101_records(str(tmp_path), 1)
  (lists / 'trainlist01.txt').write_text('HandstandPushups/v_HandStandPushups_g02_c01.avi 2\n')
  splits = ucf_hmdb.ucf101_records(str(tmp_path), 1)
  assert [(r['key'], r['label']) for r in splits['test']] == [('v_HandStandPushups_g01_c01', 1)]
  (lists / 'testlist01.txt').write_text('Juggling/v_Juggling_g01_c01.avi\n')
  with pytest.raises(ValueError, match=r"testlist01\.txt:1: class 'Juggling'"):
    ucf_hmdb.ucf101_records(str(tmp_path), 1)


def test_the_transfer_configs_dataset_names_reach_their_split_builders(tmp_path):
  # What `main` does first with configs/self_supervised.py:probe_ucf101:2: the builder of
  # split 2 (an unprepared one says how to prepare it). Its earlier name,
  # 'ucf101/split2_ss320', stays valid while the storage options agree.
  from avsf_jax.input import pipeline  # noqa: PLC0415
  from configs import self_supervised  # noqa: PLC0415

  config = self_supervised.get_config('probe_ucf101:2')
  config.input.data_dir = str(tmp_path)
  with pytest.raises(FileNotFoundError, match=r'--dataset=ucf101/split2 '):
    pipeline.get_builder(config)
  for name, short_side, expected in (
    ('ucf101/split2', 320, 'split2_ss320'),
    ('ucf101/split2_ss320', 320, 'split2_ss320'),
    ('hmdb51/split3', 256, 'split3_ss256'),
    ('hmdb51', 320, 'split1_ss320'),
  ):
    builder = builders.get_builder(name, str(tmp_path), short_side=short_side)
    assert builder.builder_config.name == expected
  with pytest.raises(ValueError, match='input.frame_short_side=256'):
    builders.get_builder('ucf101/split1_ss320', str(tmp_path), short_side=256)
  with pytest.raises(ValueError, match='expected ucf101/splitN'):
    builders.get_builder('ucf101/test', str(tmp_path))
  with pytest.raises(ValueError, match="'kinetics400' has no variants"):
    builders.get_builder('kinetics400/split1', str(tmp_path))
  with pytest.raises(ValueError, match="unknown dataset 'ucf1'.*activitynet.*hmdb51"):
    builders.get_builder('ucf1', str(tmp_path))
