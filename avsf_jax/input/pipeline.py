"""tf.data pipelines for training and evaluation, over the prepared TFDS datasets.

Phases (dmvr): read by index -> parse -> sample (frame indices, audio window) -> decode (only the
sampled JPEG frames) -> preprocess -> batch -> postprocess. The training stream is a pure function
of (seed, step): global position `g = step * batch_size + k` is example `perm(seed, epoch)[g % N]`
of epoch `g // N`, and every random draw of that example is keyed by (seed, epoch, index). A
process reads only its own share of each global batch, and a resumed run starts at any step.
"""

import contextlib
import functools
import io
import os
import time
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
from array_record.python import array_record_data_source

from avsf_jax import mesh
from avsf_jax.input import audio as audio_lib
from avsf_jax.input import info as info_lib
from avsf_jax.input import ops, rotation
from avsf_jax.input.prepare import builders

_TRAIN_SEED_TAG, _EVAL_TAG = 1, 2


def default_data_dir() -> str:
  """`$AVSF_DATA_DIR`, else ~/.cache/avsf_jax/datasets."""
  return os.environ.get('AVSF_DATA_DIR') or os.path.expanduser('~/.cache/avsf_jax/datasets')


def hide_accelerators_from_tf() -> None:
  """Keeps TensorFlow off GPUs/TPUs so that JAX owns them."""
  mesh.hide_accelerators_from_tensorflow()


BUILD_WAIT_S = 3600.0  # how long processes other than 0 wait for process 0's first build


@contextlib.contextmanager
def _library_output_to_log():
  """TFDS's own console output while it prepares the demo dataset (its bold 'Downloading and
  preparing' lines on stdout and its progress bars) goes to the log file: our stage lines say
  what happens. `--verbose` keeps them on the console."""
  from avsf_jax import console  # noqa: PLC0415 - no TensorFlow-free module imports this one

  if console.verbose_requested():
    yield
    return
  import tensorflow_datasets as tfds  # noqa: PLC0415

  path = console.log_path()
  tfds.display_progress_bar(False)
  try:
    with open(path, 'a') if path else io.StringIO() as sink, contextlib.redirect_stdout(sink):
      yield
  finally:
    tfds.display_progress_bar(True)


def get_builder(config) -> builders.VideoBuilder:
  """The prepared builder of `config.input.dataset`; builds `synthetic_av` on first use.

  The first build runs in process 0 only (under a file lock, so that independent jobs on one
  machine build a shared cache once); the other processes poll for its completion marker
  for up to `$AVSF_BUILD_WAIT_S` seconds (default `BUILD_WAIT_S`) and then stop with a
  message naming the folder. Each says which it did in one console line. Every shard of the
  dataset is then checked once per process (`builders.check_prepared`: present, readable,
  as many records as recorded), so a damaged shard stops the run with one line naming it.
  """
  import jax  # noqa: PLC0415 - the process index; jax is loaded by every caller already

  hide_accelerators_from_tf()
  data_dir = config.input.data_dir or default_data_dir()

  def open_builder():
    return builders.get_builder(
      config.input.dataset,
      data_dir,
      short_side=config.input.frame_short_side,
      keep_no_audio=config.input.keep_no_audio,
    )

  builder = open_builder()
  if config.input.dataset != 'synthetic_av':
    if not builders.is_prepared(builder):
      raise FileNotFoundError(
        f'{builder.data_dir}: dataset {config.input.dataset!r} is not prepared; run '
        f'python -m avsf_jax.tools.prepare_dataset --dataset={config.input.dataset} '
        f'--manual_dir=DIR --data_dir={data_dir}'
      )
  elif not builders.is_complete(builder):
    if jax.process_index() == 0:
      manual_dir = os.path.join(data_dir, 'synthetic_av_raw')
      found = builders.is_prepared(builder)  # without its marker: an older version's
      if not found:
        print(f'synthetic_av: not found in {data_dir} (a build takes about a minute on 2 cores)')
      with _library_output_to_log():
        skipped = builders.build(builder, manual_dir)
      if builder.built_here:
        print(
          f'synthetic_av: built in {builder.data_dir}: {builder.prepared} prepared, '
          f'{len(builder.skipped)} skipped ({skipped})'
        )
      elif not found:
        print(f'synthetic_av: using {builder.data_dir} (prepared by another process)')
    else:
      timeout_s = float(os.environ.get('AVSF_BUILD_WAIT_S', BUILD_WAIT_S))
      print(
        f'synthetic_av: process {jax.process_index()} waits for process 0 to build it in '
        f'{builder.data_dir} (up to {timeout_s:.0f} s)',
        flush=True,
      )
      wait_for_build(builder, timeout_s)
      print(f'synthetic_av: process {jax.process_index()} found it built by process 0')
    # A builder reads its dataset_info when created: one made before the data existed (or
    # while another process built it) does not see the splits. Open it again.
    builder = open_builder()
  if builder.data_dir not in _CHECKED:
    builders.check_prepared(builder)
    _CHECKED.add(builder.data_dir)
  return builder


