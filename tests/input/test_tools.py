"""Building synthetic_av on first use, prepare_dataset on a prepared dataset, and log_mel."""

import os
import pathlib
import subprocess
import sys

import librosa
import numpy as np
import pytest

from avsf_jax import config_lib
from avsf_jax.input import pipeline
from avsf_jax.input.prepare import builders, synthetic
from avsf_jax.tools import log_mel, prepare_dataset


@pytest.mark.slow
def test_synthetic_av_is_built_on_first_use_then_found_prepared(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(builders.SyntheticAv, 'clips_per_class', {'train': 1, 'validate': 1})
  config = config_lib.base_config()
  config.input.dataset, config.input.data_dir = 'synthetic_av', str(tmp_path / 'data')
  info = pipeline.dataset_info(config)  # what the demo's first call does
  assert 'synthetic_av: not found' in capsys.readouterr().out
  assert (info.num_train_examples, info.num_eval_examples, info.num_classes) == (12, 12, 12)
  assert info.class_names == list(synthetic.CLASS_NAMES) and not info.multi_label
  assert (tmp_path / 'data' / 'synthetic_av_raw' / 'train' / 'red_left_low').is_dir()
  builder = builders.get_builder('synthetic_av', str(tmp_path / 'data'))
  source = builder.as_data_source('validation')
  labels = sorted(builder.info.features['label'].int2str(e['label']) for e in source)
  assert labels == sorted(synthetic.CLASS_NAMES)
  example = source[0]
  assert example['has_audio']
  assert (example['height'], example['width']) == (synthetic.HEIGHT, synthetic.WIDTH)
  assert abs(example['num_frames'] / example['fps'] - synthetic.DURATION_S) < 0.05
  # Preparing again finds the dataset prepared and leaves it (and its report) as it is.
  report = pathlib.Path(builder.data_dir) / 'skipped.jsonl'
  report.write_text('{"key": "kept"}\n')
  raw = tmp_path / 'data' / 'synthetic_av_raw'
  again = prepare_dataset.prepare('synthetic_av', str(raw), str(tmp_path / 'data'))
  assert again['already_prepared'] and again['prepared'] == 0
  assert report.read_text() == '{"key": "kept"}\n'


@pytest.mark.slow
def test_log_mel_tool_writes_the_reference_spectrogram(tmp_path):
  t = np.arange(32000) / 32000
  stereo = np.stack([0.3 * np.sin(2 * np.pi * 700 * t), 0.1 * np.sin(2 * np.pi * 2000 * t)]).astype(
    np.float32
  )
  synthetic.write_video(
    str(tmp_path / 'a.mp4'), np.zeros((25, 16, 16, 3), np.uint8), 25, stereo, 32000
  )
  command = [
    sys.executable,
    '-m',
    'avsf_jax.tools.log_mel',
    f'--input={tmp_path / "a.mp4"}',
    f'--output={tmp_path / "a.npy"}',
  ]
  subprocess.run(
    command, check=True, capture_output=True, env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  )
  ours = np.load(tmp_path / 'a.npy')
  np.testing.assert_array_equal(ours, log_mel.compute(str(tmp_path / 'a.mp4')))
  y = librosa.resample(stereo.mean(axis=0), orig_sr=32000, target_sr=16000)
  reference = np.log(
    librosa.feature.melspectrogram(
      y=y,
      sr=16000,
      n_fft=512,
      hop_length=256,
      win_length=512,
      window='hann',
      center=False,
      n_mels=80,
      htk=True,
    )
    + 1e-8
  ).T
  assert ours.shape[1] == 80 and abs(ours.shape[0] - reference.shape[0]) <= 8  # AAC priming/padding
  # Steady tones: the average spectrum over the middle frames matches the reference's
  # (frame-by-frame comparison would depend on the AAC encoder's priming delay).
  middle = slice(10, 50)
  energetic = reference[middle].mean(axis=0) > np.log(1e-4)
  assert energetic.sum() >= 4
  difference = np.abs(ours[middle].mean(axis=0) - reference[middle].mean(axis=0))[energetic]
  assert difference.max() < 0.1
