"""The student's 101x40 log-mel (spec listen_to_look.md 2.2) against librosa, on decoded audio."""

import librosa
import numpy as np
import pytest
import tensorflow as tf

from avsf_jax.input import media, preview_audio
from avsf_jax.input.prepare import synthetic

CONFIG = preview_audio.PreviewAudioConfig()


def test_one_second_gives_101_by_40():
  assert CONFIG.segment_samples == 16000 and CONFIG.num_frames == 101
  out = preview_audio.segment_log_mel(tf.zeros([48000], tf.int16), 16000, CONFIG)
  assert out.shape == (101, 40, 1)


def test_log_mel_matches_librosa_on_decoded_audio(tmp_path):
  """A tone + chirp written as AAC and decoded to 16 kHz; both front ends read those samples."""
  rate = 44100
  rng = np.random.default_rng(0)
  t = np.arange(int(1.5 * rate)) / rate
  wave = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1500 * t * (1 + t))
  wave = wave + 0.02 * rng.standard_normal(t.size)
  path = str(tmp_path / 'tone.mp4')
  frames = np.zeros((15, 16, 16, 3), np.uint8)
  synthetic.write_video(path, frames, 10, np.stack([wave, wave]).astype(np.float32), rate)
  samples = media.decode_audio(path)[2000:18000]
  assert samples.size == 16000
  ours = preview_audio.log_mel(samples, CONFIG).numpy()
  reference = librosa.feature.melspectrogram(
    y=samples.astype(np.float64),
    sr=16000,
    n_fft=512,
    hop_length=160,
    win_length=400,
    window='hann',
    center=True,
    pad_mode='constant',
    power=2.0,
    n_mels=40,
    htk=True,
  )
  reference = np.log(reference + 1e-6).T
  assert ours.shape == reference.shape == (101, 40)
  np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_segment_reads_silence_outside_and_normalises():
  config = preview_audio.PreviewAudioConfig(mean=-5.0, std=2.0)
  stored = (np.random.default_rng(1).uniform(-1, 1, 24000) * 20000).astype(np.int16)
  out = preview_audio.segment_log_mel(stored, -4000, config).numpy()[..., 0]
  segment = np.concatenate([np.zeros(4000), stored[:12000] / 32768.0]).astype(np.float32)
  expected = (preview_audio.log_mel(segment, config).numpy() + 5.0) / 2.0
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  # A video without audio: every cell is log(offset), normalised.
  empty = preview_audio.segment_log_mel(np.zeros([0], np.int16), 0, config).numpy()
  np.testing.assert_allclose(empty, (np.log(1e-6) + 5.0) / 2.0, rtol=1e-6)


def test_runs_inside_tf_function_as_in_tf_data():
  stored = (np.random.default_rng(2).uniform(-1, 1, 20000) * 20000).astype(np.int16)
  graph = tf.function(lambda a, s: preview_audio.segment_log_mel(a, s, CONFIG))
  np.testing.assert_allclose(
    graph(stored, tf.constant(3000)).numpy(),
    preview_audio.segment_log_mel(stored, 3000, CONFIG).numpy(),
    rtol=1e-5,
    atol=1e-5,
  )


def test_segment_start_anchors():
  start = preview_audio.PreviewAudioConfig(anchor='start')
  centre = preview_audio.PreviewAudioConfig(anchor='centre')
  assert int(preview_audio.segment_start(2.0, 2.0, start)) == 32000
  # A 2-s clip from 2.0 s: the 1-s segment spans [2.5, 3.5).
  assert int(preview_audio.segment_start(2.0, 2.0, centre)) == 40000
  with pytest.raises(ValueError, match='anchor'):
    preview_audio.segment_start(0.0, 1.0, preview_audio.PreviewAudioConfig(anchor='end'))