_CHECKED: set[str] = set()  # data_dirs whose shards this process has checked


def wait_for_build(builder: builders.VideoBuilder, timeout_s: float, poll_s: float = 1.0) -> None:
  """Waits until `builder`'s completion marker exists; TimeoutError naming the folder if not."""
  deadline = time.monotonic() + timeout_s
  while not builders.is_complete(builder):
    if time.monotonic() > deadline:
      raise TimeoutError(
        f'{builder.data_dir}: process 0 has not finished building {builder.name} after '
        f"{timeout_s:.0f} s (no {builders.PREPARED_MARKER} marker); check process 0's log, "
        'or raise $AVSF_BUILD_WAIT_S'
      )
    time.sleep(poll_s)


def dataset_info(config) -> info_lib.DatasetInfo:
  builder = get_builder(config)
  splits = builder.info.splits
  names = builder.class_names()
  if isinstance(names, dict):
    num_classes = {head: len(v) for head, v in names.items()}
  else:
    num_classes = len(names)
  return info_lib.DatasetInfo(
    num_train_examples=splits[config.input.train_split].num_examples,
    num_eval_examples=splits[config.input.eval_split].num_examples,
    num_classes=num_classes,
    class_names=names,
    multi_label=builder.multi_label,
  )


class _Reader:
  """Random access to the examples of one split and to their frames (ArrayRecord)."""

  def __init__(self, builder: builders.VideoBuilder, split: str):
    if split not in builder.info.splits:
      raise ValueError(f'{builder.name}: no split {split!r}; has {sorted(builder.info.splits)}')
    self.source = array_record_data_source.ArrayRecordDataSource(
      [str(p) for p in builder.info.splits[split].filepaths]
    )
    self.frame_source = array_record_data_source.ArrayRecordDataSource(
      [builders.frames_path(builder.data_dir, split)]
    )
    self.size = len(self.source)
    self.features = builder.info.features

  def read(self, index: np.ndarray) -> bytes:
    return self.source[int(index)]

  def read_frames(self, index: np.ndarray) -> np.ndarray:
    jpegs = self.frame_source.__getitems__([int(i) for i in index.reshape(-1)])
    return np.array(jpegs, dtype=object).reshape(index.shape)

  def parse(self, index: tf.Tensor) -> dict:
    serialized = tf.numpy_function(self.read, [index], tf.string, stateful=False)
    serialized.set_shape([])
    return self.features.deserialize_example(serialized)

  def frames(self, features: dict, index: tf.Tensor) -> tf.Tensor:
    """The JPEG bytes of the example's frames at `index` (any shape), read from the frame store."""
    position = features['frame_offset'] + tf.cast(index, tf.int64)
    jpegs = tf.numpy_function(self.read_frames, [position], tf.string, stateful=False)
    jpegs.set_shape(index.shape)
    return jpegs


