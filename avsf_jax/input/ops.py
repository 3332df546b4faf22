"""Small dict -> dict preprocessing ops (big_vision style), each usable eagerly and in tf.data.

They follow dmvr's phases: `sample_*` pick frame indices and the audio start from the stored
metadata, `decode_*` decode only the sampled JPEG frames, the rest preprocess. Every random op
takes an explicit stateless seed (shape [2] int32/int64), so results are a pure function of it.
Frame-index maths follows PySlowFast (`decoder/utils.py`): a clip covers
`T * tau * fps / target_fps` source frames, and the Fast frames are
`int(linspace(start, start + clip_size - 1, alpha * T))` clamped into the video.
"""

import tensorflow as tf

from avsf_jax.input import audio as audio_lib


def _fold(seed, tag: int):
  return tf.random.experimental.stateless_fold_in(seed, tag)


def clip_frame_indices(start, clip_size, num_samples: int, num_frames):
  """PySlowFast `temporal_sampling`: int(linspace(start, start + clip_size - 1, n)) clamped."""
  start = tf.cast(start, tf.float32)
  index = tf.linspace(start, start + tf.cast(clip_size, tf.float32) - 1.0, num_samples)
  index = tf.clip_by_value(index, 0.0, tf.cast(num_frames - 1, tf.float32))
  return tf.cast(index, tf.int32)


