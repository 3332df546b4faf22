"""Readers of AVA's own files: box CSVs, excluded timestamps, the label map, frame lists, proposals.

Formats (spec `ava.md` 1.1):
- box CSVs, no header, one row per (box, action): `video_id, timestamp, x1, y1, x2, y2,
  action_id, person_id` with normalised coordinates. Person-detector files put an empty
  action (or a label) in column 6 and the detector's score in column 7.
- excluded timestamps: `video_id, timestamp`.
- `label_map.pbtxt`: protobuf text, `item { name: "..." id: N }` (v2.2 spells `label_id:`).
- frame lists: space-separated with a header, `original_video_id video_id frame_id path labels`.
- proposals pickle (the released dense-proposal files): a dict from `"video_id,%04d"` to a
  (K, 4) or (K, 5) float array of x1, y1, x2, y2[, score]. Pickles can run code when loaded, so
  they are read with an unpickler that resolves only numpy's array-reconstruction globals.

Every reader fails with `AvaFileError` naming the file, the line and what was expected. No
TensorFlow here.
"""

import csv
import io
import math
import pickle
import re
from typing import NamedTuple

import numpy as np

from avsf_jax import storage

NUM_CLASSES = 80
# The 60 classes of the standard protocol (`ava_action_list_v2.1_for_activitynet_2018.pbtxt`;
# v2.2 has the same ids): the evaluator's whitelist when no label map is given.
EVALUATED_CLASS_IDS = (
  1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27, 28, 29, 30, 34, 36, 37,
  38, 41, 43, 45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68,
  69, 70, 72, 73, 74, 76, 77, 78, 79, 80,
)  # fmt: skip


class AvaFileError(storage.FileFault):
  """A malformed AVA file; the message names the file, the line and what was expected."""


def _read_text(path: str, what: str) -> str:
  """The file as text; AvaFileError naming it when missing, denied, empty or binary."""
  try:
    return storage.read_text(path, what)
  except storage.FileFault as error:
    raise AvaFileError(str(error)) from None


class BoxRow(NamedTuple):
  """One row of a box CSV.

  `action_id` is -1 for an unlabelled box (a detector box, or a negative of the
  `include_negative` training files). `person_id` is set for annotations, `score` for
  detections.
  """

  video_id: str
  timestamp: int
  box: tuple[float, float, float, float]  # x1, y1, x2, y2 in [0, 1]
  action_id: int
  person_id: int = -1
  score: float = 1.0


def _fail(path: str, line: int | None, message: str):
  where = f'{path}:{line}' if line is not None else str(path)
  raise AvaFileError(f'{where}: {message}')


def _int(text: str, path: str, line: int, what: str) -> int:
  try:
    return int(text)
  except ValueError:
    _fail(path, line, f'{what}: expected an integer, got {text!r}')


def _float(text: str, path: str, line: int, what: str) -> float:
  try:
    value = float(text)
  except ValueError:
    _fail(path, line, f'{what}: expected a number, got {text!r}')
  if not math.isfinite(value):
    _fail(path, line, f'{what}: expected a finite number, got {text!r}')
  return value


def _box(fields: list[str], path: str, line: int) -> tuple[float, float, float, float]:
  names = ('x1', 'y1', 'x2', 'y2')
  box = tuple(_float(f, path, line, n) for f, n in zip(fields, names))
  if not all(0.0 <= v <= 1.0 for v in box):
    _fail(path, line, f'box: expected normalised coordinates in [0, 1], got {box}')
  if box[2] < box[0] or box[3] < box[1]:
    _fail(path, line, f'box: expected x1 <= x2 and y1 <= y2, got {box}')
  return box


def _rows(path: str):
  with open(path, newline='') as f:
    for line, fields in enumerate(csv.reader(f), start=1):
      if fields and any(field.strip() for field in fields):
        yield line, [field.strip() for field in fields]


def read_boxes(path: str, *, detections: bool = False, num_classes: int = NUM_CLASSES) -> list:
  """Reads an annotation CSV (`detections=False`) or a person-detection CSV as `BoxRow`s.

  Args:
    path: the CSV file.
    detections: column 7 is the detector's score in [0, 1] rather than a person id.
    num_classes: action ids must lie in 1..num_classes (or be empty: an unlabelled box,
      `action_id` -1).
  """
  rows = []
  for line, fields in _rows(path):
    if len(fields) != 8:
      _fail(
        path,
        line,
        'expected 8 columns (video_id, timestamp, x1, y1, x2, y2, action_id, '
        f'{"score" if detections else "person_id"}), got {len(fields)}',
      )
    if not fields[0]:
      _fail(path, line, 'video_id: expected a non-empty id')
    timestamp = _int(fields[1], path, line, 'timestamp')
    box = _box(fields[2:6], path, line)
    action = -1 if fields[6] in ('', '-1') else _int(fields[6], path, line, 'action_id')
    if action != -1 and not 1 <= action <= num_classes:
      _fail(path, line, f'action_id: expected 1..{num_classes} or empty, got {action}')
    if detections:
      score = _float(fields[7], path, line, 'score')
      if not 0.0 <= score <= 1.0:
        _fail(path, line, f'score: expected a detector score in [0, 1], got {score}')
      rows.append(BoxRow(fields[0], timestamp, box, action, score=score))
    else:
      person = _int(fields[7], path, line, 'person_id')
      rows.append(BoxRow(fields[0], timestamp, box, action, person_id=person))
  return rows


