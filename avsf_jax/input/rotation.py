"""Rotation of training clips for the ROT pretext (self-supervised spec 1.2), as tf.data ops.

A clip is rotated after its square crop (the shape is kept) by k x 90 degrees counter-clockwise
(`np.rot90`'s sense), one k for every frame of the Slow and the Fast inputs, and k becomes the
example's `rotation` label. The audio is not rotated. k comes from the example's stateless seed
(folded with its own tag), so it is a pure function of (run seed, epoch, example) like every
other random choice of the pipeline. Horizontal flipping happens before, in the crop op.

Modes (`ROTATION_MODES`): 'one_per_clip' draws one k per clip; 'all_four' (RotNet's recipe)
makes four copies of the clip, rotated by 0, 90, 180 and 270 degrees, along a new leading
axis, for the dataset to `unbatch()` (4x the examples per clip).
"""

import tensorflow as tf

ROTATION_MODES = ('one_per_clip', 'all_four')
NUM_ROTATIONS = 4
VISUAL_KEYS = ('slow', 'fast')
_SEED_TAG = 7  # ops.py uses 1-5 and the SpecAugment draw 6


def rotate_frames(video, k):
  """(..., H, W, C) rotated by k x 90 degrees counter-clockwise over (H, W); H must equal W."""
  video = tf.convert_to_tensor(video)
  height, width = video.shape[-3], video.shape[-2]
  if height is not None and width is not None and height != width:
    raise ValueError(
      f'rotation: frames must be square after the crop to keep their shape; got {height}x{width}'
    )
  k = tf.math.floormod(tf.cast(k, tf.int32), NUM_ROTATIONS)
  # Counter-clockwise rotation by 90 degrees = transpose H and W, then reverse the new H axis.
  rank = video.shape.rank
  swap = list(range(rank - 3)) + [rank - 2, rank - 3, rank - 1]

  def quarter(x):
    return tf.reverse(tf.transpose(x, swap), axis=[rank - 3])

  return tf.switch_case(
    k,
    [
      lambda: video,
      lambda: quarter(video),
      lambda: quarter(quarter(video)),
      lambda: quarter(quarter(quarter(video))),
    ],
  )


def draw_rotation(seed):
  """k in {0, 1, 2, 3}, uniform, from the example's stateless seed."""
  seed = tf.random.experimental.stateless_fold_in(seed, _SEED_TAG)
  return tf.random.stateless_uniform([], seed, minval=0, maxval=NUM_ROTATIONS, dtype=tf.int32)


def rotate_clip(example: dict, seed) -> dict:
  """'one_per_clip': rotates 'slow' and 'fast' (whichever are present) by the same drawn k and
  adds 'rotation' (int32 k). Other keys pass through unchanged."""
  visual = [key for key in VISUAL_KEYS if key in example]
  if not visual:
    raise KeyError(
      f'rotation: the example has no visual input {VISUAL_KEYS}; got {sorted(example)}'
    )
  k = draw_rotation(seed)
  out = dict(example)
  for key in visual:
    out[key] = rotate_frames(example[key], k)
  out['rotation'] = k
  return out


def all_rotations(example: dict) -> dict:
  """'all_four': every key stacked 4 times on a new leading axis, the visual inputs rotated by
  0, 1, 2, 3 quarter turns and 'rotation' = [0, 1, 2, 3]; follow with `dataset.unbatch()`.

  The four copies are consecutive examples sharing one audio track, so easy AVS negatives must
  come from another clip: roll the batch by 4, not 1, when forming them.
  """
  visual = [key for key in VISUAL_KEYS if key in example]
  if not visual:
    raise KeyError(
      f'rotation: the example has no visual input {VISUAL_KEYS}; got {sorted(example)}'
    )
  out = {}
  for key, value in example.items():
    if key in visual:
      out[key] = tf.stack([rotate_frames(value, k) for k in range(NUM_ROTATIONS)])
    else:
      value = tf.convert_to_tensor(value)
      out[key] = tf.stack([value] * NUM_ROTATIONS)
  out['rotation'] = tf.range(NUM_ROTATIONS, dtype=tf.int32)
  return out


def apply(example: dict, seed, mode: str) -> dict:
  """The rotation transform of `mode` (one of `ROTATION_MODES`)."""
  if mode == 'one_per_clip':
    return rotate_clip(example, seed)
  if mode == 'all_four':
    return all_rotations(example)
  raise ValueError(f'rotation: mode={mode!r}; expected one of {ROTATION_MODES}')