def slow_from_fast(num_fast: int, alpha: int):
  """Positions of the Slow frames within the Fast ones: int(linspace(0, n_fast - 1, n_fast // alpha))."""
  return tf.cast(tf.linspace(0.0, float(num_fast - 1), num_fast // alpha), tf.int32)


def clip_size_frames(features, num_frames: int, tau: int, target_fps: float):
  """Source frames a clip spans: T * tau frames at `target_fps`, whatever the video's own fps."""
  return tf.cast(num_frames * tau, tf.float32) * tf.cast(features['fps'], tf.float32) / target_fps


def sample_train_clip(features, seed, *, num_frames: int, tau: int, alpha: int, target_fps: float):
  """Adds 'fast_index' (alpha*T,) at a uniformly random start (PySlowFast `get_start_end_idx`)."""
  clip_size = clip_size_frames(features, num_frames, tau, target_fps)
  delta = tf.maximum(tf.cast(features['num_frames'], tf.float32) - clip_size, 0.0)
  start = tf.random.stateless_uniform([], _fold(seed, 1)) * delta
  out = dict(features)
  out['fast_index'] = clip_frame_indices(
    start, clip_size, alpha * num_frames, features['num_frames']
  )
  return out


VIEW_STARTS = ('pyslowfast', 'spread')


def view_start_frames(delta, num_views: int, view_starts: str = 'pyslowfast'):
  """First frames (float32, (num_views,)) of the temporal test views of a video.

  `delta` is how far a clip's start can move (video frames minus clip frames, at least 0).
  - 'pyslowfast': view i of V starts at delta * i / V, PySlowFast's test decoder
    (`decoder.get_start_end_idx` without `use_offset`): the views tile the video from its
    first frame and never reach its last one; a single view starts at frame 0.
  - 'spread': delta * i / (V - 1), so the first and last views touch both ends of the video;
    a single view is centred (this project's first choice, kept as an option).
  """
  delta = tf.cast(delta, tf.float32)
  i = tf.range(num_views, dtype=tf.float32)
  if view_starts == 'pyslowfast':
    return delta * i / float(num_views)
  if view_starts == 'spread':
    if num_views == 1:
      return tf.reshape(delta / 2.0, [1])
    return delta * i / float(num_views - 1)
  raise ValueError(f'input.view_starts={view_starts!r}; expected one of {VIEW_STARTS}')


def sample_eval_clips(
  features,
  *,
  num_views: int,
  num_frames: int,
  tau: int,
  alpha: int,
  target_fps: float,
  view_starts: str = 'spread',
):
  """Adds 'fast_index' (views, alpha*T), the views starting as `view_start_frames` says."""
  clip_size = clip_size_frames(features, num_frames, tau, target_fps)
  delta = tf.maximum(tf.cast(features['num_frames'], tf.float32) - clip_size, 0.0)
  starts = view_start_frames(delta, num_views, view_starts)
  index = tf.map_fn(
    lambda s: clip_frame_indices(s, clip_size, alpha * num_frames, features['num_frames']),
    starts,
    fn_output_signature=tf.int32,
  )
  out = dict(features)
  out['fast_index'] = index
  return out


def audio_window(features, *, num_frames: int, tau: int, target_fps: float, sample_rate: int):
  """Adds 'audio_start' (first sample of each clip) and returns the static clip length in samples.

  The audio segment starts at the timestamp of the clip's first frame, `fast_index[..., 0] / fps`.
  """
  num_samples = int(round(num_frames * tau / target_fps * sample_rate))
  first = tf.cast(features['fast_index'][..., 0], tf.float32)
  start = tf.round(first / tf.cast(features['fps'], tf.float32) * sample_rate)
  out = dict(features)
  out['audio_start'] = tf.cast(start, tf.int32)
  return out, num_samples


def sample_hard_negative(features, seed, *, num_samples: int, min_shift: int):
  """Adds 'negative_start' at least `min_shift` samples from 'audio_start', inside the audio.

  Uniform over all valid starts; 'negative_is_hard' is 0.0 when the audio is too short to have
  one (the start is then meaningless and the caller substitutes another example's audio).
  """
  start = features['audio_start']
  last = tf.shape(features['audio'])[0] - num_samples  # last valid start
  left = tf.maximum(start - min_shift + 1, 0)  # starts 0 .. start - min_shift
  right = tf.maximum(last - (start + min_shift) + 1, 0)  # start + min_shift .. last
  total = left + right
  draw = tf.random.stateless_uniform([], _fold(seed, 2), maxval=2**30, dtype=tf.int32) % tf.maximum(
    total, 1
  )
  out = dict(features)
  out['negative_start'] = tf.where(draw < left, draw, start + min_shift + draw - left)
  out['negative_is_hard'] = tf.cast(total > 0, tf.float32)
  return out


def decode_frames(frames, index):
  """Decodes the JPEG frames at `index` (any shape) to uint8 (*index.shape, H, W, 3)."""
  flat = tf.reshape(index, [-1])
  images = tf.map_fn(
    lambda i: tf.io.decode_jpeg(frames[i], channels=3), flat, fn_output_signature=tf.uint8
  )
  shape = tf.concat([tf.shape(index), tf.shape(images)[1:]], axis=0)
  return tf.reshape(images, shape)


def crop_window(height, width, seed, *, jitter_scales: tuple[int, int], crop_size: int):
  """A random short-side-jitter + crop as a window of the stored frame: (y, x, h, w) int32.

  Equivalent to PySlowFast's `random_short_side_scale_jitter` then `random_crop`: the short side
  is scaled to an integer uniform in `jitter_scales`, a `crop_size` square is chosen uniformly
  in the scaled frame, and the window is mapped back to stored-frame pixels so that only it is
  decoded (`decode_and_crop_jpeg`) and resized.
  """
  height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  short = tf.random.stateless_uniform(
    [], _fold(seed, 3), minval=jitter_scales[0], maxval=jitter_scales[1] + 1, dtype=tf.int32
  )
  scale = tf.cast(short, tf.float32) / tf.minimum(height, width)
  scaled_h, scaled_w = tf.round(height * scale), tf.round(width * scale)
  offsets = tf.random.stateless_uniform([2], _fold(seed, 4))
  y = tf.floor(offsets[0] * (tf.maximum(scaled_h - crop_size, 0.0) + 1.0))
  x = tf.floor(offsets[1] * (tf.maximum(scaled_w - crop_size, 0.0) + 1.0))
  size = tf.cast(crop_size, tf.float32) / scale
  window_h = tf.minimum(tf.maximum(tf.round(size), 1.0), height)
  window_w = tf.minimum(tf.maximum(tf.round(size), 1.0), width)
  top = tf.minimum(tf.round(y / scale), height - window_h)
  left = tf.minimum(tf.round(x / scale), width - window_w)
  return tf.cast(tf.stack([top, left, window_h, window_w]), tf.int32)


def decode_train_frames(
  features, seed, *, index_key: str, jitter_scales, crop_size: int, flip: bool
):
  """Adds 'video' float32 (n, crop, crop, 3) in [0, 255]: the frames at `index_key`, jittered,
  cropped (bilinear resize of the decoded window) and flipped. Float output saves a uint8 round
  trip before normalisation; JPEG decoding uses the fast integer DCT."""
  window = crop_window(
    features['height'], features['width'], seed, jitter_scales=jitter_scales, crop_size=crop_size
  )
  frames = features['frames']
  images = tf.map_fn(
    lambda i: tf.image.resize(
      tf.io.decode_and_crop_jpeg(frames[i], window, channels=3, dct_method='INTEGER_FAST'),
      [crop_size, crop_size],
    ),
    features[index_key],
    fn_output_signature=tf.float32,
  )
  if flip:
    flipped = tf.random.stateless_uniform([], _fold(seed, 5)) < 0.5
    images = tf.cond(flipped, lambda: tf.reverse(images, axis=[2]), lambda: images)
  out = dict(features)
  out['video'] = images
  return out


def spatial_crops(images, *, short_side: int, crop_size: int, num_crops: int):
  """(n, H, W, 3) -> (num_crops, n, crop, crop, 3): short side to `short_side`, crops along the
  longer side at its start, centre and end (PySlowFast `uniform_crop`); one crop = the centre."""
  shape = tf.cast(tf.shape(images)[1:3], tf.float32)
  scale = short_side / tf.reduce_min(shape)
  size = tf.cast(tf.round(shape * scale), tf.int32)
  resized = tf.image.resize(tf.cast(images, tf.float32), size)
  height, width = size[0], size[1]
  positions = [1] if num_crops == 1 else list(range(num_crops))
  crops = []
  for p in positions:
    y = tf.where(height > width, (height - crop_size) * p // 2, (height - crop_size) // 2)
    x = tf.where(height > width, (width - crop_size) // 2, (width - crop_size) * p // 2)
    crops.append(resized[:, y : y + crop_size, x : x + crop_size])
  return tf.stack(crops)


def normalize_video(video, mean, std):
  """Pixels in [0, 255] (any dtype) -> float32 (pixel / 255 - mean) / std, as one multiply-add."""
  scale = 1.0 / (255.0 * tf.constant(std, tf.float32))
  offset = -tf.constant(mean, tf.float32) / tf.constant(std, tf.float32)
  return tf.cast(video, tf.float32) * scale + offset


def audio_features(features, audio_config, *, start_key: str, num_samples: int):
  """Normalised log-mel (F, M, 1) of the clip starting at `features[start_key]`; zeros if silent."""
  spectrogram = audio_lib.clip_log_mel(
    features['audio'], features[start_key], num_samples, audio_config
  )
  return tf.where(tf.cast(features['has_audio'], tf.bool), spectrogram, tf.zeros_like(spectrogram))
