"""One filesystem layer for every path a user passes: local paths and `gs://` URLs alike.

Paths are `etils.epath.Path`s (the layer orbax already writes checkpoints through; for
`gs://` it uses TensorFlow's `tf.io.gfile` when TensorFlow is installed, else `gcsfs`).
Local relative paths resolve against the working directory; URLs are never passed through
`os.path.abspath`. Writes of small files are atomic: written beside the target under a
temporary name and renamed into place (on object stores the rename is a copy of a complete
object, so a reader never sees half a file).
"""

import json
import os
import uuid
from typing import Any

from etils import epath


def is_url(path: str | os.PathLike) -> bool:
  return '://' in os.fspath(path)


def path(p: str | os.PathLike) -> epath.Path:
  """`p` as an epath.Path: URLs as they are, local paths made absolute."""
  text = os.fspath(p)
  return epath.Path(text if is_url(text) else os.path.abspath(text))


def write_text(target: str | os.PathLike, text: str) -> epath.Path:
  """Writes `text` to `target` atomically (temporary file, then rename); returns the path."""
  target = path(target)
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.parent / f'.{target.name}.tmp-{uuid.uuid4().hex[:8]}'
  tmp.write_text(text)
  tmp.replace(target)
  return target


def write_json(target: str | os.PathLike, data: Any, **kwargs: Any) -> epath.Path:
  kwargs.setdefault('indent', 2)
  return write_text(target, json.dumps(data, **kwargs))


def write_bytes(target: str | os.PathLike, data: bytes) -> epath.Path:
  target = path(target)
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.parent / f'.{target.name}.tmp-{uuid.uuid4().hex[:8]}'
  tmp.write_bytes(data)
  tmp.replace(target)
  return target
