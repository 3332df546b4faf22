"""avsf_jax.input.prepare.ava_files: each reader on well-formed files and on each kind of bad
input (the error names the file, the line and what was expected); proposals pickles load
without running code."""

import os
import pickle

import numpy as np
import pytest

from avsf_jax.input.prepare import ava_files


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def test_reads_annotation_rows(tmp_path):
  path = _write(
    tmp_path,
    'ava_val_v2.2.csv',
    '-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,80,1\n'
    '-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,9,1\n'
    '\n'
    '-5KQ66BBWC4,0903,0.1,0.2,0.3,0.4,,7\n',
  )
  rows = ava_files.read_boxes(path)
  assert rows == [
    ava_files.BoxRow('-5KQ66BBWC4', 902, (0.077, 0.151, 0.283, 0.811), 80, person_id=1),
    ava_files.BoxRow('-5KQ66BBWC4', 902, (0.077, 0.151, 0.283, 0.811), 9, person_id=1),
    ava_files.BoxRow('-5KQ66BBWC4', 903, (0.1, 0.2, 0.3, 0.4), -1, person_id=7),
  ]


def test_reads_detection_rows_with_scores(tmp_path):
  path = _write(tmp_path, 'det.csv', 'vid,0902,0.1,0.2,0.3,0.4,,0.93\nvid,0903,0,0,1,1,,1\n')
  rows = ava_files.read_boxes(path, detections=True)
  assert [(r.timestamp, r.action_id, r.score, r.person_id) for r in rows] == [
    (902, -1, 0.93, -1),
    (903, -1, 1.0, -1),
  ]


@pytest.mark.parametrize(
  'line, detections, message',
  [
    ('v,0902,0.1,0.2,0.3,0.4,80', False, 'expected 8 columns'),
    ('v,09a2,0.1,0.2,0.3,0.4,80,1', False, "timestamp: expected an integer, got '09a2'"),
    ('v,0902,0.1,0.2,1.3,0.4,80,1', False, r'box: expected normalised coordinates in \[0, 1\]'),
    ('v,0902,0.3,0.2,0.1,0.4,80,1', False, 'box: expected x1 <= x2'),
    ('v,0902,0.1,0.2,0.3,0.4,81,1', False, 'action_id: expected 1..80 or empty, got 81'),
    ('v,0902,0.1,0.2,0.3,nan,80,1', False, 'y2: expected a finite number'),
    ('v,0902,0.1,0.2,0.3,0.4,80,p', False, 'person_id: expected an integer'),
    ('v,0902,0.1,0.2,0.3,0.4,,1.5', True, r'score: expected a detector score in \[0, 1\]'),
    (',0902,0.1,0.2,0.3,0.4,80,1', False, 'video_id: expected a non-empty id'),
  ],
)
def test_box_csv_errors_name_file_line_and_expectation(tmp_path, line, detections, message):
  path = _write(tmp_path, 'bad.csv', 'v,0902,0.1,0.2,0.3,0.4,80,1\n' + line + '\n')
  with pytest.raises(ava_files.AvaFileError, match=f'bad.csv:2: {message}'):
    ava_files.read_boxes(path, detections=detections)


def test_excluded_timestamps(tmp_path):
  path = _write(tmp_path, 'excl.csv', 'a,0902\nb,1798\n')
  assert ava_files.read_excluded_timestamps(path) == {('a', 902), ('b', 1798)}
  bad = _write(tmp_path, 'excl_bad.csv', 'a,0902\nb,1798,3\n')
  with pytest.raises(ava_files.AvaFileError, match=r'excl_bad.csv:2: expected 2 columns'):
    ava_files.read_excluded_timestamps(bad)


_LABEL_MAP_V21 = """\
item {
  name: "bend/bow (at the waist)"
  id: 1
}
# a comment
item {
  name: "crouch/kneel"  # trailing comment
  id: 3
}
"""
_LABEL_MAP_V22 = """\
item {
  name: "watch (a person)"
  label_id: 80
  label_type: PERSON_INTERACTION
}
item { name: "say \\"hi\\"" label_id: 12 }
"""


def test_label_map_v21_and_v22_spellings(tmp_path):
  assert ava_files.read_label_map(_write(tmp_path, 'a.pbtxt', _LABEL_MAP_V21)) == {
    1: 'bend/bow (at the waist)',
    3: 'crouch/kneel',
  }
  assert ava_files.read_label_map(_write(tmp_path, 'b.pbtxt', _LABEL_MAP_V22)) == {
    80: 'watch (a person)',
    12: 'say "hi"',
  }


