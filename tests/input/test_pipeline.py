"""The tf.data pipelines: contract keys, values, determinism, resume, sharding, exact eval."""

import numpy as np
import pytest

from avsf_jax import config_lib
from avsf_jax.input import pipeline


def _config(data_dir, **input_overrides):
  config = config_lib.base_config()
  config.input.update(
    {
      'dataset': 'kinetics400',
      'data_dir': data_dir,
      'num_frames': 2,
      'tau': 4,
      'crop_size': 32,
      'jitter_scales': (36, 44),
      'test_short_side': 40,
      'test_crop_size': 32,
      'num_temporal_views': 2,
      'num_spatial_views': 3,
      'batch_size': 4,
      'eval_batch_size': 4,
      **input_overrides,
    }
  )
  config.model.alpha = 2  # the clip geometry's alpha and the pathways live in the model section
  if 'pathways' in config.input:
    config.model.pathways = tuple(config.input.pathways)
  config.audio.num_frames = 16
  return config


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_train_batches_follow_the_contract(kinetics_prepared):
  config = _config(kinetics_prepared[0])
  (batch,) = _take(pipeline.make_train_iterator(config, seed=0), 1)
  shapes = {k: v.shape for k, v in batch.items()}
  assert shapes == {
    'slow': (4, 2, 32, 32, 3),
    'fast': (4, 4, 32, 32, 3),
    'audio': (4, 16, 80, 1),
    'audio_negative': (4, 16, 80, 1),
    'audio_negative_is_hard': (4,),
    'has_audio': (4,),
    'label': (4,),
  }
  assert batch['label'].dtype == np.int32 and batch['slow'].dtype == np.float32
  np.testing.assert_array_equal(batch['slow'], batch['fast'][:, [0, 3]])  # int(linspace(0, 3, 2))
  pixels = batch['fast'] * 0.225 + 0.45  # undo normalisation: back in [0, 1]
  assert pixels.min() >= -1e-4 and pixels.max() <= 1 + 1e-4 and pixels.std() > 0.1
  # 3 s clips, 0.27 s windows: a hard negative always exists and differs from the positive.
  np.testing.assert_array_equal(batch['audio_negative_is_hard'], 1.0)
  assert np.abs(batch['audio'] - batch['audio_negative']).mean() > 0 or not batch['has_audio'].any()


def test_pathways_select_the_keys(kinetics_prepared):
  config = _config(kinetics_prepared[0], pathways=('slow', 'fast'))
  (batch,) = _take(pipeline.make_train_iterator(config, seed=0), 1)
  assert set(batch) == {'slow', 'fast', 'label'}
  config = _config(kinetics_prepared[0], pathways=('audio',))
  (batch,) = _take(pipeline.make_train_iterator(config, seed=0), 1)
  assert set(batch) == {'audio', 'audio_negative', 'audio_negative_is_hard', 'has_audio', 'label'}


def test_train_stream_is_reproducible_and_resumes_at_any_step(kinetics_prepared):
  config = _config(kinetics_prepared[0], pathways=('slow', 'audio'))
  run = _take(pipeline.make_train_iterator(config, seed=3), 5)
  again = _take(pipeline.make_train_iterator(config, seed=3), 5)
  resumed = _take(pipeline.make_train_iterator(config, seed=3, start_step=3), 2)
  for a, b in zip(run, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  for a, b in zip(run[3:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  other = _take(pipeline.make_train_iterator(config, seed=4), 1)[0]
  assert not np.array_equal(other['slow'], run[0]['slow'])


def test_each_epoch_visits_every_example_once(kinetics_prepared):
  config = _config(kinetics_prepared[0], pathways=('audio',), batch_size=1)
  size = pipeline.dataset_info(config).num_train_examples
  assert size == 11
  batches = _take(pipeline.make_train_iterator(config, seed=0), 2 * size)
  # has_audio + label fingerprint of each visit: each epoch is a permutation of the same multiset.
  first = sorted((int(b['label'][0]), float(b['has_audio'][0])) for b in batches[:size])
  second = sorted((int(b['label'][0]), float(b['has_audio'][0])) for b in batches[size:])
  assert first == second
  assert sum(h for _, h in first) == size - 1  # exactly one video without audio
  silent = [b for b in batches if b['has_audio'][0] == 0]
  assert all(not b['audio'].any() and not b['audio_negative'].any() for b in silent)


def test_process_shards_make_up_the_global_batch(kinetics_prepared):
  config = _config(kinetics_prepared[0], pathways=('slow',))
  whole = _take(pipeline.make_train_iterator(config, seed=1), 3)
  parts = [
    _take(pipeline.make_train_iterator(config, seed=1, process_index=i, process_count=2), 3)
    for i in range(2)
  ]
  for step in range(3):
    for key in whole[step]:
      np.testing.assert_array_equal(
        np.concatenate([parts[0][step][key], parts[1][step][key]]), whole[step][key]
      )
  with pytest.raises(ValueError, match='batch_size'):
    pipeline.make_train_iterator(config, seed=1, process_count=3)


@pytest.mark.parametrize('multi_view, views', [(True, 6), (False, 1)])
def test_eval_sees_every_example_once_with_padding(kinetics_prepared, multi_view, views):
  config = _config(kinetics_prepared[0], eval_batch_size=4)  # 3 validation videos
  seen = []
  for process in range(2):
    batches = list(
      pipeline.make_eval_iterator(
        config, multi_view=multi_view, process_index=process, process_count=2
      )
    )
    assert len(batches) == 1
    (batch,) = batches
    assert batch['slow'].shape == (2, views, 2, 32, 32, 3)
    assert batch['fast'].shape == (2, views, 4, 32, 32, 3)
    assert batch['audio'].shape == (2, views, 16, 80, 1)
    seen += [int(i) for i, m in zip(batch['video_index'], batch['_mask']) if m]
    if multi_view:
      # Views are (temporal, spatial): spatial crops of one temporal clip share their audio.
      np.testing.assert_array_equal(batch['audio'][:, 0], batch['audio'][:, 2])
      assert not np.array_equal(batch['fast'][:, 0], batch['fast'][:, 1])
  assert sorted(seen) == [0, 1, 2]


def test_centre_view_is_the_middle_of_the_multi_view_grid_with_spread_starts(kinetics_prepared):
  # 'spread' starts (delta * i / (V - 1)) put the middle of 3 views at the centre clip; the
  # default 'pyslowfast' starts (delta * i / V) do not (tests/input/test_ops.py).
  config = _config(kinetics_prepared[0], num_temporal_views=3, view_starts='spread')
  multi = next(pipeline.make_eval_iterator(config))
  centre = next(pipeline.make_eval_iterator(config, multi_view=False))
  np.testing.assert_allclose(
    centre['fast'][:, 0], multi['fast'][:, 4], atol=1e-5
  )  # view (t=1, s=1)
  np.testing.assert_allclose(centre['audio'][:, 0], multi['audio'][:, 4], atol=1e-5)


def test_unprepared_dataset_names_the_command(tmp_path):
  config = _config(str(tmp_path))
  with pytest.raises(FileNotFoundError, match='prepare_dataset --dataset=kinetics400'):
    pipeline.dataset_info(config)
