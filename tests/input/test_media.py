"""PyAV preparation: audio-visual alignment, stream quirks, and every kind of bad input."""

import fractions
import io

import av
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from avsf_jax import config_lib
from avsf_jax.input import audio as audio_lib
from avsf_jax.input import media, ops
from avsf_jax.input.prepare import records as prepare
from avsf_jax.input.prepare import synthetic
from tests.input.media_helpers import FPS, SAMPLE_RATE, flash_click_media, write_clip


def _brightness(video):
  return np.array([np.asarray(Image.open(io.BytesIO(f))).mean() for f in video.frames])


@pytest.mark.parametrize(
  'video_start, audio_start',
  [(0.0, 0.0), (1.0, 1.0), (0.52, 0.3)],
  ids=['zero', 'both_late', 'different'],
)
def test_click_lands_within_one_frame_of_flash_after_sampling(tmp_path, video_start, audio_start):
  flash = 40
  frames, audio = flash_click_media(flash_frame=flash)
  # Put the click at the flash's absolute time even when the streams start at different times.
  shift = int(round((video_start - audio_start) * SAMPLE_RATE))
  audio = np.roll(np.pad(audio, [(0, 0), (0, abs(shift))]), shift, axis=1)
  path = str(tmp_path / 'flash.mp4')
  synthetic.write_video(
    path, frames, FPS, audio, SAMPLE_RATE, video_start_s=video_start, audio_start_s=audio_start
  )
  video = media.prepare_video(path)
  assert video.has_audio and video.fps == FPS
  assert int(np.argmax(_brightness(video))) == flash
  # Sample the 1-view clip whose frames contain the flash (T=4, tau=8 at 30 fps: ~26 frames).
  features = {'fps': tf.constant(float(video.fps)), 'num_frames': tf.constant(video.num_frames)}
  clip = ops.sample_eval_clips(features, num_views=1, num_frames=4, tau=8, alpha=4, target_fps=30.0)
  clip = {**clip, 'fast_index': clip['fast_index'][0]}
  clip, num_samples = ops.audio_window(
    clip, num_frames=4, tau=8, target_fps=30.0, sample_rate=16000
  )
  index = clip['fast_index'].numpy()
  assert index[0] <= flash <= index[-1]
  flash_time = (flash - index[0]) / video.fps
  start = int(clip['audio_start'])
  segment = video.audio[start : start + num_samples].astype(np.float32)
  click_time = np.argmax(np.abs(segment) > 8000) / 16000
  assert abs(click_time - flash_time) <= 1.0 / video.fps
  # The log-mel of the clip peaks at the same time.
  cfg = config_lib.audio_config()
  spectrogram = audio_lib.log_mel(segment / 32768.0, cfg).numpy()
  peak_time = (np.argmax(spectrogram.sum(axis=1)) * cfg.hop_size + cfg.window_size / 2) / 16000
  assert abs(peak_time - flash_time) <= 1.0 / video.fps + cfg.window_size / 16000


@pytest.mark.parametrize('sample_rate, channels', [(22050, 1), (32000, 2), (48000, 6)])
def test_odd_sample_rates_and_layouts_become_16k_mono(tmp_path, sample_rate, channels):
  t = np.arange(2 * sample_rate) / sample_rate
  tone = 0.4 * np.sin(2 * np.pi * 500 * t)
  audio = np.stack([tone] + [-0.0 * tone] * (channels - 1)).astype(
    np.float32
  )  # R silent: mean halves
  path = str(tmp_path / 'a.mp4')
  synthetic.write_video(path, np.zeros((50, 16, 16, 3), np.uint8), 25, audio, sample_rate)
  video = media.prepare_video(path)
  assert video.audio.dtype == np.int16 and video.audio.size == 32000
  middle = video.audio[4000:28000].astype(np.float32) / 32767
  rms = np.sqrt(np.mean(middle**2))
  np.testing.assert_allclose(rms, 0.4 / np.sqrt(2) / channels, rtol=0.05)
  spectrum = np.abs(np.fft.rfft(middle))
  assert abs(np.argmax(spectrum) * 16000 / middle.size - 500) < 5


def test_rotation_metadata_is_applied(tmp_path):
  frames = np.zeros((10, 48, 64, 3), np.uint8)
  frames[:, :, :16] = 255  # left quarter white
  path = str(tmp_path / 'rot.mp4')
  synthetic.write_video(path, frames, 25, rotation=90)
  video = media.prepare_video(path)
  assert (video.height, video.width) == (64, 48)
  image = np.asarray(Image.open(io.BytesIO(video.frames[0]))).mean(axis=(1, 2))
  assert image[-16:].mean() > 200 and image[:40].mean() < 30  # rotated 90 ccw: left -> bottom