def _labels(features: dict, builder: builders.VideoBuilder) -> dict:
  if 'label_verb' in features:
    return {
      'label_verb': tf.cast(features['label_verb'], tf.int32),
      'label_noun': tf.cast(features['label_noun'], tf.int32),
    }
  if 'labels' in features:
    num_classes = len(builder.class_names())
    hot = tf.reduce_max(tf.one_hot(features['labels'], num_classes, dtype=tf.float32), axis=0)
    return {'label': tf.reshape(hot, [num_classes])}
  return {'label': tf.cast(features['label'], tf.int32)}


def _example_seed(seed: int, epoch, index):
  key = tf.random.experimental.stateless_fold_in(
    tf.constant([seed, _TRAIN_SEED_TAG], tf.int64), epoch
  )
  return tf.random.experimental.stateless_fold_in(key, index)


def rotation_mode(config) -> str | None:
  """The ROT pretext's rotation of training clips (self-supervised spec 1.2), or None.

  On for `config.task == 'pretraining'` with a ROT head (`config.pretraining.rotation`, True
  unless set, as `tasks.pretraining.PRETRAINING`); the mode is `pretraining.rotation_mode`.
  Only 'one_per_clip' is supported here: 'all_four' needs the batch to be formed from 4-example
  groups and easy negatives rolled by 4 (`rotation.all_rotations`).
  """
  if config.get('task') != 'pretraining':
    return None
  section = dict(config.get('pretraining') or {})
  if not section.get('rotation', True):
    return None
  mode = section.get('rotation_mode', 'one_per_clip')
  if mode != 'one_per_clip':
    raise ValueError(
      f"config.pretraining.rotation_mode={mode!r}: the tf.data pipeline supports 'one_per_clip'"
    )
  return mode


def _train_example(features, seed, config, builder, reader) -> dict:
  inp, aud = config.input, config.audio
  pathways = tuple(config.model.pathways)
  geometry = {'num_frames': inp.num_frames, 'tau': inp.tau, 'target_fps': inp.target_fps}
  features = ops.sample_train_clip(features, seed, alpha=config.model.alpha, **geometry)
  num_fast = config.model.alpha * inp.num_frames
  slow_pos = ops.slow_from_fast(num_fast, config.model.alpha)
  features['slow_index'] = tf.gather(features['fast_index'], slow_pos)
  out = {}
  visual = [p for p in pathways if p in ('slow', 'fast')]
  if visual:
    key = 'fast_index' if 'fast' in visual else 'slow_index'
    features['frames'] = reader.frames(features, features[key])  # only the sampled frames
    features['frame_index'] = tf.range(tf.shape(features[key])[0])
    features = ops.decode_train_frames(
      features,
      seed,
      index_key='frame_index',
      jitter_scales=tuple(inp.jitter_scales),
      crop_size=inp.crop_size,
      flip=inp.flip,
    )
    video = ops.normalize_video(features['video'], inp.mean, inp.std)
    if 'fast' in visual:
      out['fast'] = video
      if 'slow' in visual:
        out['slow'] = tf.gather(video, slow_pos)
    else:
      out['slow'] = video
    mode = rotation_mode(config)
    if mode:  # after the crop and the flip; the same k for Slow and Fast
      out = rotation.apply(out, seed, mode)
  if 'audio' in pathways:
    features, num_samples = ops.audio_window(features, sample_rate=aud.sample_rate, **geometry)
    min_shift = int(round(inp.min_negative_shift * aud.sample_rate))
    features = ops.sample_hard_negative(
      features, seed, num_samples=num_samples, min_shift=min_shift
    )
    spectrogram = ops.audio_features(
      features, aud, start_key='audio_start', num_samples=num_samples
    )
    if inp.spec_augment:
      spectrogram = audio_lib.spec_augment(
        spectrogram,
        tf.random.experimental.stateless_fold_in(seed, 6),
        time_masks=inp.spec_augment_time_masks,
        time_width=inp.spec_augment_time_width,
        freq_masks=inp.spec_augment_freq_masks,
        freq_width=inp.spec_augment_freq_width,
      )
    out['audio'] = spectrogram
    out['audio_negative'] = ops.audio_features(
      features, aud, start_key='negative_start', num_samples=num_samples
    )
    out['audio_negative_is_hard'] = features['negative_is_hard']
    out['has_audio'] = tf.cast(features['has_audio'], tf.float32)
  out.update(_labels(features, builder))
  return out


