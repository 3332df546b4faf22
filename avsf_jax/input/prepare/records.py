"""Turns one annotation record into one stored example, in a worker process (no TensorFlow).

`prepare_record` never raises: it returns either an example or the reason it was skipped, so one
bad video never stops a build.
"""

import traceback

import numpy as np

from avsf_jax.input import media

LABEL_FIELDS = ('label', 'labels', 'segments', 'label_verb', 'label_noun')


def prepare_record(
  record: dict, short_side: int, sample_rate: int, keep_no_audio: bool
) -> tuple[str, dict | None, dict | None]:
  """Returns (key, example, None) or (key, None, skip) where skip = {path, key, reason, detail}."""
  key, path = record['key'], record['path']

  def skip(reason: str, detail: str = '') -> tuple[str, None, dict]:
    return key, None, {'key': key, 'path': path, 'reason': reason, 'detail': detail}

  if path is None:
    return skip('missing_file', f'no video file found for {record.get("video_id", key)}')
  if record.get('label') == -1:
    return skip('no_label', 'row has no label')
  try:
    video = media.prepare_video(
      path, start=record['start'], end=record['end'], short_side=short_side, sample_rate=sample_rate
    )
  except media.MediaError as e:
    return skip(e.reason, e.detail)
  except Exception as e:  # any decoder failure is a skip, never a crash
    return skip('decode_error', f'{type(e).__name__}: {e}\n{traceback.format_exc(limit=2)}')
  if not video.has_audio and not keep_no_audio:
    return skip('no_audio', 'video has no audio stream (build with keep_no_audio to keep it)')
  example = {
    'frames': video.frames,
    'audio': video.audio,
    'fps': np.float32(video.fps),
    'duration': np.float32(video.duration),
    'num_frames': np.int32(video.num_frames),
    'height': np.int32(video.height),
    'width': np.int32(video.width),
    'has_audio': video.has_audio,
    'path': str(path),
    'video_id': record.get('video_id', key),
  }
  for field in LABEL_FIELDS:
    if field in record:
      example[field] = record[field]
  if 'segments' in example:
    segments = np.asarray(example['segments'], np.float32).reshape(-1, 3)
    example['segments'] = {
      'label': segments[:, 0].astype(np.int64),
      'start': segments[:, 1],
      'end': segments[:, 2],
    }
  return key, example, None
