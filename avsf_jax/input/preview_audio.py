"""The Listen to Look student's 101x40 log-mel of a 1-s audio segment (spec listen_to_look.md 2.2).

The paper gives only "a 1-channel audio-spectrogram of size 101x40 (1 sec. audio segment)". The
spec's reading [assumption], all of it in `PreviewAudioConfig`:
  - 16 kHz mono; STFT with a 400-sample (25 ms) periodic Hann window, hop 160 (10 ms), FFT 512,
    centred (the signal is zero-padded by FFT/2 on both sides and the window sits in the middle
    of each 512-sample frame, as librosa's `stft(center=True, pad_mode='constant')` does), so
    1 s gives 1 + 16000 / 160 = 101 frames;
  - power spectrum, 40 HTK-scale mel filters with Slaney area normalisation (librosa's
    `filters.mel(htk=True)`, `audio.mel_matrix`), natural log with offset 1e-6;
  - the segment starts at the time stamp (anchor 'start', matching the clip's starting frame)
    or is centred on the clip ('centre'); samples outside the stored audio are silence;
  - normalised with a mean and std computed on the training set.
It sits beside `audio.py`'s SlowFast front end and reuses its mel matrix; it runs eagerly and
inside tf.data.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from avsf_jax.input import audio

ANCHORS = ('start', 'centre')


@dataclasses.dataclass(frozen=True)
class PreviewAudioConfig:
  """Front-end settings; the defaults give the paper's 101 (time) x 40 (frequency) input."""

  sample_rate: int = 16000
  segment_seconds: float = 1.0
  window_size: int = 400
  hop_size: int = 160
  fft_size: int = 512
  num_mel_bins: int = 40
  log_offset: float = 1e-6
  anchor: str = 'start'
  mean: float = 0.0  # training-set statistics of the log-mel [assumption: set per dataset]
  std: float = 1.0

  @property
  def segment_samples(self) -> int:
    return round(self.segment_seconds * self.sample_rate)

  @property
  def num_frames(self) -> int:
    """Frames of a centred STFT of one segment: 1 + samples // hop (101 by default)."""
    return 1 + self.segment_samples // self.hop_size


def _padded_window(config: PreviewAudioConfig) -> np.ndarray:
  """The periodic Hann window of `window_size` centred in an `fft_size` frame."""
  if config.window_size > config.fft_size:
    raise ValueError(
      f'PreviewAudioConfig: window_size={config.window_size} exceeds fft_size={config.fft_size}'
    )
  n = np.arange(config.window_size)
  hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / config.window_size)
  left = (config.fft_size - config.window_size) // 2
  return np.pad(hann, (left, config.fft_size - config.window_size - left)).astype(np.float32)


def log_mel(samples: tf.Tensor, config: PreviewAudioConfig) -> tf.Tensor:
  """Unnormalised (1 + len // hop, num_mel_bins) log-mel of float32 samples in [-1, 1]."""
  samples = tf.convert_to_tensor(samples, tf.float32)
  pad = config.fft_size // 2
  samples = tf.pad(samples, [[pad, pad]])
  frames = tf.signal.frame(samples, config.fft_size, config.hop_size)
  frames = frames * tf.constant(_padded_window(config))
  power = tf.math.square(tf.abs(tf.signal.rfft(frames, [config.fft_size])))
  weights = audio.mel_matrix(config.sample_rate, config.fft_size, config.num_mel_bins)
  return tf.math.log(tf.matmul(power, tf.constant(weights)) + config.log_offset)


def segment_start(
  time_stamp: tf.Tensor | float, clip_seconds: float, config: PreviewAudioConfig
) -> tf.Tensor:
  """First sample of the segment of a pair at `time_stamp` seconds (its clip's start).

  'start': the segment begins at the time stamp; 'centre': it is centred on the clip
  [time_stamp, time_stamp + clip_seconds).
  """
  if config.anchor not in ANCHORS:
    raise ValueError(f'PreviewAudioConfig.anchor={config.anchor!r}; one of {ANCHORS}')
  start = tf.cast(time_stamp, tf.float64)
  if config.anchor == 'centre':
    start += (clip_seconds - config.segment_seconds) / 2.0
  return tf.cast(tf.math.round(start * config.sample_rate), tf.int32)


def segment_log_mel(audio_int16: tf.Tensor, start: tf.Tensor, config: PreviewAudioConfig):
  """Normalised (num_frames, num_mel_bins, 1) log-mel of `audio_int16[start:start + 1 s]`.

  Samples outside the stored audio read as silence, so a pair near either end keeps its
  alignment with the frame.
  """
  samples = tf.cast(audio_int16, tf.float32) / 32768.0
  count = tf.shape(samples)[0]
  index = tf.cast(start, tf.int32) + tf.range(config.segment_samples, dtype=tf.int32)
  inside = (index >= 0) & (index < count)
  # One trailing zero keeps the gather valid for a video without audio (count 0).
  padded = tf.pad(samples, [[0, 1]])
  segment = tf.where(inside, tf.gather(padded, tf.clip_by_value(index, 0, count)), 0.0)
  spectrogram = (log_mel(segment, config) - config.mean) / config.std
  return spectrogram[..., None]
