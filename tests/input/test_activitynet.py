"""ActivityNet v1.3 from its official layout: records, labels, errors, and one build."""

import functools
import json
import os

import jax
import numpy as np
import pytest
import tensorflow as tf
from array_record.python import array_record_data_source

from avsf_jax import export
from avsf_jax.input import feature_banks, ltl_data
from avsf_jax.input.prepare import activitynet, builders
from avsf_jax.models import ltl_models
from avsf_jax.tools import extract_preview_features, ltl_baselines
from tests.input.media_helpers import write_clip


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
  assert activitynet.activitynet_class_names(manual) == [
    'Archery',
    'Long jump',
    'Making tea',
  ]
  splits = activitynet.activitynet_records(manual)
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
    activitynet.activitynet_records(manual)


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """A prepared two-video ActivityNet (25 fps, 48 x 64 frames) and its builder."""
  root = tmp_path_factory.mktemp('anet')
  raw = root / 'raw'
  manual = _activitynet_layout(
    raw,
    {
      'aaaaaaaaaaa': _entry('training', ('Archery', 0.25, 0.75), ('Long jump', 1.0, 1.625)),
      'bbbbbbbbbbb': _entry('validation', ('Making tea', 0.5, 1.25)),
      'ccccccccccc': _entry('validation', ('Archery', 0.0, 1.0)),  # no file
    },
  )
  write_clip(str(raw / 'v_aaaaaaaaaaa.mp4'), seed=1, seconds=2.0)
  write_clip(str(raw / 'bbbbbbbbbbb.mp4'), seed=2, seconds=1.5)
  builder = builders.get_builder('activitynet', str(root / 'data'), num_workers=1)
  skipped = builders.build(builder, manual)
  return builder, skipped


def test_activitynet_build_stores_whole_videos_with_their_segments(built):
  builder, skipped = built
  with open(skipped) as f:
    assert [(s['key'], s['reason']) for s in map(json.loads, f)] == [
      ('ccccccccccc', 'missing_file')
    ]
  assert builder.class_names() == ['Archery', 'Long jump', 'Making tea']
  (train,) = list(builder.as_data_source('train'))
  (val,) = list(builder.as_data_source('validation'))
  # 0.625 s of 'Long jump' outweigh 0.5 s of 'Archery'; the whole video is stored.
  assert int(train['label']) == 1
  np.testing.assert_array_equal(train['segments']['label'], [0, 1])
  np.testing.assert_allclose(train['segments']['start'], [0.25, 1.0])
  np.testing.assert_allclose(train['segments']['end'], [0.75, 1.625])
  assert abs(float(train['duration']) - 2.0) < 0.1
  assert int(val['label']) == 2 and bool(val['has_audio'])
  np.testing.assert_allclose(val['segments']['end'], [1.25])


@pytest.mark.slow
def test_feature_banks_of_a_prepared_dataset_by_hand(built, tmp_path):
  """`extract_preview_features --dataset=activitynet`: one pair every 16 frames; the frame
  (short side to 32, centre crop) and 1 s of 16-kHz audio from it, through the student."""
  builder, _ = built
  config = {
    'name': 'imgaud',
    'num_classes': 3,
    'embed_dim': 4,
    'fusion_hidden': 8,
    'widths': (4, 4, 4, 6),
    'stage_blocks': (1, 1, 1, 1),
  }
  student = ltl_models.build(config)
  inputs = {'image': np.zeros((1, 32, 32, 3)), 'audio': np.zeros((1, 101, 40, 1))}
  variables = jax.jit(functools.partial(student.init, train=False))(jax.random.key(0), inputs)
  path = export.write(
    tmp_path / 'student',
    apply_fn=lambda v, x: student.apply(v, x, train=False)[0],
    variables=variables,
    model_config=config,
    class_names=builder.class_names(),
    input_spec={'image': [32, 32, 3], 'audio': [101, 40, 1]},
    preprocessing={'image_size': 32, 'audio_mean': -8.0, 'audio_std': 2.0},
    platforms=('cpu',),
  )
  written = extract_preview_features.main(
    [
      f'--student_export={path}',
      f'--out={tmp_path / "banks"}',
      '--dataset=activitynet',
      f'--data_dir={os.path.dirname(os.path.dirname(os.path.dirname(builder.data_dir)))}',
    ]
  )
  banks = feature_banks.load_banks(written['train'])
  # 2 s at 25 fps = 50 frames -> pairs at frames 0, 16, 32, 48 (0, 0.64, 1.28, 1.92 s); the
  # label's segment [1.0, 1.625) holds the third.
  assert banks['image'][0].shape == (4, 6) and tuple(banks['segments'][0]) == (2, 3)
  assert banks['labels'].tolist() == [1]
  assert feature_banks.load_banks(written['val'])['image'][0].shape == (3, 6)  # 38 frames
  (example,) = list(builder.as_data_source('train'))
  store = array_record_data_source.ArrayRecordDataSource(
    [builders.frames_path(builder.data_dir, 'train')]
  )
  offset = int(example['frame_offset'])
  frames = [tf.io.decode_jpeg(store[offset + i], channels=3) for i in (0, 16, 32, 48)]
  # 48 x 64 -> 32 x 43 (rounded), centre crop from x = 5.
  resized = tf.image.resize(tf.cast(tf.stack(frames), tf.float32), (32, 43)).numpy()
  image = np.clip(np.round(resized[:, :, 5:37]), 0, 255).astype(np.uint8)
  audio = np.r_[np.asarray(example['audio'], np.float32) / 32768.0, np.zeros(16000, np.float32)]
  starts = [round(t * 16000) for t in (0.0, 0.64, 1.28, 1.92)]
  mel = ltl_data.log_mel(np.stack([audio[s : s + 16000] for s in starts]))
  reference = {
    'image': ltl_data.normalise_frames(image),
    'audio': ltl_data.normalise_log_mel(mel, (-8.0, 2.0)),
  }
  _, aux = jax.jit(functools.partial(student.apply, train=False))(variables, reference)
  np.testing.assert_allclose(banks['image'][0], aux['image'], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(banks['audio'][0], aux['audio'], rtol=1e-4, atol=1e-4)
  # Table 1's selection baselines on these banks (`tools.ltl_baselines`): DENSE averages the
  # softmax of the student's own logits over the 4 pairs.
  results = ltl_baselines.main(
    [f'--banks={written["train"]}', f'--student_export={path}', '--num_picks=2']
  )
  logits = np.asarray(student.apply(variables, reference, train=False)[0])
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  assert results['dense']['top1'] == 100.0 * (probs.mean(0).argmax() == 1)
  assert results['front']['top1'] == 100.0 * (probs[:2].mean(0).argmax() == 1)
  pair = ltl_baselines.pair_gmacs(export.load(path))
  assert pair > 0 and results['dense']['gflops'] == pytest.approx(4 * pair)
  assert results['dense']['hit_rate'] == 0.25  # one of the 4 pairs lies in the segment