def test_variable_frame_rate_is_put_on_a_constant_grid(tmp_path):
  path = str(tmp_path / 'vfr.mp4')
  times_ms = [0, 40, 80, 120, 240, 280, 320, 360, 400, 440]  # a 120 ms gap after frame 3
  with av.open(path, 'w') as container:
    stream = container.add_stream('libx264', rate=25)
    stream.width, stream.height, stream.pix_fmt = 32, 32, 'yuv420p'
    stream.time_base = fractions.Fraction(1, 1000)
    for i, ms in enumerate(times_ms):
      frame = av.VideoFrame.from_ndarray(
        np.full((32, 32, 3), 20 * i + 20, np.uint8), format='rgb24'
      )
      frame.pts, frame.time_base = ms, fractions.Fraction(1, 1000)
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  video = media.prepare_video(path)
  assert video.num_frames == int(round(440 * video.fps / 1000)) + 1
  level = np.round((_brightness(video) - 20) / 20).astype(int)
  expected = [
    np.searchsorted(times_ms, k * 1000 / video.fps + 500 / video.fps, side='right') - 1
    for k in range(video.num_frames)
  ]
  np.testing.assert_array_equal(level, expected)


def test_segment_of_an_untrimmed_video(tmp_path):
  frames = np.stack([np.full((16, 16, 3), 5 * i, np.uint8) for i in range(50)])
  path = str(tmp_path / 'long.mp4')
  synthetic.write_video(path, frames, 25, np.zeros((1, 2 * 16000), np.float32), 16000)
  video = media.prepare_video(path, start=0.4, end=1.2)
  assert video.num_frames == 20
  np.testing.assert_allclose(_brightness(video)[[0, -1]], [50, 145], atol=3)
  assert video.audio.size == 0.8 * 16000


def _prepare(record_path, **overrides):
  record = {
    'key': 'k',
    'video_id': 'v',
    'path': record_path,
    'start': None,
    'end': None,
    'label': 'x',
    **overrides,
  }
  return prepare.prepare_record(record, 320, 16000, overrides.pop('keep', True))


def test_bad_inputs_are_skipped_with_a_reason(tmp_path):
  (tmp_path / 'empty.mp4').write_bytes(b'')
  (tmp_path / 'garbage.mp4').write_bytes(np.random.default_rng(0).bytes(4000))
  write_clip(str(tmp_path / 'good.mp4'))
  data = (tmp_path / 'good.mp4').read_bytes()
  (tmp_path / 'cut.mp4').write_bytes(data[: len(data) // 2])  # moov atom lost
  synthetic.write_video(
    str(tmp_path / 'fast.mp4'),
    np.random.default_rng(0).integers(0, 255, (75, 48, 64, 3), np.uint8),
    25,
    np.zeros((1, 3 * 44100), np.float32),
    faststart=True,
  )
  data = (tmp_path / 'fast.mp4').read_bytes()
  (tmp_path / 'fastcut.mp4').write_bytes(data[: len(data) // 3])  # header intact, media cut
  with av.open(str(tmp_path / 'sound.m4a'), 'w') as container:
    stream = container.add_stream('aac', rate=16000, layout='mono')
    frame = av.AudioFrame.from_ndarray(
      np.zeros((1, 1024), np.float32), format='fltp', layout='mono'
    )
    frame.sample_rate, frame.pts = 16000, 0
    for packet in [*stream.encode(frame), *stream.encode()]:
      container.mux(packet)
  reasons = {
    name: _prepare(str(tmp_path / name) if name else None)[2]['reason']
    for name in ('empty.mp4', 'garbage.mp4', 'cut.mp4', 'fastcut.mp4', 'sound.m4a', None)
  }
  reasons['short'] = _prepare(str(tmp_path / 'good.mp4'), start=10.0, end=10.01)[2]['reason']
  assert reasons == {
    'empty.mp4': 'unreadable',
    'garbage.mp4': 'unreadable',
    'cut.mp4': 'unreadable',
    'fastcut.mp4': 'truncated',
    'sound.m4a': 'no_video_stream',
    None: 'missing_file',
    'short': 'clip_shorter_than_one_frame',
  }


def test_video_without_audio_is_kept_silent_or_skipped(tmp_path):
  path = str(tmp_path / 'mute.mp4')
  write_clip(path, audio=False)
  _, example, skip = prepare.prepare_record(
    {'key': 'k', 'path': path, 'start': None, 'end': None, 'label': 'x'}, 320, 16000, True
  )
  assert skip is None and example['has_audio'] is False
  assert example['audio'].size == 48000 and not example['audio'].any()
  _, example, skip = prepare.prepare_record(
    {'key': 'k', 'path': path, 'start': None, 'end': None, 'label': 'x'}, 320, 16000, False
  )
  assert example is None and skip['reason'] == 'no_audio'


def test_frames_are_scaled_to_the_short_side_without_upscaling(tmp_path):
  path = str(tmp_path / 'big.mp4')
  synthetic.write_video(path, np.zeros((5, 96, 160, 3), np.uint8), 25)
  video = media.prepare_video(path, short_side=48)
  assert (video.height, video.width) == (48, 80)
  assert np.asarray(Image.open(io.BytesIO(video.frames[0]))).shape == (48, 80, 3)
  video = media.prepare_video(path, short_side=320)
  assert (video.height, video.width) == (96, 160)
