"""Feature banks for IMGAUD-SKIMMING: per video, (N, D) image and audio preview features.

`save_banks` / `load_banks` keep a split in one `.npz` (the demo's extraction output: ragged
banks stored concatenated with their offsets), and `synthetic_banks` makes banks directly, with
the structure of `synthetic_untrimmed` (one short loud segment that shows the class, silent
decoy pairs of other colours elsewhere), to test skimming without decoding any video.
"""

import os
import zipfile
import zlib
from collections.abc import Sequence

import numpy as np

NUM_COLOURS, NUM_MOTIONS = 4, 2


def save_banks(
  path: str,
  image: Sequence[np.ndarray],
  audio: Sequence[np.ndarray],
  labels: Sequence[int],
  segments: Sequence[tuple[int, int]] | None = None,
  fused: Sequence[np.ndarray] | None = None,
) -> str:
  """Writes one split: the banks concatenated, 'offsets' (V + 1), 'labels', optional 'segments'
  and optional 'fused' (Psi of every pair, concatenated like the banks)."""
  lengths = [len(x) for x in image]
  if lengths != [len(x) for x in audio] or len(lengths) != len(labels):
    raise ValueError(
      f'save_banks: {len(image)} image banks, {len(audio)} audio banks and {len(labels)} labels'
      ' must agree, with equal lengths per video'
    )
  arrays = {
    'image': np.concatenate(image).astype(np.float32),
    'audio': np.concatenate(audio).astype(np.float32),
    'offsets': np.r_[0, np.cumsum(lengths)].astype(np.int64),
    'labels': np.asarray(labels, np.int32),
  }
  if segments is not None:
    arrays['segments'] = np.asarray(segments, np.int32)
  if fused is not None:
    arrays['fused'] = np.concatenate(fused).astype(np.float32)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez(path, **arrays)
  return path


def load_banks(path: str) -> dict:
  """Reads `save_banks` output: {'image': [..], 'audio': [..], 'labels', 'segments'?,
  'fused'?: [..]}."""
  from avsf_jax import storage  # noqa: PLC0415

  storage.check_readable(path, 'feature bank')
  try:
    data = np.load(path)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:  # not .npz, damaged
    raise storage.FileFault(
      f'{path}: not a readable feature bank (.npz; truncated, damaged or another format: '
      f'{storage.first_line(error)})'
    ) from None
  if not hasattr(data, 'files'):
    raise storage.FileFault(f'{path}: a single array, expected save_banks output (.npz)')
  try:
    with data:
      missing = {'image', 'audio', 'offsets', 'labels'} - set(data.files)
      if missing:
        raise storage.FileFault(
          f'{path}: missing arrays {sorted(missing)}; expected save_banks output'
        )
      o = data['offsets']

      def split(name):
        # `data[name]` reads and decompresses the whole array on every access: read it once
        # (per video it cost one full copy each: 12 GB and 25 s for the demo's 320 videos).
        whole = data[name]
        return [whole[a:b] for a, b in zip(o[:-1], o[1:])]

      out = {'image': split('image'), 'audio': split('audio'), 'labels': data['labels']}
      if 'segments' in data.files:
        out['segments'] = data['segments']
      if 'fused' in data.files:
        out['fused'] = split('fused')
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
    if isinstance(error, storage.FileFault):
      raise
    raise storage.FileFault(
      f'{path}: a damaged feature bank ({storage.first_line(error)})'
    ) from None
  return out


def synthetic_banks(
  videos_per_class: int,
  seed: int,
  *,
  num_pairs: int = 40,
  segment_pairs: int = 4,
  dim: int = 8,
  noise: float = 0.3,
  decoy_rate: float = 0.5,
) -> dict:
  """Banks of 8 = 4 colours x 2 motions classes, structured like `synthetic_untrimmed`.

  Image features: in the segment, the class colour's one-hot; elsewhere, with probability
  `decoy_rate`, another colour's one-hot (a silent decoy), else nothing. Audio features: in the
  segment, the motion's one-hot plus a loudness unit; elsewhere nothing. Both plus Gaussian
  `noise`, then a fixed random rotation to `dim` dimensions (so no coordinate is the answer).
  Lengths vary from num_pairs / 2 to num_pairs.

  Returns:
    {'image': [(N_v, dim)], 'audio': [(N_v, dim)], 'labels' (V,), 'segments' (V, 2)}.
  """
  rng = np.random.default_rng(seed)
  rotations = [
    np.linalg.qr(np.random.default_rng([99, m]).standard_normal((dim, dim)))[0] for m in range(2)
  ]
  image, audio, labels, segments = [], [], [], []
  for label in np.repeat(np.arange(NUM_COLOURS * NUM_MOTIONS), videos_per_class):
    colour, motion = divmod(int(label), NUM_MOTIONS)
    n = int(rng.integers(num_pairs // 2, num_pairs + 1))
    start = int(rng.integers(0, n - segment_pairs + 1))
    img = np.zeros((n, dim))
    aud = np.zeros((n, dim))
    others = [c for c in range(NUM_COLOURS) if c != colour]
    decoy = rng.uniform(size=n) < decoy_rate
    img[np.flatnonzero(decoy), rng.choice(others, size=n)[decoy]] = 1.0
    seg = slice(start, start + segment_pairs)
    img[seg] = 0.0
    img[seg, colour] = 1.0
    aud[seg, NUM_COLOURS + motion] = 1.0
    aud[seg, dim - 1] = 1.0
    img += noise * rng.standard_normal(img.shape)
    aud += noise * rng.standard_normal(aud.shape)
    image.append((img @ rotations[0]).astype(np.float32))
    audio.append((aud @ rotations[1]).astype(np.float32))
    labels.append(int(label))
    segments.append((start, start + segment_pairs))
  order = rng.permutation(len(labels))
  return {
    'image': [image[i] for i in order],
    'audio': [audio[i] for i in order],
    'labels': np.asarray(labels, np.int32)[order],
    'segments': np.asarray(segments, np.int32)[order],
  }