def _easy_negative_fallback(batch: dict) -> dict:
  """Where no hard negative exists, uses the next example's audio (an easy negative)."""
  if 'audio_negative' not in batch:
    return batch
  hard = batch['audio_negative_is_hard'][:, None, None, None] > 0
  batch = dict(batch)
  batch['audio_negative'] = tf.where(
    hard, batch['audio_negative'], tf.roll(batch['audio'], 1, axis=0)
  )
  return batch


def _options(deterministic: bool = True) -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = deterministic
  options.experimental_optimization.map_parallelization = True
  return options


def make_train_dataset(
  config,
  *,
  seed: int,
  start_step: int = 0,
  process_index: int = 0,
  process_count: int = 1,
  example_fn=None,
) -> tf.data.Dataset:
  """The endless training dataset of this process (see module docstring).

  `example_fn(features, seed, config, builder, reader)` makes one example (default: the
  AVSlowFast one, `_train_example`); `ltl_pipeline` passes Listen to Look's clips.
  """
  example_fn = example_fn or _train_example
  global_batch = config.input.batch_size
  if global_batch % process_count:
    raise ValueError(
      f'input.batch_size={global_batch} does not divide by process_count={process_count}'
    )
  local_batch = global_batch // process_count
  builder = get_builder(config)
  reader = _Reader(builder, config.input.train_split)
  size = reader.size

  @functools.lru_cache(maxsize=4)
  def permutation(epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(size).astype(np.int64)

  def locate(counter: np.ndarray) -> np.ndarray:
    step, k = divmod(int(counter), local_batch)
    position = step * global_batch + process_index * local_batch + k
    epoch, offset = divmod(position, size)
    return np.array([epoch, permutation(epoch)[offset]], np.int64)

  def load(counter):
    epoch_index = tf.numpy_function(locate, [counter], tf.int64, stateful=False)
    epoch_index.set_shape([2])
    features = reader.parse(epoch_index[1])
    return example_fn(
      features, _example_seed(seed, epoch_index[0], epoch_index[1]), config, builder, reader
    )

  ds = tf.data.Dataset.range(start_step * local_batch, np.iinfo(np.int64).max)
  ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local_batch, drop_remainder=True).map(_easy_negative_fallback)
  return ds.with_options(_options()).prefetch(config.input.prefetch)


def make_train_iterator(
  config, *, seed: int, start_step: int = 0, process_index: int = 0, process_count: int = 1
) -> Iterator[dict[str, np.ndarray]]:
  ds = make_train_dataset(
    config,
    seed=seed,
    start_step=start_step,
    process_index=process_index,
    process_count=process_count,
  )
  return ds.as_numpy_iterator()


