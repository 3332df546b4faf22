"""The files between a Beam decode (`beam_prepare.py`) and the builder that assembles them.

One file per annotation record, `<decoded_dir>/<split>/<position:09d>.pickle`, holding what
`records.prepare_record` returned for it, `(key, example or None, skip or None)`: Beam workers
write them in any order, the builder reads them in record order (`VideoBuilder(decoded_dir=)`).
The files are this project's own intermediate output (pickled numpy arrays and JPEG bytes);
never point `decoded_dir` at files from elsewhere. Paths may be local or gs://.
"""

import os
import pickle
from collections.abc import Iterator

import tensorflow as tf


def result_path(decoded_dir: str, split: str, position: int) -> str:
  return os.path.join(decoded_dir, split, f'{position:09d}.pickle')


def write(decoded_dir: str, split: str, position: int, result: tuple) -> None:
  """Writes one record's result atomically (a temporary file renamed into place)."""
  path = result_path(decoded_dir, split, position)
  tf.io.gfile.makedirs(os.path.dirname(path))
  tmp = f'{path}.tmp-{os.getpid()}'
  with tf.io.gfile.GFile(tmp, 'wb') as f:
    f.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
  tf.io.gfile.rename(tmp, path, overwrite=True)


def exists(decoded_dir: str, split: str, position: int) -> bool:
  return tf.io.gfile.exists(result_path(decoded_dir, split, position))


def read(decoded_dir: str, split: str, count: int) -> Iterator[tuple]:
  """The results of records `0 .. count - 1` of `split`, in order."""
  for position in range(count):
    path = result_path(decoded_dir, split, position)
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(
        f'{path}: no decoded result for record {position} of split {split!r}; the Beam '
        'decode of this dataset has not finished (run it again: it skips finished records)'
      )
    with tf.io.gfile.GFile(path, 'rb') as f:
      yield pickle.loads(f.read())
