"""Accuracy (or mAP) against GFLOPs per video, in the style of Listen to Look's Fig. 7.

One marker per method at (average GFLOPs per video, metric), a log-scale cost axis, the
method's name beside its marker, and "ours" variants drawn in red joined by a line (e.g. the
early stops t' = 1..T or the subsampling factors). Drawn on matplotlib's Agg canvas through
`matplotlib.figure.Figure`, as `plots.py` does.
"""

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends import backend_agg
from matplotlib.figure import Figure

_DPI = 100


def plot_accuracy_vs_gflops(
  points: Mapping[str, tuple[float, float]],
  path: str,
  *,
  ours: Sequence[str] = (),
  metric_name: str = 'mAP (%)',
  title: str = '',
) -> str:
  """Writes the PNG and returns `path`.

  Args:
    points: method name -> (GFLOPs per video, metric value).
    path: output PNG file.
    ours: names drawn as our variants (red, joined in the given order).
    metric_name: label of the value axis.
    title: figure title.
  """
  if not points:
    raise ValueError('points: expected at least one method to plot')
  for name, (cost, value) in points.items():
    if not (np.isfinite(cost) and cost > 0 and np.isfinite(value)):
      raise ValueError(f'points[{name!r}] = ({cost}, {value}): expected GFLOPs > 0 and a value')
  missing = [n for n in ours if n not in points]
  if missing:
    raise ValueError(f'ours: {missing} are not in points')
  fig = Figure(figsize=(6.4, 4.8))
  ax = fig.add_subplot()
  for name, (cost, value) in points.items():
    mine = name in ours
    ax.scatter(cost, value, color='tab:red' if mine else 'tab:blue', marker='*' if mine else 'o')
    ax.annotate(name, (cost, value), textcoords='offset points', xytext=(4, 3), fontsize=7)
  if len(ours) > 1:
    ax.plot([points[n][0] for n in ours], [points[n][1] for n in ours], color='tab:red', lw=1)
  ax.set_xscale('log')
  ax.set_xlabel('GFLOPs per video (multiply-adds)')
  ax.set_ylabel(metric_name)
  ax.grid(alpha=0.3, which='both')
  if title:
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  backend_agg.FigureCanvasAgg(fig)
  fig.savefig(path, format='png', dpi=_DPI)
  return path
