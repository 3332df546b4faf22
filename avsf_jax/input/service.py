"""The training pipeline on the tf.data service: decoding on CPU hosts beside the accelerators.

A tf.data service worker receives the dataset as a serialized graph and runs it in its own
process, so every step of that graph must be a TensorFlow op. The local pipeline
(`pipeline.py`) reads ArrayRecord through `tf.numpy_function`, which only runs in the
process that built the dataset; this module builds the same training examples from pure
TensorFlow ops instead:

- **reading**: a per-example file store next to the prepared data
  (`examples-<split>/<index:09d>`, written once by `export_split`), each file a
  `tf.train.Example` holding the TFDS example record (`record`) and the video's JPEG frames
  (`frames`); `tf.io.read_file` reads it (local paths and gs:// alike);
- **the permutation**: `tf.random.experimental.index_shuffle` keyed by (seed, epoch);
- **everything after parsing**: the local pipeline's own graph (`pipeline._train_example`):
  sampling, JPEG decoding, crops, log-mel.

Every random draw of an example is keyed by (seed, epoch, index) as in the local pipeline, so
one epoch of this stream holds exactly the local pipeline's examples, value for value; only
their order differs (the local permutation is numpy's). Each batch is one step's rows
`[step * b, (step + 1) * b)` of this stream. On the service the source is split by step
(`ShardingPolicy.DYNAMIC`): every step is produced once, by whichever worker asks first, and
batches from different workers may arrive out of step order; with one worker they arrive in
order.

Workers need only TensorFlow (the graph holds no avsf_jax code) and read access to the
store. Servers: `python -m avsf_jax.input.service_servers {dispatcher,worker}` (docs/data.md).
"""

import concurrent.futures
import os
import time
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
from array_record.python import array_record_data_source

from avsf_jax.input import pipeline
from avsf_jax.input.prepare import builders

# The data source protocol of `experiment.data_source`: info and evaluation are local.
dataset_info = pipeline.dataset_info
make_eval_iterator = pipeline.make_eval_iterator

COMPLETE_MARKER = '.complete'  # in an examples-<split> folder: every file is written
_PERMUTATION_TAG = 3
_INDEX_DIGITS = 9
PYTHON_OPS = frozenset({'PyFunc', 'PyFuncStateless', 'EagerPyFunc'})


def store_path(data_dir: str, split: str) -> str:
  """The per-example file store of one split."""
  return os.path.join(data_dir, f'examples-{split}')


def example_path(root: str, index: int) -> str:
  return os.path.join(root, f'{index:0{_INDEX_DIGITS}d}')


def _int_feature(example: tf.train.Example, key: str) -> int:
  return int(example.features.feature[key].int64_list.value[0])


def export_split(builder: builders.VideoBuilder, split: str, *, num_threads: int = 16) -> str:
  """Writes the per-example file store of `split` (if not complete); returns its folder.

  Reads the prepared ArrayRecord files (the TFDS records and the frame store); the completion
  marker is written last, so an interrupted export is redone.
  """
  root = store_path(builder.data_dir, split)
  marker = os.path.join(root, COMPLETE_MARKER)
  if tf.io.gfile.exists(marker):
    return root
  if split not in builder.info.splits:
    raise ValueError(f'{builder.name}: no split {split!r}; has {sorted(builder.info.splits)}')
  records = array_record_data_source.ArrayRecordDataSource(
    [str(p) for p in builder.info.splits[split].filepaths]
  )
  frames = array_record_data_source.ArrayRecordDataSource(
    [builders.frames_path(builder.data_dir, split)]
  )
  tf.io.gfile.makedirs(root)

  def write(index: int) -> None:
    record = records[index]
    parsed = tf.train.Example.FromString(record)
    offset = _int_feature(parsed, 'frame_offset')
    count = _int_feature(parsed, 'num_frames')
    jpegs = frames.__getitems__(list(range(offset, offset + count)))
    example = tf.train.Example()
    example.features.feature['record'].bytes_list.value.append(record)
    example.features.feature['frames'].bytes_list.value.extend(jpegs)
    with tf.io.gfile.GFile(example_path(root, index), 'wb') as f:
      f.write(example.SerializeToString())

  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    list(pool.map(write, range(len(records))))
  builders.write_marker(marker, f'{len(records)} examples\n')
  return root


def wait_for_export(root: str, timeout_s: float, poll_s: float = 1.0) -> None:
  deadline = time.monotonic() + timeout_s
  while not tf.io.gfile.exists(os.path.join(root, COMPLETE_MARKER)):
    if time.monotonic() > deadline:
      raise TimeoutError(
        f'{root}: process 0 has not finished exporting the per-example store after '
        f'{timeout_s:.0f} s (no {COMPLETE_MARKER} marker)'
      )
    time.sleep(poll_s)


