"""One filesystem layer for every path a user passes: local paths and `gs://` URLs alike.

Paths are `etils.epath.Path`s (the layer orbax already writes checkpoints through; for
`gs://` it uses TensorFlow's `tf.io.gfile` when TensorFlow is installed, else `gcsfs`).
Local relative paths resolve against the working directory; URLs are never passed through
`os.path.abspath`. Writes of small files are atomic: written beside the target under a
temporary name and renamed into place (on object stores the rename is a copy of a complete
object, so a reader never sees half a file).

Reading a file somebody handed over goes through `read_bytes` / `read_text` /
`check_readable`, which turn every way it can be unusable (missing, permission denied, a
folder, zero bytes, binary where text was expected) into one `FileFault` whose message names
the file and the fault in one line.
"""

import json
import os
import uuid
from typing import Any

from etils import epath


class FileFault(ValueError):
  """A file cannot be used; the message names the file and what is wrong with it."""


def _os_fault(error: OSError) -> str:
  if isinstance(error, FileNotFoundError):
    return 'missing (no such file)'
  if isinstance(error, PermissionError):
    return 'permission denied'
  if isinstance(error, IsADirectoryError):
    return 'is a folder, expected a file'
  return f'cannot be read ({type(error).__name__}: {error})'


def read_bytes(p: str | os.PathLike, what: str = 'file') -> bytes:
  """The bytes of `p`; FileFault (one line naming the file and fault) when unusable."""
  p = path(p)
  try:
    data = p.read_bytes()
  except OSError as e:
    raise FileFault(f'{p}: the {what} is {_os_fault(e)}') from None
  if not data:
    raise FileFault(f'{p}: the {what} is empty (zero bytes)')
  return data


def read_text(p: str | os.PathLike, what: str = 'file') -> str:
  """`read_bytes` decoded as UTF-8; FileFault when it is not text (a PNG, a pickle...)."""
  data = read_bytes(p, what)
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError:
    raise FileFault(
      f'{path(p)}: the {what} is not UTF-8 text (binary content: the wrong file?)'
    ) from None


def check_readable(p: str | os.PathLike, what: str = 'file') -> epath.Path:
  """Opens `p` and reads one byte: FileFault if it is missing, denied, a folder or empty.
  For files a library opens by itself (PyAV, torch), so that these faults read the same."""
  p = path(p)
  try:
    with p.open('rb') as f:
      first = f.read(1)
  except OSError as e:
    raise FileFault(f'{p}: the {what} is {_os_fault(e)}') from None
  if not first:
    raise FileFault(f'{p}: the {what} is empty (zero bytes)')
  return p


def first_line(error: BaseException) -> str:
  """`Type: first line of the message` (at most 200 characters), for one-line reports."""
  text = str(error).strip().splitlines()
  return f'{type(error).__name__}: {text[0][:200]}' if text else type(error).__name__


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
