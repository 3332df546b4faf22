"""Decodes raw media with PyAV into the stored form: JPEG frames and 16 kHz mono int16 audio.

This module never imports TensorFlow: it runs in the worker processes of a dataset build and in
`tools/log_mel.py`. Video and audio share one time axis whose origin is the first stored frame:
audio sample `i` of a prepared example plays at `i / sample_rate` seconds after frame 0, whatever
the streams' start times, so the input pipeline aligns the two by index arithmetic alone.
"""

import dataclasses
import fractions
import io
import math

import av
import numpy as np
import scipy.signal
from PIL import Image

DEFAULT_SAMPLE_RATE = 16000
DEFAULT_SHORT_SIDE = 320
# A stream that ends this much before the container says it should is treated as truncated.
_TRUNCATION_TOLERANCE_S = 0.5


class MediaError(Exception):
  """A file that cannot become an example; `reason` is a short machine-readable tag."""

  def __init__(self, reason: str, detail: str = ''):
    super().__init__(f'{reason}: {detail}' if detail else reason)
    self.reason = reason
    self.detail = detail


@dataclasses.dataclass(frozen=True)
class PreparedVideo:
  """One clip in its stored form, frames at a constant `fps` starting at time 0."""

  frames: list[bytes]  # JPEG, one per frame at constant `fps`
  height: int
  width: int
  fps: float
  audio: np.ndarray  # int16 mono at `sample_rate`, sample 0 plays with frame 0
  sample_rate: int
  has_audio: bool

  @property
  def num_frames(self) -> int:
    return len(self.frames)

  @property
  def duration(self) -> float:
    return self.num_frames / self.fps


def _open(path: str) -> av.container.InputContainer:
  try:
    return av.open(str(path), metadata_errors='ignore')
  except FileNotFoundError as e:
    raise MediaError('missing', str(path)) from e
  except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
    raise MediaError('unreadable', f'{path}: {e}') from e


def _scaled_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
  """(height, width) with the short side at most `short_side`; never upscales."""
  if not short_side or min(height, width) <= short_side:
    return height, width
  scale = short_side / min(height, width)
  return max(1, round(height * scale)), max(1, round(width * scale))


def _to_mono_float(frame: av.AudioFrame) -> np.ndarray:
  """Averages the channels of a decoded frame of any sample format and layout."""
  data = frame.to_ndarray()
  channels = len(frame.layout.channels)
  if not frame.format.is_planar:
    data = data.reshape(-1, channels).T
  if np.issubdtype(data.dtype, np.integer):
    data = data.astype(np.float32) / float(np.iinfo(data.dtype).max)
  return data.astype(np.float32).mean(axis=0)


def _resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
  if source_rate == target_rate:
    return samples.astype(np.float32)
  ratio = fractions.Fraction(target_rate, source_rate)
  out = scipy.signal.resample_poly(samples, ratio.numerator, ratio.denominator)
  return out.astype(np.float32)


def _decode_audio_stream(
  container: av.container.InputContainer,
  stream: av.audio.AudioStream,
  start: float | None,
  end: float | None,
  sample_rate: int,
) -> tuple[np.ndarray, float]:
  """Decodes [start, end) of an audio stream to mono float32 at `sample_rate`.

  Returns the samples and the presentation time (seconds) of the first one.
  """
  if start is not None and start > 0:
    container.seek(int(start / stream.time_base), stream=stream, backward=True)
  chunks, first_time, source_rate = [], None, stream.rate or stream.codec_context.sample_rate
  for frame in container.decode(stream):
    if frame.time is None:
      continue
    if end is not None and frame.time >= end:
      break
    if first_time is None:
      first_time = frame.time
    source_rate = frame.sample_rate
    chunks.append(_to_mono_float(frame))
  if not chunks:
    return np.zeros((0,), np.float32), start or 0.0
  samples = np.concatenate(chunks)
  if start is not None and first_time < start:
    drop = int(round((start - first_time) * source_rate))
    samples, first_time = samples[drop:], first_time + drop / source_rate
  return _resample(samples, source_rate, sample_rate), first_time


def decode_audio(path: str, sample_rate: int = DEFAULT_SAMPLE_RATE) -> np.ndarray:
  """Decodes the first audio stream of any audio or video file to mono float32 at `sample_rate`."""
  with _open(path) as container:
    if not container.streams.audio:
      raise MediaError('no_audio_stream', str(path))
    stream = container.streams.audio[0]
    samples, _ = _decode_audio_stream(container, stream, None, None, sample_rate)
  if not samples.size:
    raise MediaError('no_audio_decoded', str(path))
  return samples


def _encode_jpeg(image: np.ndarray, quality: int) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='JPEG', quality=quality)
  return buffer.getvalue()


def _frame_rate(stream: av.video.VideoStream, times: list[float]) -> float:
  rate = stream.average_rate or stream.guessed_rate
  if rate and float(rate) > 0:
    return float(rate)
  if len(times) > 1 and times[-1] > times[0]:
    return (len(times) - 1) / (times[-1] - times[0])
  return 30.0


