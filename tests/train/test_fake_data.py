"""The fake source keeps the data contract: shapes, dtypes, resumable stream, process shares."""

import itertools

import numpy as np

from avsf_jax.input import fake as fake_data


def test_train_batch_has_contract_keys_shapes_and_dtypes(tiny_config):
  batch = next(fake_data.make_train_iterator(tiny_config, seed=0))
  b = tiny_config.input.batch_size
  assert batch['slow'].shape == (b, 2, 32, 32, 3) and batch['slow'].dtype == np.float32
  assert batch['fast'].shape == (b, 8, 32, 32, 3)
  assert batch['audio'].shape == (b, 32, 16, 1)
  assert batch['audio_negative'].shape == (b, 32, 16, 1)
  assert batch['label'].dtype == np.int32 and batch['label'].shape == (b,)
  for key in ('has_audio', 'audio_negative_is_hard'):
    assert batch[key].shape == (b,)


def test_resuming_at_a_step_reproduces_the_stream(tiny_config):
  full = list(itertools.islice(fake_data.make_train_iterator(tiny_config, seed=3), 4))
  resumed = next(fake_data.make_train_iterator(tiny_config, seed=3, start_step=3))
  for key in full[3]:
    np.testing.assert_array_equal(full[3][key], resumed[key])
  assert not np.array_equal(full[2]['slow'], full[3]['slow'])


def test_process_shares_split_the_global_batch_labels(tiny_config):
  whole = next(fake_data.make_train_iterator(tiny_config, seed=0))
  shares = [
    next(fake_data.make_train_iterator(tiny_config, seed=0, process_index=i, process_count=2))
    for i in range(2)
  ]
  np.testing.assert_array_equal(np.concatenate([s['label'] for s in shares]), whole['label'])


def test_eval_batches_have_views_and_pad_with_mask(tiny_config):
  batches = list(fake_data.make_eval_iterator(tiny_config, multi_view=True))
  assert len(batches) == 2  # 12 examples, batches of 8
  assert batches[0]['slow'].shape == (8, 2, 2, 32, 32, 3)
  np.testing.assert_array_equal(np.concatenate([b['_mask'] for b in batches]), [1] * 12 + [0] * 4)
  single = next(fake_data.make_eval_iterator(tiny_config, multi_view=False))
  assert single['audio'].shape == (8, 1, 32, 16, 1)


def test_nan_injection_hits_the_requested_step(tiny_config):
  tiny_config.fake_data.nan_at_step = 1
  batches = list(itertools.islice(fake_data.make_train_iterator(tiny_config, seed=0), 2))
  assert np.isfinite(batches[0]['slow']).all()
  assert np.isnan(batches[1]['slow']).any()
