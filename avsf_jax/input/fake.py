"""In-memory synthetic batches with the keys, shapes and dtypes of `avsf_jax.input.pipeline`.

Selected by `config.input.dataset == 'fake'`; sizes come from the optional `fake_data` section
(`FAKE_DATA` holds its defaults and the fault hooks tests use: `delay_s` sleeps before each
training batch, `nan_at_step` puts a NaN into that step's batch). Each
example belongs to class `index % K` and carries a faint class pattern (a colour for the
video, a mel band for the audio) under noise, so a model can learn it. A training batch is
a pure function of (seed, step): resuming at `start_step` reproduces the stream. Used by
the training tests and by GPU benchmarks; imports no TensorFlow.
"""

import time
from collections.abc import Iterator

import ml_collections
import numpy as np

from avsf_jax.input import in_memory
from avsf_jax.input import info as info_lib

FAKE_DATA = {
  'num_train_examples': 64,
  'num_eval_examples': 16,
  'multi_label': False,
  'delay_s': 0.0,
  'nan_at_step': -1,
}


def _fake(config) -> dict:
  section = config.get('fake_data') or {}
  unknown = sorted(set(section) - set(FAKE_DATA))
  if unknown:
    raise ValueError(f'config.fake_data has unknown fields {unknown}; known: {sorted(FAKE_DATA)}')
  return {**FAKE_DATA, **dict(section)}


def dataset_info(config: ml_collections.ConfigDict) -> info_lib.DatasetInfo:
  num_classes = config.model.num_classes
  if hasattr(num_classes, 'items'):
    num_classes = dict(num_classes.items())
    names = {h: tuple(f'{h}_{i}' for i in range(k)) for h, k in num_classes.items()}
  else:
    names = tuple(f'class_{i}' for i in range(num_classes))
  fake = _fake(config)
  return info_lib.DatasetInfo(
    num_train_examples=fake['num_train_examples'],
    num_eval_examples=fake['num_eval_examples'],
    num_classes=num_classes,
    class_names=names,
    multi_label=fake['multi_label'],
  )


def _labels(config, index: np.ndarray) -> dict[str, np.ndarray]:
  out = {}
  for head, k in info_lib.heads(config.model.num_classes).items():
    key = info_lib.label_key(head)
    label = (index % k).astype(np.int32)
    if _fake(config)['multi_label']:
      hot = np.zeros((len(index), k), np.float32)
      hot[np.arange(len(index)), label] = 1.0
      hot[np.arange(len(index)), (label + 1) % k] = 1.0
      out[key] = hot
    else:
      out[key] = label
  return out


def _clips(config, index: np.ndarray, rng: np.random.Generator, views: int | None, crop: int):
  """Video and audio of examples `index`; `views` adds a (V,) axis after the batch."""
  k = next(iter(info_lib.heads(config.model.num_classes).values()))
  label = index % k
  lead = (len(index),) if views is None else (len(index), views)
  t = config.input.num_frames
  shapes = {
    'slow': lead + (t, crop, crop, 3),
    'fast': lead + (t * config.model.alpha, crop, crop, 3),
  }
  expand = (slice(None),) + (None,) * (len(lead) - 1)
  colour = np.stack([np.cos(label), np.sin(label), np.cos(2 * label)], -1).astype(np.float32)
  out = {}
  for p in ('slow', 'fast'):
    if p in config.model.pathways:
      noise = rng.standard_normal(shapes[p], dtype=np.float32)
      out[p] = noise + colour[expand + (None, None, None)]
  a = config.audio
  time_axis = np.arange(a.num_frames, dtype=np.float32)
  band = (np.arange(a.num_mel_bins)[None, :] == (label % a.num_mel_bins)[:, None]).astype(
    np.float32
  )
  onset = (np.sin(time_axis[None, :] * 0.3 + index[:, None]) > 0).astype(np.float32)
  pattern = 2.0 * onset[:, :, None] * band[:, None, :]  # (b, time, freq)
  audio_shape = lead + (a.num_frames, a.num_mel_bins, 1)
  out['audio'] = (
    rng.standard_normal(audio_shape, dtype=np.float32) + pattern[expand + (Ellipsis, None)]
  )
  out['_pattern'] = pattern
  return out


def make_train_iterator(
  config: ml_collections.ConfigDict,
  *,
  seed: int,
  start_step: int = 0,
  process_index: int = 0,
  process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Endless per-process batches; batch `s` depends only on (seed, s) and the process."""
  global_batch = config.input.batch_size
  b = in_memory.process_share(config, 'batch_size', process_count)
  fake = _fake(config)
  n = fake['num_train_examples']
  step = start_step
  while True:
    if fake['delay_s']:
      time.sleep(fake['delay_s'])
    order = in_memory.example_rng(seed, 0, step).integers(0, n, global_batch)
    index = order[process_index * b : (process_index + 1) * b]
    rng = in_memory.example_rng(seed, 1, step, process_index)
    batch = _clips(config, index, rng, None, config.input.crop_size)
    pattern = batch.pop('_pattern')
    # Hard negative: the same clip's audio pattern shifted in time, fresh noise.
    shifted = np.roll(pattern, config.audio.num_frames // 2, axis=1)
    batch['audio_negative'] = (
      rng.standard_normal(batch['audio'].shape, dtype=np.float32) + shifted[..., None]
    )
    batch['audio_negative_is_hard'] = np.ones((b,), np.float32)
    batch['has_audio'] = np.ones((b,), np.float32)
    batch.update(_labels(config, index))
    if step == fake['nan_at_step']:
      batch['slow' if 'slow' in batch else 'audio'][0] = np.nan
    yield batch
    step += 1


def num_eval_batches(config: ml_collections.ConfigDict) -> int:
  return -(-_fake(config)['num_eval_examples'] // config.input.eval_batch_size)


def make_eval_iterator(
  config: ml_collections.ConfigDict,
  *,
  split: str | None = None,
  multi_view: bool = True,
  process_index: int = 0,
  process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Finite, padded to whole batches: (b, V, ...) views, 'label', 'video_index', '_mask'."""
  del split
  global_batch = config.input.eval_batch_size
  b = in_memory.process_share(config, 'eval_batch_size', process_count)
  n = _fake(config)['num_eval_examples']
  views = config.input.num_temporal_views * config.input.num_spatial_views if multi_view else 1
  for i in range(num_eval_batches(config)):
    index = i * global_batch + process_index * b + np.arange(b)
    mask = (index < n).astype(np.float32)
    index = np.minimum(index, n - 1)
    rng = in_memory.example_rng(12345, 2, i, process_index)
    batch = _clips(config, index, rng, views, config.input.test_crop_size)
    batch.pop('_pattern')
    batch.update(_labels(config, index))
    batch['has_audio'] = np.ones((b,), np.float32)
    batch['video_index'] = index.astype(np.int32)
    batch['_mask'] = mask
    yield batch
