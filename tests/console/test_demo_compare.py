"""`make demo-compare`'s printout: both models' per-class rows (tools/compare_results)."""

import json
import math

from avsf_jax.tools import compare_results


def test_format_rows_puts_both_models_under_class_indices():
  text = compare_results.format_rows(
    ['red_low', 'red_high', 'blue_low'],
    [100.0, 0.0, 60.0],
    [100.0, 80.0, math.nan],
    'SlowFast',
    'AVSlowFast',
    'top-1 (%)',
  )
  assert text.splitlines() == [
    'top-1 (%)    0   1   2',
    'SlowFast   100   0  60',
    'AVSlowFast 100  80   -',
    'classes: 0 red_low, 1 red_high, 2 blue_low',
  ]


def test_compare_prints_the_rows_after_the_gains_and_losses(tmp_path):
  names = ['a', 'b']
  for label, values in (('sf', [50.0, 0.0]), ('avsf', [50.0, 100.0])):
    (tmp_path / f'{label}.json').write_text(
      json.dumps({'top1': sum(values) / 2, 'per_class_top1': values, 'class_names': names})
    )
  report = compare_results.compare(
    str(tmp_path / 'sf.json'),
    str(tmp_path / 'avsf.json'),
    str(tmp_path / 'cmp.png'),
    'SlowFast',
    'AVSlowFast',
  )
  lines = report.splitlines()
  assert lines[:2] == ['SlowFast: top1 25.0', 'AVSlowFast: top1 75.0']
  assert lines[-5:] == [
    'top-1 accuracy (%)   0   1',
    'SlowFast            50   0',
    'AVSlowFast          50 100',
    'classes: 0 a, 1 b',
    f'Chart: {tmp_path / "cmp.png"}',
  ]
  assert (tmp_path / 'cmp.png').stat().st_size > 1000
