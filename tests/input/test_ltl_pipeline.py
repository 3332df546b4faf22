"""Listen to Look's tf.data clips (`input.ltl_pipeline`): values against numpy re-derivations."""

import numpy as np
import pytest
import tensorflow as tf

from avsf_jax import config_lib, experiment
from avsf_jax.input import ltl_data, ltl_pipeline, ops, pipeline
from avsf_jax.input.prepare import builders, synthetic
from avsf_jax.tasks import clip_finetune
from tests import helpers
from tests.input.media_helpers import SAMPLE_RATE

CLASSES = ('abseiling', 'air drumming', 'applauding')
# (split, class index, fps, seconds, audio); the audio is noise whose loudness changes every
# 0.1 s, so a log-mel of the wrong second does not match.
VIDEOS = (
  ('train', 0, 25, 3.0, True),
  ('train', 1, 30, 2.5, True),
  ('train', 2, 25, 3.0, False),
  ('train', 1, 25, 2.0, True),
  ('validate', 2, 25, 3.0, True),
  ('validate', 0, 30, 2.5, True),
  ('validate', 1, 25, 3.0, False),
)
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


@pytest.fixture(scope='module')
def ltl_dataset(tmp_path_factory):
  """A kinetics400-style prepared dataset of the videos above; returns its data_dir."""
  raw = tmp_path_factory.mktemp('ltl_raw')
  rows = {'train': [], 'validate': []}
  for i, (split, label, fps, seconds, with_audio) in enumerate(VIDEOS):
    rng = np.random.default_rng(i)
    n = int(seconds * fps)
    first = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    frames = np.stack([np.roll(first, 3 * j, axis=1) for j in range(n)])
    audio = None
    if with_audio:
      loudness = rng.uniform(0.02, 0.5, int(seconds * 10) + 1)
      envelope = np.repeat(loudness, SAMPLE_RATE // 10)[: int(seconds * SAMPLE_RATE)]
      audio = (envelope * rng.uniform(-1, 1, envelope.shape))[None].astype(np.float32)
    vid = f'ltl{i:08d}'
    folder = raw / split / CLASSES[label]
    folder.mkdir(parents=True, exist_ok=True)
    synthetic.write_video(str(folder / f'{vid}_000000_{int(seconds):06d}.mp4'), frames, fps, audio)
    rows[split].append(f'{CLASSES[label]},{vid},0,{seconds},{split}')
  for split, lines in rows.items():
    (raw / f'{split}.csv').write_text(
      'label,youtube_id,time_start,time_end,split\n' + '\n'.join(lines) + '\n'
    )
  data_dir = str(tmp_path_factory.mktemp('ltl_data'))
  builders.build(builders.get_builder('kinetics400', data_dir, num_workers=1), str(raw))
  return data_dir


def _config(data_dir, keys=ltl_pipeline.KEYS, **ltl_clips):
  config = config_lib.base_config()
  config.input.update(
    {
      'source': 'ltl_clips',
      'dataset': 'kinetics400',
      'data_dir': data_dir,
      'num_frames': 4,
      'tau': 2,
      'target_fps': 30.0,
      'crop_size': 32,
      'jitter_scales': (36, 44),
      'test_short_side': 40,
      'test_crop_size': 32,
      'num_temporal_views': 1,
      'num_spatial_views': 1,
      'mean': MEAN,
      'std': STD,
      'batch_size': 4,
      'eval_batch_size': 4,
    }
  )
  config.audio.update({'num_frames': 101, 'num_mel_bins': 40, 'mean': -5.0, 'std': 3.0})
  config.ltl_clips = {'keys': tuple(keys), **ltl_clips}
  return config


def _pixels(x, mean, std):
  """Undo a (pixel / 255 - mean) / std normalisation."""
  return (x * np.asarray(std) + np.asarray(mean)) * 255.0


def _stored(data_dir, split):
  """The stored examples of a split, parsed eagerly (audio int16, fps, frame count, label)."""
  config = _config(data_dir)
  builder = pipeline.get_builder(config)
  reader = pipeline._Reader(builder, split)
  return [
    {k: v.numpy() for k, v in reader.parse(tf.constant(i, tf.int64)).items()}
    for i in range(reader.size)
  ]


def _numpy_log_mel(example, first_frame, config):
  """The preview log-mel of 1 s from the clip start, re-derived from the stored samples."""
  if not example['has_audio']:
    return np.zeros((101, 40, 1), np.float32)
  start = int(round(first_frame / float(example['fps']) * 16000))
  samples = np.zeros(16000, np.float32)
  audio = example['audio'].astype(np.float32) / 32768.0
  part = audio[max(start, 0) : start + 16000]
  samples[: len(part)] = part
  return ltl_data.normalise_log_mel(
    ltl_data.log_mel(samples), (config.audio.mean, config.audio.std)
  )


@pytest.mark.slow
def test_eval_clip_image_audio_and_labels_match_a_numpy_derivation(ltl_dataset):
  config = _config(ltl_dataset)
  (batch,) = list(ltl_pipeline.make_eval_iterator(config))
  assert {k: v.shape for k, v in batch.items()} == {
    'video': (4, 4, 32, 32, 3),
    'image': (4, 32, 32, 3),
    'audio': (4, 101, 40, 1),
    'has_audio': (4,),
    'label': (4,),
    'video_index': (4,),
    '_mask': (4,),
  }
  np.testing.assert_array_equal(batch['_mask'], [1, 1, 1, 0])  # 3 videos, one padding row
  stored = _stored(ltl_dataset, 'validation')
  np.testing.assert_array_equal(batch['label'][:3], [e['label'] for e in stored])
  # The image is the clip's first frame, the same centre crop, each with its own normalisation.
  np.testing.assert_allclose(
    _pixels(batch['image'], ltl_pipeline.IMAGENET_MEAN, ltl_pipeline.IMAGENET_STD),
    _pixels(batch['video'][:, 0], MEAN, STD),
    atol=1e-3,
  )
  assert np.abs(batch['video'][:, 0] - batch['video'][:, 1]).max() > 0.1  # the frames move
  for row, example in enumerate(stored):
    # The centre clip: 4 frames x tau 2 at 30 fps span 8 * fps / 30 source frames.
    clip_size = 8 * float(example['fps']) / 30.0
    first = int(max(float(example['num_frames']) - clip_size, 0.0) / 2.0)
    expected = _numpy_log_mel(example, first, config)
    np.testing.assert_allclose(batch['audio'][row], expected, atol=2e-3)
    assert batch['has_audio'][row] == float(example['has_audio'])
    # A second earlier or later does not match: the comparison can fail.
    if example['has_audio']:
      shifted = _numpy_log_mel(example, first + int(example['fps']) // 2, config)
      assert np.abs(batch['audio'][row] - shifted).max() > 0.1
  (silent,) = [row for row, e in enumerate(stored) if not e['has_audio']]
  assert not batch['audio'][silent].any()  # the video without audio: zeros


def test_eval_clip_holds_the_centre_clips_frames(ltl_dataset):
  config = _config(ltl_dataset, keys=('video',))
  (batch,) = list(ltl_pipeline.make_eval_iterator(config))
  builder = pipeline.get_builder(config)
  reader = pipeline._Reader(builder, 'validation')
  for row, example in enumerate(_stored(ltl_dataset, 'validation')):
    count, fps = int(example['num_frames']), float(example['fps'])
    jpegs = reader.read_frames(example['frame_offset'] + np.arange(count))
    frames = tf.stack([tf.io.decode_jpeg(j, channels=3) for j in jpegs])
    crops = ops.spatial_crops(frames, short_side=40, crop_size=32, num_crops=1)[0]
    every = (np.round(crops.numpy()) / 255.0 - MEAN) / STD
    # Which stored frame each clip frame is (the content moves 3 px a frame).
    found = [
      int(np.argmin(np.abs(every - frame).mean(axis=(1, 2, 3)))) for frame in batch['video'][row]
    ]
    clip_size = 8 * fps / 30.0
    start = max(count - clip_size, 0.0) / 2.0
    expected = np.linspace(start, start + clip_size - 1.0, 4).astype(np.int32)
    assert found == expected.tolist()


def test_training_image_is_the_clips_first_frame_and_the_stream_is_deterministic(ltl_dataset):
  config = _config(ltl_dataset)
  run = [next(it) for it in [ltl_pipeline.make_train_iterator(config, seed=5)] for _ in range(3)]
  again = list(zip(range(3), ltl_pipeline.make_train_iterator(config, seed=5)))
  resumed = next(ltl_pipeline.make_train_iterator(config, seed=5, start_step=2))
  other = next(ltl_pipeline.make_train_iterator(config, seed=6))
  for a, (_, b) in zip(run, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  for key in run[2]:
    np.testing.assert_array_equal(run[2][key], resumed[key])
  assert np.abs(run[0]['video'] - other['video']).max() > 0.1
  stored = _stored(ltl_dataset, 'train')
  labels = sorted(e['label'] for e in stored)
  for batch in run:
    np.testing.assert_allclose(
      _pixels(batch['image'], ltl_pipeline.IMAGENET_MEAN, ltl_pipeline.IMAGENET_STD),
      _pixels(batch['video'][:, 0], MEAN, STD),
      atol=1e-3,
    )
    silent = batch['has_audio'] == 0
    assert not batch['audio'][silent].any() and batch['audio'][~silent].std() > 0.1
  # The first epoch (4 videos, one batch) is each training video once.
  assert sorted(run[0]['label'].tolist()) == labels


def test_student_keys_decode_only_the_first_frame_and_give_the_same_pairs(ltl_dataset):
  full = next(ltl_pipeline.make_train_iterator(_config(ltl_dataset), seed=1))
  student = next(
    ltl_pipeline.make_train_iterator(_config(ltl_dataset, keys=('image', 'audio')), seed=1)
  )
  assert set(student) == {'image', 'audio', 'has_audio', 'label'}
  for key in student:
    np.testing.assert_allclose(student[key], full[key], atol=1e-5)
  (teacher,) = list(ltl_pipeline.make_eval_iterator(_config(ltl_dataset, keys=('video',))))
  assert set(teacher) == {'video', 'label', 'video_index', '_mask'}


def test_centre_anchor_centres_the_second_on_the_clip(ltl_dataset):
  config = _config(ltl_dataset, keys=('audio',), audio_anchor='centre')
  config.input.tau = 8  # a 32 / 30-s clip: the segment starts 1 / 30 s after the clip
  (batch,) = list(ltl_pipeline.make_eval_iterator(config))
  example = _stored(ltl_dataset, 'validation')[0]
  first = int(max(float(example['num_frames']) - 32 * float(example['fps']) / 30.0, 0.0) / 2.0)
  start = first / float(example['fps']) + (32 / 30.0 - 1.0) / 2.0
  expected = _numpy_log_mel(example, start * float(example['fps']), config)
  np.testing.assert_allclose(batch['audio'][0], expected, atol=2e-3)


@pytest.mark.parametrize(
  ('change', 'message'),
  [
    (
      lambda c: c.ltl_clips.update({'frame_stride': 2}),
      "config.ltl_clips has unknown fields ['frame_stride']",
    ),
    (lambda c: c.ltl_clips.update({'keys': ('image', 'slow')}), 'config.ltl_clips.keys'),
    (lambda c: c.ltl_clips.update({'audio_anchor': 'end'}), 'config.ltl_clips.audio_anchor'),
    (lambda c: c.input.update({'test_crop_size': 48}), 'config.input.test_crop_size=48'),
    (lambda c: c.audio.update({'num_frames': 128}), 'config.audio.num_frames=128'),
    (lambda c: c.input.update({'num_spatial_views': 3}), 'input.num_spatial_views=3'),
    (lambda c: c.input.update({'source': 'clips'}), "config.input.source='clips'"),
  ],
)
def test_a_bad_config_is_one_error_naming_the_field(change, message):
  config = _config('/nonexistent')
  change(config)
  with pytest.raises(ValueError, match=message.replace('[', r'\[').replace(']', r'\]')):
    experiment.data_source(config).dataset_info(config)


def test_paper_variants_decode_exactly_their_models_inputs():
  for variant in ('teacher', 'distillation', 'distillation_image', 'distillation_audio'):
    config = helpers.load_config(f'configs/listen_to_look.py:{variant}')
    expected = set(clip_finetune.clip_inputs(config))
    if config.task == 'distillation':
      expected |= set(clip_finetune.clip_inputs(config, config.distill.teacher))
    assert set(config.ltl_clips['keys']) == expected, variant
    assert experiment.data_source(config) is ltl_pipeline
  for variant in ('finetune', 'undistilled', 'image_undistilled', 'audio_undistilled'):
    config = helpers.load_config(f'configs/listen_to_look.py:{variant}')
    assert set(config.ltl_clips['keys']) == set(clip_finetune.clip_inputs(config)), variant
    assert experiment.data_source(config) is ltl_pipeline
  assert (
    experiment.data_source(helpers.load_config('configs/listen_to_look.py:demo_finetune'))
    is ltl_data
  )


def test_a_student_finetune_experiment_reads_its_batches_from_this_source(ltl_dataset):
  config = helpers.load_config('configs/listen_to_look.py:finetune')
  config.input.update(
    {
      'dataset': 'kinetics400',
      'eval_split': 'validation',  # the paper variant's is UCF-101's 'test'
      'data_dir': ltl_dataset,
      'crop_size': 32,
      'test_crop_size': 32,
      'jitter_scales': (36, 44),
      'test_short_side': 40,
      'batch_size': 8,
      'eval_batch_size': 8,
    }
  )
  config.model.update(
    {'num_classes': 400, 'widths': (4, 8, 16, 32), 'stage_blocks': (1, 1, 1, 1), 'embed_dim': 16}
  )
  config.model.fusion_hidden = 16
  exp = experiment.Experiment(config)
  assert exp.data is ltl_pipeline
  spec = exp.task.input_spec(train=True)
  train = next(exp.train_batches(seed=0))
  (evaluation,) = list(exp.eval_batches(multi_view=False))
  for batch in (train, evaluation):
    assert 'video' not in batch
    assert {k: batch[k].shape[1:] for k in spec} == {k: s.shape for k, s in spec.items()}
    assert {k: batch[k].dtype for k in spec} == {k: s.dtype for k, s in spec.items()}
  np.testing.assert_array_equal(np.asarray(evaluation['_mask']), [1, 1, 1, 0, 0, 0, 0, 0])


def test_audio_statistics_normalise_the_training_clips_with_audio(ltl_dataset):
  config = _config(ltl_dataset)
  mean, std = ltl_pipeline.audio_statistics(config, num_batches=2)
  assert config.audio.mean == -5.0  # the caller's config is left as it was
  # With these statistics the same clips' log-mels (those with audio) have mean 0 and std 1.
  config.audio.mean, config.audio.std = mean, std
  config.ltl_clips = {'keys': ('audio',)}
  batches = ltl_pipeline.make_train_iterator(config, seed=0)
  values = np.concatenate(
    [b['audio'][b['has_audio'] > 0].ravel() for b in (next(batches), next(batches))]
  ).astype(np.float64)
  assert abs(values.mean()) < 1e-4 and abs(values.std() - 1.0) < 1e-4
  assert -20 < mean < 5 and std > 0.1  # a log-mel of audible noise
