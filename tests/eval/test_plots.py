"""avsf_jax.evaluation.plots: the gains/losses selection on a hand-made case, and the PNGs it writes."""

import struct

import numpy as np
import pytest

from avsf_jax.evaluation import plots

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def png_size(path) -> tuple[int, int]:
  """(width, height) from a PNG's IHDR chunk; fails the test if it is not a PNG."""
  with open(path, 'rb') as f:
    head = f.read(24)
  assert head[:8] == _PNG_SIGNATURE, f'{path} is not a PNG file'
  assert head[12:16] == b'IHDR'
  return struct.unpack('>II', head[16:24])


_NAMES = ['abseiling', 'bowling', 'cooking', 'dancing', 'eating', 'fencing']
_A = np.array([50.0, 80.0, 30.0, 60.0, np.nan, 70.0])
_B = np.array([70.0, 75.0, 60.0, 60.0, 90.0, 40.0])


def test_biggest_changes_orders_gains_and_losses_and_skips_nan_and_ties():
  gains, losses = plots.biggest_changes(_A, _B, _NAMES, top=5)
  assert gains == [
    plots.Change('cooking', 30.0, 60.0, 30.0),
    plots.Change('abseiling', 50.0, 70.0, 20.0),
  ]
  assert losses == [
    plots.Change('fencing', 70.0, 40.0, -30.0),
    plots.Change('bowling', 80.0, 75.0, -5.0),
  ]  # 'dancing' is unchanged and 'eating' has no value under A: in neither list.


def test_biggest_changes_keeps_only_top():
  gains, losses = plots.biggest_changes(_A, _B, _NAMES, top=1)
  assert [c.name for c in gains] == ['cooking']
  assert [c.name for c in losses] == ['fencing']


def test_biggest_changes_rejects_mismatched_input():
  with pytest.raises(ValueError, match='class_names: expected 6 names'):
    plots.biggest_changes(_A, _B, _NAMES[:5], top=3)
  with pytest.raises(ValueError, match='top: expected a positive integer'):
    plots.biggest_changes(_A, _B, _NAMES, top=0)


def test_plot_per_class_writes_a_tall_png_for_400_classes(tmp_path):
  rng = np.random.default_rng(0)
  values = rng.uniform(0, 100, size=400)
  values[:3] = np.nan
  path = plots.plot_per_class(
    values, [f'class {i}' for i in range(400)], str(tmp_path / 'k400.png'), 'Kinetics-400'
  )
  width, height = png_size(path)
  # 0.16 in per bar at 100 dpi: at least 16 px per class, so names do not overlap.
  assert width == 800 and height >= 16 * 397
  small = plots.plot_per_class([10.0, 90.0], ['a', 'b'], str(tmp_path / 'two.png'))
  assert png_size(small)[1] == 300  # the minimum height
  assert (tmp_path / 'k400.png').stat().st_size > 10 * (tmp_path / 'two.png').stat().st_size


def test_plot_per_class_rejects_all_nan_and_wrong_names(tmp_path):
  with pytest.raises(ValueError, match='non-NaN'):
    plots.plot_per_class([np.nan], ['a'], str(tmp_path / 'x.png'))
  with pytest.raises(ValueError, match='class_names: expected 2 names'):
    plots.plot_per_class([1.0, 2.0], ['a'], str(tmp_path / 'x.png'))
  assert not (tmp_path / 'x.png').exists()


def test_plot_comparison_writes_a_png(tmp_path):
  path = plots.plot_comparison(
    _A, _B, _NAMES, str(tmp_path / 'cmp.png'), 'SlowFast', 'AVSlowFast', top=20
  )
  width, height = png_size(path)
  assert width == 900 and height == 300
  assert (tmp_path / 'cmp.png').stat().st_size > 5_000


def test_plot_comparison_without_changes_still_writes_a_png(tmp_path):
  path = plots.plot_comparison([1.0, 2.0], [1.0, 2.0], ['a', 'b'], str(tmp_path / 'same.png'))
  assert png_size(path) == (900, 300)