class _FileReader:
  """The `pipeline._Reader` interface over the per-example file store, in TensorFlow ops."""

  def __init__(self, builder: builders.VideoBuilder, root: str, size: int):
    self.root = root
    self.size = size
    self.features = builder.info.features

  def parse(self, index: tf.Tensor) -> dict:
    name = tf.strings.as_string(index, width=_INDEX_DIGITS, fill='0')
    parsed = tf.io.parse_single_example(
      tf.io.read_file(tf.strings.join([self.root, name], separator='/')),
      {'record': tf.io.FixedLenFeature([], tf.string), 'frames': tf.io.VarLenFeature(tf.string)},
    )
    features = self.features.deserialize_example(parsed['record'])
    features['_frames'] = parsed['frames'].values
    return features

  def frames(self, features: dict, index: tf.Tensor) -> tf.Tensor:
    return tf.gather(features['_frames'], tf.cast(index, tf.int64))


def make_train_dataset(
  config,
  *,
  seed: int,
  start_step: int = 0,
  process_index: int = 0,
  process_count: int = 1,
  num_steps: int | None = None,
) -> tf.data.Dataset:
  """This process's training batches from steps `start_step` on, built from TF ops only.

  `num_steps` (None: endless) bounds the stream. Not distributed: `distribute` sends it to the
  service. Process 0 writes the per-example store on first use; the others wait for it.
  """
  global_batch = config.input.batch_size
  if global_batch % process_count:
    raise ValueError(
      f'input.batch_size={global_batch} does not divide by process_count={process_count}'
    )
  local_batch = global_batch // process_count
  builder = pipeline.get_builder(config)
  split = config.input.train_split
  if process_index == 0:
    root = export_split(builder, split)
  else:
    root = store_path(builder.data_dir, split)
    wait_for_export(root, float(os.environ.get('AVSF_BUILD_WAIT_S', pipeline.BUILD_WAIT_S)))
  size = builder.info.splits[split].num_examples
  reader = _FileReader(builder, root, size)

  def load(counter):
    step, k = counter // local_batch, counter % local_batch
    position = step * global_batch + process_index * local_batch + k
    epoch, offset = position // size, position % size
    key = tf.random.experimental.stateless_fold_in(
      tf.constant([seed, _PERMUTATION_TAG], tf.int64), epoch
    )
    index = tf.random.experimental.index_shuffle(offset, key, tf.constant(size - 1, tf.int64))
    return pipeline._train_example(
      reader.parse(index), pipeline._example_seed(seed, epoch, index), config, builder, reader
    )

  end = np.iinfo(np.int64).max if num_steps is None else start_step + num_steps
  # The source is the step counter, so the service's dynamic sharding hands out whole steps.
  ds = tf.data.Dataset.range(start_step, end)
  ds = ds.flat_map(lambda s: tf.data.Dataset.range(s * local_batch, (s + 1) * local_batch))
  ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local_batch, drop_remainder=True).map(pipeline._easy_negative_fallback)
  return ds.with_options(pipeline._options())


def distribute(ds: tf.data.Dataset, address: str, *, job_name: str | None = None):
  """`ds` produced by the tf.data service at `address` (`host:port` or `grpc://host:port`)."""
  if '://' not in address:
    address = f'grpc://{address}'
  return ds.apply(
    tf.data.experimental.service.distribute(
      processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
      service=address,
      job_name=job_name,
    )
  )


def graph_ops(ds: tf.data.Dataset) -> set[str]:
  """The op types of `ds`'s serialized graph, its function library included."""
  graph = tf.compat.v1.GraphDef.FromString(ds._as_serialized_graph().numpy())  # noqa: SLF001
  ops = {node.op for node in graph.node}
  for function in graph.library.function:
    ops.update(node.op for node in function.node_def)
  return ops


def check_serializable(ds: tf.data.Dataset) -> None:
  """Raises ValueError if `ds` holds Python ops, which a remote service worker cannot run."""
  found = graph_ops(ds) & PYTHON_OPS
  if found:
    raise ValueError(
      f'the dataset graph holds Python ops {sorted(found)}; tf.data service workers run '
      'the graph in another process, where they do not exist'
    )


def make_train_iterator(
  config, *, seed: int, start_step: int = 0, process_index: int = 0, process_count: int = 1
) -> Iterator[dict[str, np.ndarray]]:
  """The training batches from the service at `config.input.tf_data_service` (empty: local)."""
  ds = make_train_dataset(
    config,
    seed=seed,
    start_step=start_step,
    process_index=process_index,
    process_count=process_count,
  )
  address = config.input.tf_data_service
  if address:
    check_serializable(ds)
    ds = distribute(ds, address)
  return ds.prefetch(config.input.prefetch).as_numpy_iterator()
