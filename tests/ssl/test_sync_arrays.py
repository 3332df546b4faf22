"""The in-memory `synthetic_av_sync` data module (input/sync_arrays.py) on a tiny generated set."""

import ml_collections
import numpy as np
import pytest

from avsf_jax import experiment
from avsf_jax.input import sync_arrays
from avsf_jax.input.prepare import synthetic_av_sync as sync
from tests import helpers

TINY = {'pretrain': 1, 'train': 1, 'test': 1}  # clips per class: 36 clips, a few seconds


@pytest.fixture(scope='module')
def config(tmp_path_factory):
  """The demo's ROT + AVS config on a tiny set, cached in a temporary data dir."""
  data_dir = tmp_path_factory.mktemp('sync_data')
  patch = pytest.MonkeyPatch()
  patch.setenv('AVSF_DATA_DIR', str(data_dir))
  config = helpers.load_config('configs/self_supervised.py:demo_avs_rot')
  config.sync_data = {'clips_per_class': TINY, 'rotation': 'one_per_clip'}
  config.input.eval_batch_size = 5
  sync_arrays.load(config)
  yield config
  patch.undo()


def test_the_data_source_dispatches_and_counts_the_splits(config):
  assert experiment.data_source(config) is sync_arrays
  info = sync_arrays.dataset_info(config)
  assert (info.num_train_examples, info.num_eval_examples, info.num_classes) == (12, 12, 12)
  assert info.class_names == sync.CLASS_NAMES
  bad = config.copy_and_resolve_references()
  bad.input.eval_split = 'validation'
  with pytest.raises(ValueError, match='eval_split'):
    sync_arrays.dataset_info(bad)
  with pytest.raises(ValueError, match='sync_data has unknown fields'):
    sync_arrays.settings(ml_collections.ConfigDict({'sync_data': {'rotatoin': 'none'}}))


def test_stored_clips_keep_the_events_of_both_modalities():
  """Every event flashes the square white in the stored 15 fps frames and makes the log-mel's
  loudest frames: each event is within 1.5 stored frames / 2 mel frames of a detection."""
  video, mel = sync_arrays.clip_arrays('blue_medium', 3)
  clip = sync.clip_media('blue_medium', 3)
  assert video.shape == (38, 32, 44, 3) and mel.shape == (250, 40)
  # White pixels exist only in flashed frames (the sky and the square are never white).
  white = (video.min(axis=-1) > 230).sum(axis=(1, 2)) > 0
  flash_times = np.flatnonzero(white) / sync_arrays.STORE_FPS
  for e in clip.events:
    assert np.min(np.abs(flash_times - e)) <= 1.5 / sync_arrays.STORE_FPS + sync.FLASH_FRAMES / 24
  energy = mel.max(axis=1)
  loud = np.flatnonzero(energy > energy.min() + 0.5 * (energy.max() - energy.min()))
  for e in clip.events:
    assert np.min(np.abs(loud / sync_arrays.MEL_RATE - e)) <= 0.02
  # Quiet frames, away from every burst, are the noise floor.
  assert np.median(energy) < energy.min() + 0.2 * (energy.max() - energy.min())


def test_training_batches_rotate_slow_and_fast_alike_and_are_deterministic(config):
  batch = next(sync_arrays.make_train_iterator(config, seed=0, start_step=5))
  again = next(sync_arrays.make_train_iterator(config, seed=0, start_step=5))
  other = next(sync_arrays.make_train_iterator(config, seed=0, start_step=6))
  for key in batch:
    np.testing.assert_array_equal(batch[key], again[key])
  assert not np.array_equal(batch['slow'], other['slow'])
  n = config.input.batch_size
  assert batch['slow'].shape == (n, 4, 32, 32, 3) and batch['fast'].shape == (n, 8, 32, 32, 3)
  assert batch['audio'].shape == batch['audio_negative'].shape == (n, 32, 40, 1)
  assert set(np.unique(batch['rotation'])) <= {0, 1, 2, 3} and len(np.unique(batch['rotation'])) > 1
  # Slow is every other Fast frame of the same rotated window: the same k for both.
  np.testing.assert_array_equal(batch['fast'][:, ::2], batch['slow'])
  # The hard negative comes from the same clip, elsewhere in time.
  assert not np.array_equal(batch['audio'], batch['audio_negative'])
  np.testing.assert_array_equal(batch['audio_negative_is_hard'], np.ones(n))


def test_rotation_label_is_the_applied_quarter_turn(config):
  video, mel, _ = sync_arrays._split(config, 'pretrain')
  common = dict(start=3, left=5, flip=False, negative_start=None)
  upright = sync_arrays._example(video[0], mel[0], config, None, rotation=None, **common)
  for k in range(4):
    turned = sync_arrays._example(video[0], mel[0], config, None, rotation=k, **common)
    np.testing.assert_array_equal(np.rot90(turned['slow'], -k, axes=(1, 2)), upright['slow'])
    np.testing.assert_array_equal(turned['audio'], upright['audio'])  # audio is not rotated
  # Four quarter turns give the clip back exactly.
  x = upright['fast']
  np.testing.assert_array_equal(np.rot90(x, 4, axes=(1, 2)), x)
  # Hard negatives are >= min_negative_shift (0.5 s = 8 stored frames) away.
  rng = np.random.default_rng(0)
  for start in range(video.shape[1] - 16 + 1):
    assert abs(sync_arrays._negative_start(rng, start, video.shape[1] - 16, config) - start) >= 8


def test_eval_batches_pad_and_give_pretext_or_view_batches(config):
  batches = list(sync_arrays.make_eval_iterator(config, multi_view=True))
  assert len(batches) == 3  # 12 test clips in batches of 5
  np.testing.assert_array_equal(np.concatenate([b['_mask'] for b in batches]), [1] * 12 + [0] * 3)
  pretext = batches[0]
  assert pretext['slow'].shape == (5, 4, 32, 32, 3) and set(pretext['rotation']) <= {0, 1, 2, 3}
  views = config.copy_and_resolve_references()
  views.task = 'linear_probe'
  batch = next(sync_arrays.make_eval_iterator(views, multi_view=True))
  assert batch['slow'].shape == (5, 9, 4, 32, 32, 3) and batch['audio'].shape == (5, 9, 32, 40, 1)
  np.testing.assert_array_equal(batch['label'], np.arange(5))  # one clip per class, in order
  single = next(sync_arrays.make_eval_iterator(views, multi_view=False))
  assert single['fast'].shape == (5, 1, 8, 32, 32, 3)
  copies = list(sync_arrays.augmented_copies(views, 'train', 1))
  assert sum(int(b['_mask'].sum()) for b in copies) == 12
