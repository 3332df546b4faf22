"""The Listen to Look data module (`input.ltl_data`) and the bank extraction tool."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from avsf_jax import export
from avsf_jax.input import feature_banks, ltl_data
from avsf_jax.input.prepare import synthetic_untrimmed as su
from avsf_jax.models import ltl_models
from avsf_jax.tools import extract_preview_features


def _clip_config(batch=4, eval_batch=4):
  return ml_collections.ConfigDict(
    {
      'seed': 0,
      'input': {'dataset': ltl_data.CLIPS, 'batch_size': batch, 'eval_batch_size': eval_batch},
      'ltl_data': {'seed': 3, 'train_clips_per_class': 1, 'eval_clips_per_class': 1},
      'audio': {'mean': -8.0, 'std': 2.0},
    }
  )


def test_log_mel_matches_the_preview_audio_front_end():
  from avsf_jax.input import preview_audio  # noqa: PLC0415 - TensorFlow reference

  rng = np.random.default_rng(0)
  segment = (0.1 * rng.standard_normal(16000)).astype(np.float32)
  ours = ltl_data.log_mel(segment)
  reference = preview_audio.log_mel(segment, preview_audio.PreviewAudioConfig()).numpy()
  assert ours.shape == (101, 40)
  np.testing.assert_allclose(ours, reference, atol=2e-4)


def test_clip_batches_are_the_generator_clips_normalised():
  config = _clip_config()
  info = ltl_data.dataset_info(config)
  assert (info.num_train_examples, info.num_eval_examples, info.num_classes) == (8, 8, 8)
  batches = ltl_data.make_train_iterator(config, seed=1)
  first = next(batches)
  assert first['image'].shape == (4, 48, 48, 3) and first['video'].shape == (4, 16, 48, 48, 3)
  assert first['audio'].shape == (4, 101, 40, 1)
  # The first example: its label's trimmed clip, frame 0 normalised as ImageNet expects.
  label = int(first['label'][0])
  frames, audio = su.trimmed_clip(su.CLASS_NAMES[label], ltl_data._clip_seed(3, 0, label, 0))
  np.testing.assert_allclose(
    first['image'][0],
    (frames[0] / 255.0 - ltl_data.IMAGENET_MEAN) / ltl_data.IMAGENET_STD,
    rtol=1e-5,
    atol=1e-5,
  )
  mean, std = -8.0, 2.0
  np.testing.assert_allclose(
    first['audio'][0, ..., 0], (ltl_data.log_mel(audio[:16000]) - mean) / std, rtol=1e-4, atol=1e-4
  )
  # An epoch is a permutation; batch s depends only on (seed, s) (resuming reproduces it).
  second = next(batches)
  assert sorted(np.r_[first['label'], second['label']]) == list(range(8))
  resumed = next(ltl_data.make_train_iterator(config, seed=1, start_step=1))
  np.testing.assert_array_equal(resumed['audio'], second['audio'])
  # Eval: 8 held-out clips in batches of 3 -> 3 batches, the last padded.
  config.input.eval_batch_size = 3
  evals = list(ltl_data.make_eval_iterator(config))
  assert [b['_mask'].tolist() for b in evals] == [[1, 1, 1], [1, 1, 1], [1, 1, 0]]
  assert not np.allclose(evals[0]['video'][0], first['video'][0])


def test_pair_batches_are_the_training_videos_pairs_with_the_video_label():
  """synthetic_ltl_pairs: `pairs_per_video` time stamps of each untrimmed training video, the
  frame and log-mel of `su.pair_media`, labelled with the video; evaluation is on the held-out
  trimmed clips."""
  config = _clip_config(batch=24, eval_batch=8)
  config.input.dataset = ltl_data.PAIRS
  config.ltl_data.train_videos_per_class = 1
  config.ltl_data.pairs_per_video = 3
  info = ltl_data.dataset_info(config)
  assert (info.num_train_examples, info.num_eval_examples) == (24, 8)
  batch = next(ltl_data.make_train_iterator(config, seed=0))
  assert set(batch) == {'image', 'audio', 'label'}
  assert batch['image'].shape == (24, 48, 48, 3) and batch['audio'].shape == (24, 101, 40, 1)
  # One epoch holds every pair once: 3 of each class.
  assert np.bincount(batch['label'], minlength=8).tolist() == [3] * 8
  # Video 5's pairs by hand (the videos are class-major: video 5 is class 5's first).
  name, video_seed = su.video_list('train', 1, 3)[5]
  video = su.video(name, video_seed)
  times = ltl_data.pair_indices(3, 5, 80, 3)
  frames, audio = su.pair_media(video)
  pairs = ltl_data.video_pairs(3, 1, 3, (-8.0, 2.0))
  assert pairs['label'][15:18].tolist() == [5, 5, 5]
  np.testing.assert_allclose(
    pairs['image'][15:18], ltl_data.normalise_frames(frames[times]), rtol=1e-6
  )
  np.testing.assert_allclose(
    pairs['audio'][15:18, ..., 0], (ltl_data.log_mel(audio[times]) + 8.0) / 2.0, atol=1e-4
  )
  first, end = su.segment_pairs(video.segment_start_s, video.segment_end_s, su.pair_times())
  assert pairs['in_segment'][15:18].tolist() == [first <= t < end for t in times]
  evals = list(ltl_data.make_eval_iterator(config))
  clips = ltl_data.clips(3, 'eval', 1, 1, (-8.0, 2.0))
  np.testing.assert_array_equal(evals[0]['image'], clips['image'])
  # with_clips: the trimmed training clips' pairs join them (8 more, their clip labels).
  config.ltl_data.with_clips = True
  config.input.batch_size = 32
  assert ltl_data.dataset_info(config).num_train_examples == 32
  mixed = next(ltl_data.make_train_iterator(config, seed=0))
  assert np.bincount(mixed['label'], minlength=8).tolist() == [4] * 8
  train_clips = ltl_data.clips(3, 'train', 1, 1, (-8.0, 2.0))
  for image, audio, label in zip(train_clips['image'], train_clips['audio'], train_clips['label']):
    same = [
      i
      for i in range(32)
      if np.array_equal(mixed['image'][i], image) and np.array_equal(mixed['audio'][i], audio)
    ]
    assert len(same) == 1 and mixed['label'][same[0]] == label


def test_pair_indices_are_distinct_sorted_and_checked():
  picks = ltl_data.pair_indices(0, 7, 80, 16)
  assert len(set(picks.tolist())) == 16 and picks.tolist() == sorted(picks.tolist())
  assert 0 <= picks.min() and picks.max() < 80
  np.testing.assert_array_equal(picks, ltl_data.pair_indices(0, 7, 80, 16))
  assert not np.array_equal(picks, ltl_data.pair_indices(0, 8, 80, 16))
  with pytest.raises(ValueError, match='pairs_per_video=81'):
    ltl_data.pair_indices(0, 0, 80, 81)


def _write_banks(tmp_path, n_videos=6, length=10):
  rng = np.random.default_rng(0)
  image = [rng.standard_normal((length, 3)).astype(np.float32) for _ in range(n_videos)]
  audio = [rng.standard_normal((length, 2)).astype(np.float32) for _ in range(n_videos)]
  labels = np.arange(n_videos) % 8
  segments = [(2, 5)] * n_videos
  for split in ('train', 'val'):
    feature_banks.save_banks(str(tmp_path / f'{split}.npz'), image, audio, labels, segments)
  return image


def test_bank_batches_crop_to_the_configured_length_and_shift_segments(tmp_path):
  image = _write_banks(tmp_path)
  config = ml_collections.ConfigDict(
    {
      'seed': 0,
      'input': {'dataset': ltl_data.BANKS, 'batch_size': 2, 'eval_batch_size': 4},
      'model': {'num_steps': 3},
      'skim': {'banks_dir': str(tmp_path), 'length': 10, 'min_len': 6, 'max_len': 6},
    }
  )
  assert ltl_data.dataset_info(config).num_train_examples == 6
  batch = next(ltl_data.make_train_iterator(config, seed=0))
  assert batch['image'].shape == (2, 10, 3) and batch['mask'].sum(1).tolist() == [6, 6]
  i, offset = batch['video_index'][0], batch['offset'][0]
  np.testing.assert_array_equal(batch['image'][0, :6], image[i][offset : offset + 6])
  np.testing.assert_array_equal(batch['segment'][0], np.asarray([2, 5]) - offset)
  evals = list(ltl_data.make_eval_iterator(config))
  assert [b['_mask'].tolist() for b in evals] == [[1, 1, 1, 1], [1, 1, 0, 0]]
  assert np.all(evals[0]['start_index'] < evals[0]['length'])
  with pytest.raises(ValueError, match='skim.banks_dir'):
    ltl_data.dataset_info(
      ml_collections.ConfigDict({'input': {'dataset': ltl_data.BANKS}, 'skim': {'banks_dir': ''}})
    )


def test_long_validation_videos_pad_to_the_configured_buckets(tmp_path):
  rng = np.random.default_rng(1)
  lengths = [5, 23, 9]
  image = [rng.standard_normal((n, 3)).astype(np.float32) for n in lengths]
  audio = [rng.standard_normal((n, 2)).astype(np.float32) for n in lengths]
  for split in ('train', 'val'):
    feature_banks.save_banks(str(tmp_path / f'{split}.npz'), image, audio, [0, 1, 2])
  skim = {'banks_dir': str(tmp_path), 'length': 10, 'min_len': 6, 'max_len': 6}
  config = ml_collections.ConfigDict(
    {
      'seed': 0,
      'input': {'dataset': ltl_data.BANKS, 'batch_size': 2, 'eval_batch_size': 1},
      'model': {'num_steps': 3},
      'skim': {**skim, 'buckets': (32, 16)},
    }
  )
  assert ltl_data.bank_buckets(config.skim) == (10, 16, 32)
  evals = list(ltl_data.make_eval_iterator(config))
  # Each video alone: 5 -> 10, 23 -> 32, 9 -> 10 pairs, its banks whole and the rest masked.
  assert [b['image'].shape[1] for b in evals] == [10, 32, 10]
  np.testing.assert_array_equal(evals[1]['image'][0, :23], image[1])
  assert evals[1]['mask'][0].tolist() == [1.0] * 23 + [0.0] * 9
  assert next(ltl_data.make_train_iterator(config, seed=0))['image'].shape == (2, 10, 3)
  config.skim.buckets = ()
  with pytest.raises(ValueError, match=r'batch length 23 exceeds .*config\.skim\.buckets'):
    list(ltl_data.make_eval_iterator(config))


@pytest.mark.parametrize(
  'model, picks', [({'num_picks': 4}, 4), ({'hidden': 8}, 1), ({'num_steps': 3}, 3)]
)
def test_bank_batches_serve_the_baselines_models(tmp_path, model, picks):
  """NON-RECURRENT (num_picks) and LSTM (no picks) configs batch like Ours: videos shorter
  than the picks repeat their last pair up to them."""
  _write_banks(tmp_path, length=2)
  config = ml_collections.ConfigDict(
    {
      'seed': 0,
      'input': {'dataset': ltl_data.BANKS, 'batch_size': 2, 'eval_batch_size': 2},
      'model': model,
      'skim': {'banks_dir': str(tmp_path), 'length': 4, 'min_len': 2, 'max_len': 2},
    }
  )
  assert ltl_data.num_picks(config.model) == picks
  batch = next(ltl_data.make_train_iterator(config, seed=0))
  assert batch['image'].shape == (2, 4, 3)
  assert batch['mask'].sum(1).tolist() == [max(picks, 2)] * 2


def test_log_mel_on_jax_numpy_equals_numpy():
  """The extractor's jitted log-mel (XLA's FFT) against the numpy one, on 3 segments."""
  rng = np.random.default_rng(1)
  segments = (0.2 * rng.standard_normal((3, 16000))).astype(np.float32)
  segments[1] *= 1e-3  # a quiet segment: small powers, where log is steep
  ours = np.asarray(jax.jit(lambda x: ltl_data.log_mel(x, xp=jnp))(segments))
  reference = ltl_data.log_mel(segments)
  assert ours.shape == reference.shape == (3, 101, 40)
  np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4)


@pytest.mark.slow  # builds, exports and runs a student on 8 short videos
def test_extraction_tool_writes_resumable_sharded_banks(tmp_path):
  student_config = {
    'name': 'imgaud',
    'num_classes': 8,
    'embed_dim': 4,
    'fusion_hidden': 8,
    'widths': (4, 4, 4, 6),
    'stage_blocks': (1, 1, 1, 1),
  }
  student = ltl_models.build(student_config)
  variables = jax.jit(functools.partial(student.init, train=False))(
    jax.random.key(0), {'image': np.zeros((1, 48, 48, 3)), 'audio': np.zeros((1, 101, 40, 1))}
  )
  path = export.write(
    tmp_path / 'student',
    apply_fn=lambda v, x: student.apply(v, x, train=False)[0],
    variables=variables,
    model_config=student_config,
    class_names=list(su.CLASS_NAMES),
    input_spec={'image': [48, 48, 3], 'audio': [101, 40, 1]},
    preprocessing={'audio_mean': -8.0, 'audio_std': 2.0},
    platforms=('cpu',),
  )
  out = tmp_path / 'banks'
  args = [
    f'--student_export={path}',
    f'--out={out}',
    '--splits=val',
    '--val_per_class=1',
    '--duration_s=6',
    '--hop_s=1.0',
  ]
  # Two shards: after the first, the split is incomplete; the second merges.
  first = extract_preview_features.main(args + ['--process_index=0', '--process_count=2'])
  assert first == {'val': None} and len(list((out / 'parts' / 'val').iterdir())) == 4
  second = extract_preview_features.main(args + ['--process_index=1', '--process_count=2'])
  banks = feature_banks.load_banks(second['val'])
  assert len(banks['image']) == 8 and banks['image'][0].shape == (6, 6)
  assert banks['fused'][0].shape == (6, 4)
  np.testing.assert_array_equal(banks['labels'], np.arange(8))
  # Video 0 by hand: its pairs through the student.
  name, seed = su.video_list('val', 1, 0)[0]
  video = su.video(name, seed, 6.0)
  inputs = extract_preview_features.pair_inputs(video, 1.0, (-8.0, 2.0))
  _, aux = jax.jit(functools.partial(student.apply, train=False))(variables, inputs)
  np.testing.assert_allclose(banks['image'][0], aux['image'], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(banks['audio'][0], aux['audio'], rtol=1e-5, atol=1e-5)
  times = su.pair_times(6.0, 1.0)
  assert tuple(banks['segments'][0]) == su.segment_pairs(
    video.segment_start_s, video.segment_end_s, times
  )
  # Resumable: a rerun recomputes nothing (the parts' files are left untouched).
  stamp = (out / 'parts' / 'val' / '00000.npz').stat().st_mtime_ns
  extract_preview_features.main(args)
  assert (out / 'parts' / 'val' / '00000.npz').stat().st_mtime_ns == stamp
