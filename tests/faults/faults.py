"""The faults of the fault-injection suite: each damages one file in place.

Permission denied: the tests run as root, for whom `chmod 000` denies nothing. `deny(path)`
therefore makes Python's `open` of exactly that path raise the PermissionError a non-root
user gets (`[Errno 13] Permission denied`); every reader under test opens user files through
Python (`avsf_jax.storage`, epath, orbax's metadata files), or checks them through it first
(`storage.check_readable`) where a C library (PyAV) opens them itself.
"""

import builtins
import contextlib
import hashlib
import io
import os
import pathlib
import zlib

FAULTS = ('truncated', 'zero_bytes', 'flipped', 'text', 'png', 'missing', 'permission')


def _png() -> bytes:
  """A valid 1x1 PNG, built by hand (signature, IHDR, IDAT, IEND)."""

  def chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return len(data).to_bytes(4, 'big') + body + zlib.crc32(body).to_bytes(4, 'big')

  ihdr = (1).to_bytes(4, 'big') * 2 + bytes([8, 2, 0, 0, 0])
  idat = zlib.compress(b'\x00\xff\x00\x00')
  return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', idat) + chunk(b'IEND', b'')


PNG = _png()


def inject(path: pathlib.Path, fault: str) -> None:
  """Damages `path` with `fault` (`permission` is applied by `deny` at read time)."""
  data = path.read_bytes()
  if fault == 'truncated':
    path.write_bytes(data[: len(data) // 2])
  elif fault == 'zero_bytes':
    path.write_bytes(b'')
  elif fault == 'flipped':
    middle = len(data) // 2
    damaged = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path.write_bytes(data[:middle] + damaged + data[middle + 64 :])
  elif fault == 'text':
    path.write_text('this is a text file, not what you expected\n')
  elif fault == 'png':
    path.write_bytes(PNG)
  elif fault == 'missing':
    path.unlink()
  elif fault != 'permission':
    raise ValueError(fault)


@contextlib.contextmanager
def deny(path: pathlib.Path | None):
  """Python's open of `path` raises PermissionError inside the block (see the module doc)."""
  if path is None:
    yield
    return
  target = os.path.realpath(path)
  original_open, original_io_open = builtins.open, io.open

  def guarded(opener):
    def wrapped(file, *args, **kwargs):
      if isinstance(file, str | os.PathLike) and os.path.realpath(file) == target:
        raise PermissionError(13, 'Permission denied', os.fspath(file))
      return opener(file, *args, **kwargs)

    return wrapped

  builtins.open, io.open = guarded(original_open), guarded(original_io_open)
  try:
    yield
  finally:
    builtins.open, io.open = original_open, original_io_open


def hashes(root: pathlib.Path) -> dict[str, str]:
  """sha256 of every file under `root` (or of `root` itself), by relative path."""
  root = pathlib.Path(root)
  files = [root] if root.is_file() else sorted(p for p in root.rglob('*') if p.is_file())
  return {
    str(p.relative_to(root.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
  }