def read_excluded_timestamps(path: str) -> set[tuple[str, int]]:
  """`video_id, timestamp` rows -> the set of excluded keyframes."""
  excluded = set()
  for line, fields in _rows(path):
    if len(fields) != 2 or not fields[0]:
      _fail(path, line, f'expected 2 columns (video_id, timestamp), got {fields}')
    excluded.add((fields[0], _int(fields[1], path, line, 'timestamp')))
  return excluded


_TOKEN = re.compile(r'\s*(?:(\{)|(\})|([A-Za-z_]\w*)\s*:|("(?:[^"\\]|\\.)*")|([^\s{}#"]+))')
_STRING_ESCAPES = {'n': '\n', 't': '\t', '"': '"', "'": "'", '\\': '\\'}


def _tokens(text: str, path: str):
  """(line, kind, value) tokens of protobuf text: '{', '}', 'key', 'string', 'scalar'.

  Label maps never split a token over lines, so the text is read line by line; `#` starts
  a comment outside strings.
  """
  for line, content in enumerate(text.splitlines(), start=1):
    position = 0
    while position < len(content):
      rest = content[position:].lstrip()
      if not rest or rest.startswith('#'):
        break
      match = _TOKEN.match(content, position)
      if not match:
        _fail(path, line, f'unreadable protobuf text at {content[position:].strip()!r}')
      position = match.end()
      open_, close, key, string, scalar = match.groups()
      if open_:
        yield line, '{', open_
      elif close:
        yield line, '}', close
      elif key:
        yield line, 'key', key
      elif string:
        body = re.sub(r'\\(.)', lambda m: _STRING_ESCAPES.get(m.group(1), m.group(0)), string[1:-1])
        yield line, 'string', body
      else:
        yield line, 'scalar', scalar


def read_label_map(path: str) -> dict[int, str]:
  """`label_map.pbtxt` -> {class id: name}, in file order.

  Accepts exactly `item { name: "..." id: N [label_type: ...] }` blocks (`label_id:` for
  `id:` as in v2.2); anything else is an error, as are duplicate ids or a missing name/id.
  """
  text = _read_text(path, 'label map')
  classes: dict[int, str] = {}
  tokens = iter(_tokens(text, path))
  for line, kind, value in tokens:
    if (kind, value) != ('key', 'item') and not (kind == 'scalar' and value == 'item'):
      _fail(path, line, f'expected "item {{", got {value!r}')
    line, kind, value = next(tokens, (line, 'end', 'end of file'))
    if kind != '{':
      _fail(path, line, f'expected "{{" after "item", got {value!r}')
    fields: dict[str, str] = {}
    start = line
    while True:
      line, kind, value = next(tokens, (line, 'end', 'end of file'))
      if kind == '}':
        break
      if kind != 'key':
        _fail(path, line, f'expected a field name (name:, id:, label_id:) or "}}", got {value!r}')
      key = value
      line, kind, value = next(tokens, (line, 'end', 'end of file'))
      if kind not in ('string', 'scalar'):
        _fail(path, line, f'{key}: expected a value, got {value!r}')
      if key in fields:
        _fail(path, line, f'{key}: given twice in one item')
      fields[key] = (kind, value)
    unknown = set(fields) - {'name', 'id', 'label_id', 'label_type'}
    if unknown:
      _fail(path, start, f'item: unexpected fields {sorted(unknown)}')
    if 'id' in fields and 'label_id' in fields:
      _fail(path, start, 'item: expected one of id: and label_id:, got both')
    id_field = fields.get('id') or fields.get('label_id')
    if id_field is None or 'name' not in fields:
      _fail(path, start, f'item: expected a name: and an id: (or label_id:), got {sorted(fields)}')
    if fields['name'][0] != 'string':
      _fail(path, start, f'name: expected a quoted string, got {fields["name"][1]!r}')
    class_id = _int(id_field[1], path, start, 'id') if id_field[0] == 'scalar' else None
    if class_id is None or class_id < 1:
      _fail(path, start, f'id: expected a positive integer, got {id_field[1]!r}')
    if class_id in classes:
      _fail(path, start, f'id: {class_id} given twice')
    classes[class_id] = fields['name'][1]
  if not classes:
    _fail(path, None, 'expected at least one "item { name: ... id: ... }"')
  return classes


