"""Log-mel front end against the librosa reference of SPEC section 4."""

import librosa
import numpy as np
import pytest
import tensorflow as tf

from avsf_jax import config_lib
from avsf_jax.input import audio, media
from avsf_jax.input.prepare import synthetic


def test_mel_matrix_equals_librosa_htk_slaney():
  expected = librosa.filters.mel(sr=16000, n_fft=512, n_mels=80, htk=True).T
  np.testing.assert_allclose(audio.mel_matrix(16000, 512, 80), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('sample_rate', [44100, 48000])
def test_log_mel_matches_librosa_after_aac_round_trip(tmp_path, sample_rate):
  rng = np.random.default_rng(sample_rate)
  t = np.arange(2 * sample_rate) / sample_rate
  left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
  right = 0.2 * np.sin(2 * np.pi * 1800 * t * (1 + t))
  frames = np.zeros((50, 16, 16, 3), np.uint8)
  path = str(tmp_path / 'tone.mp4')
  synthetic.write_video(path, frames, 25, np.stack([left, right]).astype(np.float32), sample_rate)
  samples = media.decode_audio(path)
  assert abs(samples.size - 32000) < 2000  # 2 s at 16 kHz (+ AAC padding)
  ours = audio.log_mel(samples, config_lib.audio_config()).numpy()
  reference = librosa.feature.melspectrogram(
    y=samples,
    sr=16000,
    n_fft=512,
    hop_length=256,
    win_length=512,
    window='hann',
    center=False,
    n_mels=80,
    htk=True,
  )
  reference = np.log(reference + 1e-8).T
  assert ours.shape == reference.shape == (1 + (samples.size - 512) // 256, 80)
  energetic = reference > np.log(1e-6)
  assert energetic.mean() > 0.5
  assert np.abs(ours - reference)[energetic].max() < 2e-2


def test_resample_frames_takes_truncated_linspace_rows():
  spectrogram = tf.reshape(tf.range(10 * 2, dtype=tf.float32), [10, 2])
  rows = audio.resample_frames(spectrogram, 4).numpy()[:, 0] / 2
  np.testing.assert_array_equal(rows, [0, 3, 6, 9])  # linspace(0, 9, 4) = 0, 3, 6, 9
  rows = audio.resample_frames(spectrogram, 3).numpy()[:, 0] / 2
  np.testing.assert_array_equal(rows, [0, 4, 9])  # 0, 4.5, 9 truncated


def test_clip_log_mel_reads_silence_outside_and_normalizes():
  cfg = config_lib.audio_config()
  cfg.num_frames = 8
  stored = tf.zeros([1000], tf.int16)
  out = audio.clip_log_mel(stored, -5000, 4096, cfg).numpy()
  np.testing.assert_allclose(out, (np.log(1e-8) - cfg.mean) / cfg.std, rtol=1e-5)
  assert out.shape == (8, 80, 1)


def test_spec_augment_masks_bands_to_zero_deterministically():
  spectrogram = tf.ones([64, 80, 1])
  kwargs = {'time_masks': 1, 'time_width': 10, 'freq_masks': 1, 'freq_width': 8}
  a = audio.spec_augment(spectrogram, tf.constant([1, 2]), **kwargs).numpy()
  b = audio.spec_augment(spectrogram, tf.constant([1, 2]), **kwargs).numpy()
  np.testing.assert_array_equal(a, b)
  zero_rows = np.where((a[..., 0] == 0).all(axis=1))[0]
  zero_cols = np.where((a[..., 0] == 0).all(axis=0))[0]
  assert zero_rows.size <= 10 and zero_cols.size <= 8
  assert set(np.unique(a)) <= {0.0, 1.0}
  # Every zero lies in a masked row or column.
  masked = np.zeros((64, 80), bool)
  masked[zero_rows] = True
  masked[:, zero_cols] = True
  np.testing.assert_array_equal(a[..., 0] == 0, masked)
