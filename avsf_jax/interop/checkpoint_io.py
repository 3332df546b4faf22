"""Loading foreign checkpoints without ever executing code from the file.

`.pyth` / `.pt` files go through torch's weights-only unpickler (`torch.load(...,
weights_only=True)`); `.pkl` (Caffe2 blobs) through an unpickler that admits only numpy
arrays, numbers, strings and containers. A pickle that asks for anything else is refused.
A file that is missing, unreadable, truncated, of another format, or that holds NaN or Inf is
reported as a `storage.FileFault` naming it and the fault in one line.
"""

import io
import pickle
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from avsf_jax import storage


class UnsafeCheckpointError(ValueError):
  """The file asked the unpickler for a global that is not plain data."""


# (module, name) pairs a numpy-array pickle needs; nothing here can run code.
_SAFE_GLOBALS = {
  ('numpy.core.multiarray', '_reconstruct'),
  ('numpy._core.multiarray', '_reconstruct'),
  ('numpy.core.multiarray', 'scalar'),
  ('numpy._core.multiarray', 'scalar'),
  ('numpy', 'ndarray'),
  ('numpy', 'dtype'),
  ('collections', 'OrderedDict'),
  ('builtins', 'bytearray'),
}


class _DataOnlyUnpickler(pickle.Unpickler):
  def __init__(self, file, path: str):
    super().__init__(file, encoding='latin1')
    self._path = path

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in _SAFE_GLOBALS:
      return super().find_class(module, name)
    raise UnsafeCheckpointError(
      f'{self._path}: refusing to load: the pickle asks for {module}.{name}, which is not '
      'plain data (only numpy arrays, numbers, strings and containers are allowed)'
    )


def load_pickle_blobs(path: str) -> dict[str, np.ndarray]:
  """A Caffe2 `.pkl` ({'blobs': {name: array}} or {name: array}) as float arrays."""
  raw = storage.read_bytes(path, 'Caffe2 pickle')
  try:
    data = _DataOnlyUnpickler(io.BytesIO(raw), path).load()
  except UnsafeCheckpointError:
    raise
  except Exception as e:  # noqa: BLE001 - pickle raises many kinds on damaged bytes
    raise storage.FileFault(
      f'{path}: not a readable pickle (truncated, damaged or another format: '
      f'{storage.first_line(e)})'
    ) from None
  if isinstance(data, Mapping) and 'blobs' in data:
    data = data['blobs']
  if not isinstance(data, Mapping):
    raise storage.FileFault(f'{path}: expected a dict of blobs, got {type(data).__name__}')
  arrays = {
    str(k): np.asarray(v) for k, v in data.items() if isinstance(v, np.ndarray | np.generic)
  }
  return _finite(arrays, path)


def _finite(arrays: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
  for name, value in arrays.items():
    if np.issubdtype(value.dtype, np.inexact) and not np.all(np.isfinite(value)):
      raise storage.FileFault(f'{path}: tensor {name} holds NaN or Inf')
  return arrays


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """A `.pyth` state dict (bare, or under 'model_state' / 'state_dict') as numpy arrays."""
  try:
    import torch  # noqa: PLC0415 - optional dependency, only needed for PyTorch files
  except ImportError as e:
    raise ImportError(f'{path}: reading PyTorch checkpoints needs `pip install torch`') from e
  raw = storage.read_bytes(path, 'PyTorch checkpoint')
  try:
    data = torch.load(io.BytesIO(raw), map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    unsafe = [line for line in lines if re.search(r'global', line, re.I)]
    if unsafe:
      raise UnsafeCheckpointError(f'{path}: refusing to load: {unsafe[0]}') from e
    detail = next((line for line in lines if 'Unsupported operand' in line), lines[-1])
    raise storage.FileFault(
      f'{path}: not a readable PyTorch checkpoint (damaged or another format: {detail})'
    ) from None
  except Exception as e:  # noqa: BLE001 - torch raises many kinds on damaged files
    raise storage.FileFault(
      f'{path}: not a readable PyTorch checkpoint (truncated, damaged or another format: '
      f'{storage.first_line(e)})'
    ) from None
  for key in ('model_state', 'state_dict', 'model'):
    if isinstance(data, Mapping) and key in data and isinstance(data[key], Mapping):
      data = data[key]
      break
  if not isinstance(data, Mapping):
    raise storage.FileFault(f'{path}: expected a state dict, got {type(data).__name__}')
  out = {}
  for name, value in data.items():
    if isinstance(value, torch.Tensor):
      out[str(name)] = value.detach().cpu().float().numpy()
  return _finite(out, path)


def load_checkpoint(path: str) -> dict[str, np.ndarray]:
  """Dispatches on the file suffix: `.pkl` -> Caffe2 blobs, anything else -> torch."""
  if path.endswith('.pkl'):
    return load_pickle_blobs(path)
  return load_torch_state_dict(path)