def prepare_video(
  path: str,
  *,
  start: float | None = None,
  end: float | None = None,
  short_side: int | None = DEFAULT_SHORT_SIDE,
  sample_rate: int = DEFAULT_SAMPLE_RATE,
  jpeg_quality: int = 90,
) -> PreparedVideo:
  """Decodes `[start, end)` seconds (relative to the video stream start) of a file.

  Frames are rotated upright (display-matrix rotation), scaled so the short side is at most
  `short_side`, and put on a constant-rate grid at the stream's average frame rate: grid point
  `k` (time `k / fps` after the first frame) takes the latest decoded frame shown by then, which
  makes variable-frame-rate input constant-rate without shifting it in time. Audio is averaged to
  mono, resampled, and shifted so that its sample 0 plays with frame 0 (audio starting late is
  padded with silence at the front; audio before the first frame is dropped); it is cut or
  zero-padded to the video duration. Raises `MediaError` when no aligned example can be made.
  """
  with _open(path) as container:
    if not container.streams.video:
      raise MediaError('no_video_stream', str(path))
    vstream = container.streams.video[0]
    vstream.codec_context.thread_count = 1  # one worker process per core already
    origin = float(vstream.start_time * vstream.time_base) if vstream.start_time else 0.0
    seg_start = origin + start if start is not None else None
    seg_end = origin + end if end is not None else None
    if seg_start is not None and seg_start > origin:
      container.seek(int(seg_start / vstream.time_base), stream=vstream, backward=True)
    times, images, size, rotation = [], [], None, 0
    try:
      for frame in container.decode(vstream):
        if frame.time is None:
          continue
        if seg_end is not None and frame.time >= seg_end:
          break
        if seg_start is not None and frame.time < seg_start:
          continue
        if size is None:
          rotation = int(round((frame.rotation or 0) / 90)) % 4
          size = _scaled_size(frame.height, frame.width, short_side)
        if size == (frame.height, frame.width):
          image = frame.to_ndarray(format='rgb24')
        else:
          image = frame.reformat(
            width=size[1], height=size[0], format='rgb24', interpolation='AREA'
          ).to_ndarray()
        times.append(frame.time)
        images.append(_encode_jpeg(np.ascontiguousarray(np.rot90(image, rotation)), jpeg_quality))
    except av.error.FFmpegError as e:
      raise MediaError(
        'truncated', f'{path}: decoding failed after {len(times)} frames: {e}'
      ) from e
    if not times:
      declared = vstream.frames or 0
      reason = 'truncated' if declared else 'no_frames'
      raise MediaError(
        reason if start is None else 'clip_shorter_than_one_frame',
        f'{path}: no video frame decoded in [{start}, {end})',
      )
    if container.duration and start is None and end is None:
      declared_end = (
        container.duration / av.time_base + float(container.start_time or 0) / av.time_base
      )
      if times[-1] < declared_end - _TRUNCATION_TOLERANCE_S - 1.0 / _frame_rate(vstream, times):
        raise MediaError(
          'truncated', f'{path}: video ends at {times[-1]:.2f}s, container says {declared_end:.2f}s'
        )
    fps = _frame_rate(vstream, times)
    first = times[0]
    num_frames = int(round((times[-1] - first) * fps)) + 1
    if seg_end is not None:  # grid points strictly before the segment end
      num_frames = min(num_frames, int(math.ceil((seg_end - first) * fps - 1e-6)))
    num_frames = max(1, num_frames)
    grid = first + np.arange(num_frames) / fps
    # Latest decoded frame presented no later than half a frame after the grid time.
    picks = np.searchsorted(np.asarray(times), grid + 0.5 / fps, side='right') - 1
    frames = [images[max(0, int(i))] for i in picks]
    height, width = size if rotation % 2 == 0 else size[::-1]

    num_samples = int(round(num_frames / fps * sample_rate))
    audio, has_audio = np.zeros((num_samples,), np.float32), False
    if container.streams.audio:
      a_end = first + num_frames / fps + 0.1
      try:
        # Its own demuxer, so the audio is one forward pass independent of the video's.
        with _open(path) as audio_container:
          samples, a_first = _decode_audio_stream(
            audio_container, audio_container.streams.audio[0], first, a_end, sample_rate
          )
      except av.error.FFmpegError as e:
        raise MediaError('truncated', f'{path}: audio decoding failed: {e}') from e
      if samples.size:
        offset = int(round((a_first - first) * sample_rate))
        samples = np.concatenate(
          [np.zeros((max(0, offset),), np.float32), samples[max(0, -offset) :]]
        )
        n = min(num_samples, samples.size)
        audio[:n] = samples[:n]
        has_audio = True
  audio = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)
  return PreparedVideo(
    frames=frames,
    height=height,
    width=width,
    fps=fps,
    audio=audio,
    sample_rate=sample_rate,
    has_audio=has_audio,
  )
