"""UCF-101 and ActivityNet v1.3 from their official layouts: records, labels, errors, one build."""

import json

import numpy as np
import pytest

from avsf_jax.input.prepare import builders, ucf101_activitynet
from tests.input.media_helpers import write_clip

UCF_CLASSES = ('ApplyEyeMakeup', 'HandstandPushups', 'YoYo')


def _ucf_layout(root, train_lines, test_lines, videos=()):
  lists = root / 'ucfTrainTestlist'
  lists.mkdir(parents=True)
  (lists / 'classInd.txt').write_text(''.join(f'{i} {c}\n' for i, c in enumerate(UCF_CLASSES, 1)))
  for k in (1, 2, 3):
    (lists / f'trainlist0{k}.txt').write_text('\n'.join(train_lines) + '\n')
    (lists / f'testlist0{k}.txt').write_text('\n'.join(test_lines) + '\n')
  for relative in videos:
    path = root / 'UCF-101' / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'')
  return str(root)


def test_ucf101_records_follow_the_split_lists(tmp_path):
  manual = _ucf_layout(
    tmp_path,
    ['HandstandPushups/v_HandStandPushups_g08_c01.avi 2', 'YoYo/v_YoYo_g09_c02.avi 3'],
    ['ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi'],
    videos=['HandstandPushups/v_HandStandPushups_g08_c01.avi', 'YoYo/v_YoYo_g09_c02.avi'],
  )
  assert ucf101_activitynet.ucf101_class_names(manual) == list(UCF_CLASSES)
  splits = ucf101_activitynet.ucf101_records(manual, split_index=2)
  assert [(r['key'], r['label']) for r in splits['train']] == [
    ('v_HandStandPushups_g08_c01', 1),
    ('v_YoYo_g09_c02', 2),
  ]
  assert splits['train'][0]['path'].endswith(
    'UCF-101/HandstandPushups/v_HandStandPushups_g08_c01.avi'
  )
  # The test-list video is absent: kept with path None so that the build reports it.
  (missing,) = splits['validation']
  assert missing['label'] == 0 and missing['path'] is None


def test_ucf101_bad_lists_name_file_and_line(tmp_path):
  manual = _ucf_layout(tmp_path / 'a', ['YoYo/v_YoYo_g09_c02.avi 1'], [])
  with pytest.raises(ValueError, match=r'trainlist01\.txt:1: index 1 disagrees'):
    ucf101_activitynet.ucf101_records(manual)
  manual = _ucf_layout(tmp_path / 'b', [], ['Juggling/v_Juggling_g01_c01.avi'])
  with pytest.raises(ValueError, match=r"testlist01\.txt:1: class folder 'Juggling'"):
    ucf101_activitynet.ucf101_records(manual)
  with pytest.raises(FileNotFoundError, match='classInd.txt'):
    ucf101_activitynet.ucf101_records(str(tmp_path / 'nothing'))


def _activitynet_layout(root, database, videos=()):
  taxonomy = [
    {'nodeId': 0, 'nodeName': 'Root', 'parentId': None, 'parentName': None},
    {'nodeId': 1, 'nodeName': 'Sports', 'parentId': 0, 'parentName': 'Root'},
    {'nodeId': 2, 'nodeName': 'Long jump', 'parentId': 1, 'parentName': 'Sports'},
    {'nodeId': 3, 'nodeName': 'Archery', 'parentId': 1, 'parentName': 'Sports'},
    {'nodeId': 4, 'nodeName': 'Making tea', 'parentId': 0, 'parentName': 'Root'},
  ]
  root.mkdir(parents=True, exist_ok=True)
  data = {'version': 'VERSION 1.3', 'taxonomy': taxonomy, 'database': database}
  (root / 'activity_net.v1-3.min.json').write_text(json.dumps(data))
  for name in videos:
    (root / name).write_bytes(b'')
  return str(root)


def _entry(subset, *annotations):
  return {
    'subset': subset,
    'duration': 100.0,
    'annotations': [{'segment': [s, e], 'label': label} for label, s, e in annotations],
  }


def test_activitynet_records_classes_and_video_labels(tmp_path):
  manual = _activitynet_layout(
    tmp_path,
    {
      'aaaaaaaaaaa': _entry('training', ('Archery', 1.0, 5.0), ('Long jump', 10.0, 30.0)),
      'bbbbbbbbbbb': _entry('validation', ('Making tea', 0.0, 50.5)),
      'ccccccccccc': _entry('testing'),
      'ddddddddddd': _entry('training'),
    },
    videos=['v_aaaaaaaaaaa.mp4', 'bbbbbbbbbbb.mkv'],
  )
  assert ucf101_activitynet.activitynet_class_names(manual) == [
    'Archery',
    'Long jump',
    'Making tea',
  ]
  splits = ucf101_activitynet.activitynet_records(manual)
  train = {r['key']: r for r in splits['train']}
  assert sorted(train) == ['aaaaaaaaaaa', 'ddddddddddd']
  # 20 s of 'Long jump' (1) outweigh 4 s of 'Archery' (0).
  assert train['aaaaaaaaaaa']['label'] == 1
  assert train['aaaaaaaaaaa']['segments'] == [(0, 1.0, 5.0), (1, 10.0, 30.0)]
  assert train['aaaaaaaaaaa']['path'].endswith('v_aaaaaaaaaaa.mp4')
  assert train['ddddddddddd']['label'] == -1 and train['ddddddddddd']['path'] is None
  (val,) = splits['validation']
  assert (val['label'], val['start'], val['end']) == (2, None, None)
  assert val['path'].endswith('bbbbbbbbbbb.mkv')


def test_activitynet_rejects_labels_outside_the_taxonomy(tmp_path):
  manual = _activitynet_layout(tmp_path, {'aaaaaaaaaaa': _entry('training', ('Sports', 0, 1))})
  with pytest.raises(ValueError, match="aaaaaaaaaaa has label 'Sports'"):
    ucf101_activitynet.activitynet_records(manual)


def test_ucf101_build_keeps_silent_videos_and_reports_missing_ones(tmp_path):
  raw = tmp_path / 'raw'
  manual = _ucf_layout(
    raw,
    ['YoYo/v_YoYo_g09_c02.avi 3', 'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1'],
    ['YoYo/v_YoYo_g01_c01.avi'],
  )
  (raw / 'UCF-101' / 'YoYo').mkdir(parents=True)
  write_clip(str(raw / 'UCF-101' / 'YoYo' / 'v_YoYo_g09_c02.avi'), seconds=0.5, audio=False)
  write_clip(str(raw / 'UCF-101' / 'YoYo' / 'v_YoYo_g01_c01.avi'), seconds=0.5)
  builder = ucf101_activitynet.Ucf101(data_dir=str(tmp_path / 'data'), num_workers=1)
  skipped = builders.build(builder, manual)
  with open(skipped) as f:
    reasons = [json.loads(line) for line in f]
  assert [(s['key'], s['reason']) for s in reasons] == [
    ('v_ApplyEyeMakeup_g08_c01', 'missing_file')
  ]
  (train,) = list(builder.as_data_source('train'))
  (val,) = list(builder.as_data_source('validation'))
  assert (train['label'], bool(train['has_audio'])) == (2, False)
  assert (val['label'], bool(val['has_audio'])) == (2, True)
  assert np.asarray(val['audio']).size > 0
  assert builder.class_names() == list(UCF_CLASSES)