class FrameRow(NamedTuple):
  """One row of a frame list: a frame's path (relative to the frames folder) and its index."""

  original_video_id: str
  video_index: int
  frame_id: int
  path: str
  labels: str


_FRAME_LIST_HEADERS = (
  ['original_video_id', 'video_id', 'frame_id', 'path', 'labels'],
  ['original_vido_id', 'video_id', 'frame_id', 'path', 'labels'],  # as LFB's files spell it
)


def read_frame_list(path: str) -> list[FrameRow]:
  """A space-separated frame list with its header -> `FrameRow`s, in file order."""
  rows = []
  text_lines = _read_text(path, 'frame list').splitlines(True)
  for line, text in enumerate(text_lines, start=1):
    fields = text.split()
    if line == 1:
      if fields not in _FRAME_LIST_HEADERS:
        _fail(path, line, f'expected the header {" ".join(_FRAME_LIST_HEADERS[0])!r}')
      continue
    if not fields:
      continue
    if len(fields) != 5:
      _fail(path, line, f'expected 5 space-separated columns, got {len(fields)}')
    rows.append(
      FrameRow(
        fields[0],
        _int(fields[1], path, line, 'video_id'),
        _int(fields[2], path, line, 'frame_id'),
        fields[3],
        fields[4],
      )
    )
  return rows


_NUMPY_GLOBALS = {
  (module, name)
  for module in ('numpy.core.multiarray', 'numpy._core.multiarray')
  for name in ('_reconstruct', 'scalar')
} | {
  ('numpy', 'ndarray'),
  ('numpy', 'dtype'),
  ('numpy.core.numeric', '_frombuffer'),
  ('numpy._core.numeric', '_frombuffer'),
  ('_codecs', 'encode'),  # how protocol 2 writes an array's bytes
}


class _ArrayUnpickler(pickle.Unpickler):
  """Resolves only numpy's array/dtype reconstruction; any other global is refused."""

  def __init__(self, file, path: str):
    super().__init__(file)
    self._path = path

  def find_class(self, module: str, name: str):
    if (module, name) in _NUMPY_GLOBALS:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(
      f'{self._path}: refusing to load global {module}.{name}: a proposals pickle may hold '
      'only dicts, lists, strings, numbers and numpy arrays'
    )


def load_proposals(path: str) -> dict[tuple[str, int], np.ndarray]:
  """A proposals pickle -> {(video_id, timestamp): (K, 5) float32 x1, y1, x2, y2, score}.

  (K, 4) arrays get score 1. Loaded without running code from the file.
  """
  try:
    data = storage.read_bytes(path, 'proposals pickle')
  except storage.FileFault as error:
    raise AvaFileError(str(error)) from None
  try:
    loaded = _ArrayUnpickler(io.BytesIO(data), path).load()
  except pickle.UnpicklingError as error:
    if str(error).startswith(f'{path}:'):
      raise AvaFileError(str(error)) from None
    _fail(path, None, f'expected a pickle file ({storage.first_line(error)})')
  except (EOFError, ValueError, TypeError, AttributeError) as error:
    _fail(path, None, f'expected a pickle file ({storage.first_line(error)})')
  if not isinstance(loaded, dict):
    _fail(path, None, f'expected a dict of "video_id,timestamp" -> boxes, got {type(loaded)}')
  proposals = {}
  for key, boxes in loaded.items():
    parts = key.rsplit(',', 1) if isinstance(key, str) else []
    if len(parts) != 2 or not parts[0] or not parts[1].isdigit():
      _fail(path, None, f'key {key!r}: expected "video_id,timestamp"')
    if not isinstance(boxes, np.ndarray) or boxes.dtype.kind != 'f':
      _fail(path, None, f'{key}: expected a float numpy array, got {type(boxes).__name__}')
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 5):
      _fail(path, None, f'{key}: expected (K, 4) or (K, 5) boxes, got shape {boxes.shape}')
    if boxes.shape[1] == 4:
      boxes = np.concatenate([boxes, np.ones((len(boxes), 1), boxes.dtype)], axis=1)
    if not np.all(np.isfinite(boxes)):
      _fail(path, None, f'{key}: expected finite values')
    proposals[(parts[0], int(parts[1]))] = boxes.astype(np.float32)
  return proposals