@pytest.mark.parametrize(
  'text, message',
  [
    ('item {\n  name: "a"\n}\n', r':1: item: expected a name: and an id:'),
    ('item {\n  name: "a"\n  id: x\n}\n', r':1: id: expected an integer'),
    ('item {\n  name: "a"\n  id: 1\n}\nitem {\n name: "b"\n id: 1\n}\n', r':5: id: 1 given twice'),
    ('item {\n  name: "a"\n  idx: 1\n}\n', r":1: item: unexpected fields \['idx'\]"),
    ('item {\n  name: a\n  id: 1\n}\n', r':1: name: expected a quoted string'),
    ('items {\n name: "a"\n id: 1\n}\n', r':1: expected "item \{"'),
    ('item {\n  name: "a\n  id: 1\n}\n', r':2: unreadable protobuf text'),
    ('item {\n  name: "a"\n  id: 1\n', r':3: expected a field name .* got .end of file.'),
    ('# empty\n', r': expected at least one "item'),
  ],
)
def test_label_map_errors(tmp_path, text, message):
  with pytest.raises(ava_files.AvaFileError, match='bad.pbtxt' + message):
    ava_files.read_label_map(_write(tmp_path, 'bad.pbtxt', text))


def test_frame_list(tmp_path):
  path = _write(
    tmp_path,
    'val.csv',
    'original_vido_id video_id frame_id path labels\n'
    'v 0 0 v/v_000001.jpg ""\n'
    'v 0 1 v/v_000002.jpg ""\n',
  )
  rows = ava_files.read_frame_list(path)
  assert rows == [
    ava_files.FrameRow('v', 0, 0, 'v/v_000001.jpg', '""'),
    ava_files.FrameRow('v', 0, 1, 'v/v_000002.jpg', '""'),
  ]
  with pytest.raises(ava_files.AvaFileError, match='nohead.csv:1: expected the header'):
    ava_files.read_frame_list(_write(tmp_path, 'nohead.csv', 'v 0 0 v/v_000001.jpg ""\n'))
  with pytest.raises(ava_files.AvaFileError, match=r'short.csv:2: expected 5 space-separated'):
    ava_files.read_frame_list(
      _write(tmp_path, 'short.csv', 'original_video_id video_id frame_id path labels\nv 0 0\n')
    )


def test_proposals_pickle_loads_numpy_arrays(tmp_path):
  path = tmp_path / 'proposals.pkl'
  boxes = np.array([[0.1, 0.2, 0.3, 0.4, 0.95], [0.5, 0.5, 0.9, 0.9, 0.3]], np.float64)
  for protocol in (2, pickle.HIGHEST_PROTOCOL):
    path.write_bytes(
      pickle.dumps({'v,0902': boxes, 'w,0903': boxes[:1, :4].astype(np.float32)}, protocol)
    )
    proposals = ava_files.load_proposals(str(path))
    assert sorted(proposals) == [('v', 902), ('w', 903)]
    np.testing.assert_allclose(proposals[('v', 902)], boxes, rtol=1e-7)
    np.testing.assert_allclose(proposals[('w', 903)], [[0.1, 0.2, 0.3, 0.4, 1.0]], rtol=1e-7)
    assert proposals[('v', 902)].dtype == np.float32


class _Exploit:
  def __reduce__(self):
    return (os.system, ('touch pwned',))


def test_malicious_proposals_pickle_is_refused_without_running_it(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = tmp_path / 'evil.pkl'
  path.write_bytes(pickle.dumps({'v,0902': _Exploit()}))
  with pytest.raises(ava_files.AvaFileError, match=r'evil.pkl: refusing to load global .*system'):
    ava_files.load_proposals(str(path))
  assert not (tmp_path / 'pwned').exists()


@pytest.mark.parametrize(
  'content, message',
  [
    ([1, 2], 'expected a dict'),
    ({'v0902': np.zeros((1, 4))}, 'key \'v0902\': expected "video_id,timestamp"'),
    ({'v,0902': np.zeros((1, 3))}, r'v,0902: expected \(K, 4\) or \(K, 5\) boxes'),
    ({'v,0902': [[0.1, 0.2, 0.3, 0.4]]}, 'v,0902: expected a float numpy array'),
  ],
)
def test_bad_proposals_content(tmp_path, content, message):
  path = tmp_path / 'bad.pkl'
  path.write_bytes(pickle.dumps(content))
  with pytest.raises(ava_files.AvaFileError, match=message):
    ava_files.load_proposals(str(path))
  path.write_bytes(b'not a pickle')
  with pytest.raises(ava_files.AvaFileError, match='bad.pkl: expected a pickle file'):
    ava_files.load_proposals(str(path))


def test_evaluated_class_ids_are_the_standard_sixty():
  ids = ava_files.EVALUATED_CLASS_IDS
  assert len(ids) == 60 and len(set(ids)) == 60 and list(ids) == sorted(ids)
  assert {2, 16, 18, 19, 21, 23, 25}.isdisjoint(ids) and {1, 12, 14, 67, 80} <= set(ids)
