"""Charades (multi-label) and EPIC-KITCHENS (verb, noun) built from tiny folders, through the pipeline."""

import numpy as np
import pytest

from avsf_jax import config_lib
from avsf_jax.input import pipeline
from avsf_jax.input.prepare import builders
from tests.input.media_helpers import write_clip


def _config(dataset, data_dir):
  config = config_lib.base_config()
  config.input.update(
    {
      'dataset': dataset,
      'data_dir': data_dir,
      'num_frames': 2,
      'tau': 4,
      'crop_size': 32,
      'jitter_scales': (36, 40),
      'test_short_side': 32,
      'test_crop_size': 32,
      'batch_size': 2,
      'eval_batch_size': 2,
    }
  )
  config.model.alpha = 2  # the clip geometry's alpha lives in the model section
  config.audio.num_frames = 8
  return config


@pytest.fixture(scope='module')
def charades(tmp_path_factory):
  raw = tmp_path_factory.mktemp('charades_raw')
  (raw / 'Charades_v1_480').mkdir()
  for i, vid in enumerate(('AAAA1', 'BBBB2', 'CCCC3')):
    write_clip(str(raw / 'Charades_v1_480' / f'{vid}.mp4'), seed=i, seconds=1.0)
  (raw / 'Charades_v1_train.csv').write_text(
    'id,subject,scene,actions,length\n'
    'AAAA1,s,kitchen,c005 0.00 0.50;c156 0.20 1.00,1\n'
    'BBBB2,s,hall,c005 0.10 0.90,1\n'
  )
  (raw / 'Charades_v1_classes.txt').write_text(
    ''.join(f'c{i:03d} Action number {i}\n' for i in range(157))
  )
  (raw / 'Charades_v1_test.csv').write_text(
    'id,subject,scene,actions,length\nCCCC3,s,hall,c000 0.0 1.0,1\n'
  )
  data_dir = str(tmp_path_factory.mktemp('charades_data'))
  builders.build(builders.get_builder('charades', data_dir, num_workers=2), str(raw))
  return data_dir


@pytest.mark.slow
def test_charades_labels_are_multi_hot(charades):
  config = _config('charades', charades)
  info = pipeline.dataset_info(config)
  assert info.class_names[156] == 'Action number 156'
  assert (info.num_train_examples, info.num_eval_examples, info.num_classes, info.multi_label) == (
    2,
    1,
    157,
    True,
  )
  batch = next(pipeline.make_train_iterator(config, seed=0))
  assert batch['label'].dtype == np.float32 and batch['label'].shape == (2, 157)
  rows = sorted(tuple(np.flatnonzero(row)) for row in batch['label'])
  assert rows == [(5,), (5, 156)]
  (evaluated,) = list(pipeline.make_eval_iterator(config, multi_view=False))
  np.testing.assert_array_equal(evaluated['_mask'], [1, 0])
  assert evaluated['label'][0, 0] == 1 and evaluated['label'][0].sum() == 1


@pytest.mark.slow
def test_epic_segments_carry_verb_and_noun(tmp_path):
  raw = tmp_path / 'raw'
  (raw / 'P01' / 'videos').mkdir(parents=True)
  write_clip(str(raw / 'P01' / 'videos' / 'P01_01.MP4'), seconds=3.0)
  header = (
    'narration_id,participant_id,video_id,start_timestamp,stop_timestamp,verb_class,noun_class\n'
  )
  (raw / 'EPIC_100_train.csv').write_text(
    header
    + 'P01_01_0,P01,P01_01,00:00:00.00,00:00:01.00,3,17\nP01_01_1,P01,P01_01,00:00:01.00,00:00:02.50,9,250\n'
  )
  (raw / 'EPIC_100_validation.csv').write_text(
    header + 'P01_01_2,P01,P01_01,00:00:02.00,00:00:09.00,1,2\n'
  )
  data_dir = str(tmp_path / 'data')
  builder = builders.get_builder('epic_kitchens', data_dir, num_workers=2)
  builders.build(builder, str(raw))
  frames = {
    e['video_id'].decode() + str(e['label_verb']): e['num_frames']
    for e in builder.as_data_source('train')
  }
  assert frames == {'P01_013': 25, 'P01_019': 38}  # 1 s and 1.5 s at 25 fps
  config = _config('epic_kitchens', data_dir)
  info = pipeline.dataset_info(config)
  assert info.num_classes == {'verb': 97, 'noun': 300}
  assert info.class_names['verb'][:2] == ['verb_0', 'verb_1']  # no class CSVs in this folder
  batch = next(pipeline.make_train_iterator(config, seed=0))
  assert sorted(zip(batch['label_verb'].tolist(), batch['label_noun'].tolist())) == [
    (3, 17),
    (9, 250),
  ]
  assert 'label' not in batch
