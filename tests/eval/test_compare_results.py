"""avsf_jax.tools.compare_results: reading result files, matching classes, the command line."""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from avsf_jax.tools import compare_results
from tests.eval.test_plots import png_size

REPO = pathlib.Path(__file__).resolve().parents[2]


def write(path, data) -> str:
  path.write_text(json.dumps(data))
  return str(path)


def test_parse_list_with_class_names():
  r = compare_results.parse_results(
    {'top1': 70.0, 'top5': 90.0, 'per_class_top1': [50.0, None], 'class_names': ['x', 'y']}
  )
  assert r.key == 'per_class_top1' and r.class_names == ['x', 'y']
  assert r.values[0] == 50.0 and math.isnan(r.values[1])
  assert r.headline == {'top1': 70.0, 'top5': 90.0}


def test_parse_list_without_class_names_uses_indices():
  r = compare_results.parse_results({'per_class_ap': [1.0, 2.0], 'mAP': 1.5})
  assert r.key == 'per_class_ap' and r.class_names == ['class_0', 'class_1']


def test_parse_rejects_bad_files_with_a_clear_message():
  with pytest.raises(ValueError, match='f.json: expected one of the keys per_class_top1'):
    compare_results.parse_results({'top1': 1.0}, 'f.json')
  with pytest.raises(ValueError, match='expected 2 class_names'):
    compare_results.parse_results({'per_class_top1': [1.0, 2.0], 'class_names': ['a']})
  with pytest.raises(ValueError, match=r"per_class_top1\['a'\]: expected a number or null"):
    compare_results.parse_results({'per_class_top1': {'a': 'high'}})


def test_align_matches_dict_classes_by_name():
  a = compare_results.parse_results({'per_class_top1': {'x': 1.0, 'y': 2.0}})
  b = compare_results.parse_results({'per_class_top1': {'y': 20.0, 'x': 10.0}})
  assert compare_results.align(a, b) == (['x', 'y'], [1.0, 2.0], [10.0, 20.0])


def test_align_refuses_different_classes_or_metrics():
  a = compare_results.parse_results({'per_class_top1': {'x': 1.0}})
  b = compare_results.parse_results({'per_class_top1': {'z': 1.0}})
  with pytest.raises(ValueError, match='same classes'):
    compare_results.align(a, b)
  c = compare_results.parse_results({'per_class_ap': {'x': 1.0}})
  with pytest.raises(ValueError, match='same metric'):
    compare_results.align(a, c)


def test_command_line_writes_the_chart_and_prints_gains_and_losses(tmp_path):
  names = ['playing drums', 'tapping pen', 'yawning', 'shoveling snow']
  a = write(
    tmp_path / 'slowfast.json',
    {
      'top1': 60.0,
      'top5': 80.0,
      'per_class_top1': [40.0, 30.0, 70.0, 50.0],
      'class_names': names,
      'num_examples': 40,
    },
  )
  b = write(
    tmp_path / 'avslowfast.json',
    {
      'top1': 65.0,
      'top5': 82.0,
      'per_class_top1': dict(zip(names, [80.0, 45.0, 60.0, 50.0])),
      'num_examples': 40,
    },
  )
  out = tmp_path / 'cmp.png'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'avsf_jax.tools.compare_results',
      f'--a={a}',
      f'--b={b}',
      f'--output={out}',
      '--label_a=SlowFast',
      '--label_b=AVSlowFast',
      '--top=1',
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert proc.returncode == 0, proc.stderr
  assert png_size(out)[0] == 900
  lines = proc.stdout.splitlines()
  assert lines[0] == 'SlowFast: top1 60.0, top5 80.0, num_examples 40'
  assert lines[2:6] == [
    'Largest gains (SlowFast -> AVSlowFast):',
    '   +40.00   40.00 ->  80.00  playing drums',
    'Largest losses (SlowFast -> AVSlowFast):',
    '   -10.00   70.00 ->  60.00  yawning',
  ]


def test_command_line_fails_clearly_without_required_flags():
  proc = subprocess.run(
    [sys.executable, '-m', 'avsf_jax.tools.compare_results', '--a=x.json'],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert proc.returncode != 0
  assert '--b, --output required' in proc.stderr