def _eval_example(features, config, builder, reader, multi_view: bool) -> dict:
  inp, aud = config.input, config.audio
  pathways = tuple(config.model.pathways)
  num_temporal = inp.num_temporal_views if multi_view else 1
  num_spatial = inp.num_spatial_views if multi_view else 1
  geometry = {'num_frames': inp.num_frames, 'tau': inp.tau, 'target_fps': inp.target_fps}
  features = ops.sample_eval_clips(
    features,
    num_views=num_temporal,
    alpha=config.model.alpha,
    # The test protocol's view starts (`ops.VIEW_STARTS`); the single-view periodic
    # evaluation always takes the centre clip.
    view_starts=inp.get('view_starts', 'spread') if multi_view else 'spread',
    **geometry,
  )
  num_fast = config.model.alpha * inp.num_frames
  slow_pos = ops.slow_from_fast(num_fast, config.model.alpha)
  out = {}
  num_views = num_temporal * num_spatial
  visual = [p for p in pathways if p in ('slow', 'fast')]
  if visual:
    index = (
      features['fast_index']
      if 'fast' in visual
      else tf.gather(features['fast_index'], slow_pos, axis=1)
    )
    jpegs = tf.reshape(reader.frames(features, index), [-1])  # only the sampled frames
    local = tf.reshape(tf.range(tf.size(index)), tf.shape(index))
    images = ops.decode_frames(jpegs, local)  # (Vt, n, H, W, 3)
    n = index.shape[1]
    flat = tf.reshape(images, tf.concat([[-1], tf.shape(images)[2:]], 0))
    crops = ops.spatial_crops(
      flat, short_side=inp.test_short_side, crop_size=inp.test_crop_size, num_crops=num_spatial
    )
    size = inp.test_crop_size
    crops = tf.reshape(crops, [num_spatial, num_temporal, n, size, size, 3])
    video = tf.reshape(tf.transpose(crops, [1, 0, 2, 3, 4, 5]), [num_views, n, size, size, 3])
    video = ops.normalize_video(tf.round(video), inp.mean, inp.std)
    if 'fast' in visual:
      out['fast'] = video
      if 'slow' in visual:
        out['slow'] = tf.gather(video, slow_pos, axis=1)
    else:
      out['slow'] = video
  if 'audio' in pathways:
    features, num_samples = ops.audio_window(features, sample_rate=aud.sample_rate, **geometry)
    spectrograms = tf.map_fn(
      lambda s: ops.audio_features(
        {**features, 'audio_start': s}, aud, start_key='audio_start', num_samples=num_samples
      ),
      features['audio_start'],
      fn_output_signature=tf.float32,
    )
    out['audio'] = tf.repeat(spectrograms, num_spatial, axis=0)
    out['has_audio'] = tf.cast(features['has_audio'], tf.float32)
  out.update(_labels(features, builder))
  return out


def make_eval_dataset(
  config,
  *,
  split: str | None = None,
  multi_view: bool = True,
  process_index: int = 0,
  process_count: int = 1,
  example_fn=None,
) -> tf.data.Dataset:
  """Finite; every example exactly once over all processes, padding rows have `_mask` 0.

  `example_fn(features, config, builder, reader, multi_view)` as `make_train_dataset`'s
  (default `_eval_example`).
  """
  example_fn = example_fn or _eval_example
  global_batch = config.input.eval_batch_size
  if global_batch % process_count:
    raise ValueError(
      f'input.eval_batch_size={global_batch} does not divide by process_count={process_count}'
    )
  local_batch = global_batch // process_count
  builder = get_builder(config)
  reader = _Reader(builder, split or config.input.eval_split)
  num_batches = -(-reader.size // global_batch)
  steps = np.arange(num_batches)[:, None] * global_batch
  positions = (steps + process_index * local_batch + np.arange(local_batch)[None]).reshape(-1)

  def load(position):
    real = position < reader.size
    index = tf.where(real, position, 0)
    out = example_fn(reader.parse(index), config, builder, reader, multi_view)
    out['video_index'] = tf.cast(index, tf.int32)
    out['_mask'] = tf.cast(real, tf.float32)
    return out

  ds = tf.data.Dataset.from_tensor_slices(positions.astype(np.int64))
  ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(local_batch, drop_remainder=True).with_options(_options()).prefetch(1)


def make_eval_iterator(
  config,
  *,
  split: str | None = None,
  multi_view: bool = True,
  process_index: int = 0,
  process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  ds = make_eval_dataset(
    config,
    split=split,
    multi_view=multi_view,
    process_index=process_index,
    process_count=process_count,
  )
  return ds.as_numpy_iterator()
