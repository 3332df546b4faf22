"""Log-mel front end of SPEC section 4, in TensorFlow (runs eagerly and inside tf.data).

Window 512, hop 256, FFT 512, periodic Hann, no centering, power spectrum, 80 HTK-scale mel
filters with Slaney area normalisation (librosa's `mel(htk=True)`), natural log with an offset.
The spectrogram of the clip's samples is index-resampled to a fixed number of frames.
"""

import functools

import numpy as np
import tensorflow as tf


def _hz_to_mel_htk(hz):
  return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def _mel_to_hz_htk(mel):
  return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


@functools.cache
def mel_matrix(
  sample_rate: int, fft_size: int, num_mel_bins: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
  """(fft_size // 2 + 1, num_mel_bins) float32 weights equal to librosa.filters.mel(htk=True).T."""
  fmax = sample_rate / 2.0 if fmax is None else fmax
  fft_freqs = np.linspace(0.0, sample_rate / 2.0, fft_size // 2 + 1)
  mel_points = np.linspace(_hz_to_mel_htk(fmin), _hz_to_mel_htk(fmax), num_mel_bins + 2)
  mel_freqs = _mel_to_hz_htk(mel_points)
  widths = np.diff(mel_freqs)
  ramps = mel_freqs[:, None] - fft_freqs[None, :]
  lower = -ramps[:-2] / widths[:-1, None]
  upper = ramps[2:] / widths[1:, None]
  weights = np.maximum(0.0, np.minimum(lower, upper))
  weights *= (2.0 / (mel_freqs[2:] - mel_freqs[:-2]))[:, None]  # Slaney area normalisation
  return weights.T.astype(np.float32)


def log_mel(samples: tf.Tensor, audio_config) -> tf.Tensor:
  """Unnormalised log-mel (frames, num_mel_bins) of float32 samples in [-1, 1].

  frames = 1 + (len - window) // hop; fewer samples than one window are zero-padded to one.
  """
  samples = tf.convert_to_tensor(samples, tf.float32)
  window = audio_config.window_size
  short = tf.maximum(window - tf.shape(samples)[0], 0)
  samples = tf.pad(samples, [[0, short]])
  frames = tf.signal.frame(samples, window, audio_config.hop_size)
  frames = frames * tf.signal.hann_window(window, periodic=True)
  if audio_config.fft_size > window:
    frames = tf.pad(frames, [[0, 0], [0, audio_config.fft_size - window]])
  power = tf.math.square(tf.abs(tf.signal.rfft(frames, [audio_config.fft_size])))
  weights = mel_matrix(audio_config.sample_rate, audio_config.fft_size, audio_config.num_mel_bins)
  mel = tf.matmul(power, tf.constant(weights))
  return tf.math.log(mel + audio_config.log_offset)


def resample_frames(spectrogram: tf.Tensor, num_frames: int) -> tf.Tensor:
  """Index-resamples (F, M) to (num_frames, M): rows `int(linspace(0, F - 1, num_frames))`."""
  count = tf.shape(spectrogram)[0]
  index = tf.linspace(0.0, tf.cast(count - 1, tf.float32), num_frames)
  return tf.gather(spectrogram, tf.cast(index, tf.int32))


def clip_log_mel(
  audio: tf.Tensor, start: tf.Tensor, num_samples: int | tf.Tensor, audio_config
) -> tf.Tensor:
  """Normalised (num_frames, num_mel_bins, 1) log-mel of int16 `audio[start:start + num_samples]`.

  Samples outside the stored audio read as silence, so a clip near the end keeps its alignment.
  """
  audio = tf.cast(audio, tf.float32) / 32768.0
  start = tf.cast(start, tf.int32)
  index = start + tf.range(num_samples, dtype=tf.int32)
  inside = (index >= 0) & (index < tf.shape(audio)[0])
  segment = tf.where(
    inside, tf.gather(audio, tf.clip_by_value(index, 0, tf.shape(audio)[0] - 1)), 0.0
  )
  spectrogram = resample_frames(log_mel(segment, audio_config), audio_config.num_frames)
  spectrogram = (spectrogram - audio_config.mean) / audio_config.std
  return spectrogram[..., None]


def spec_augment(
  spectrogram: tf.Tensor,
  seed: tf.Tensor,
  *,
  time_masks: int,
  time_width: int,
  freq_masks: int,
  freq_width: int,
) -> tf.Tensor:
  """SpecAugment masking (no warping) of a (frames, bins, 1) spectrogram; masked cells -> 0.

  Zero is the mean of the normalised log-mel. Each mask's width is uniform in [0, width].
  """
  frames, bins = spectrogram.shape[0], spectrogram.shape[1]
  keep = tf.ones((frames, bins), tf.bool)
  for axis, count, width, size in (
    (0, time_masks, time_width, frames),
    (1, freq_masks, freq_width, bins),
  ):
    for i in range(count):
      s = tf.random.experimental.stateless_fold_in(seed, 2 * i + axis)
      draw = tf.random.stateless_uniform([2], s, maxval=2**30, dtype=tf.int32)
      w = draw[0] % (width + 1)
      begin = draw[1] % tf.maximum(size - w + 1, 1)
      positions = tf.range(size)
      band = (positions >= begin) & (positions < begin + w)
      band = band[:, None] if axis == 0 else band[None, :]
      keep = keep & ~band
  return tf.where(keep[..., None], spectrogram, tf.zeros_like(spectrogram))
