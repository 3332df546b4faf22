"""Per-class result charts: one model's per-class figures, and the change from model A to B.

`plot_per_class` draws a horizontal bar per class, sorted by value, with a figure tall enough
to read every name (400 Kinetics classes give a tall PNG rather than an unreadable one).
`plot_comparison` draws the classes that gain and lose most from A to B, as paper 000's
Fig. A.1 does for AVSlowFast against SlowFast. `biggest_changes` is the pure selection it
uses. Figures are drawn with matplotlib's Agg canvas through `matplotlib.figure.Figure`
(no pyplot, no display, no global state), and written as PNG.
"""

import io
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from matplotlib.backends import backend_agg
from matplotlib.figure import Figure

from avsf_jax import storage

# Inches per bar, and the font size that fits it.
_BAR_HEIGHT_IN = 0.16
_NAME_FONT_SIZE = 6
_MIN_HEIGHT_IN = 3.0
_DPI = 100


class Change(NamedTuple):
  """One class's value under A and B, and `delta = b - a`."""

  name: str
  a: float
  b: float
  delta: float


def _as_values(values, class_names: Sequence[str], name: str) -> np.ndarray:
  values = np.asarray(values, np.float64)
  if values.ndim != 1:
    raise ValueError(f'{name}: expected one value per class (1-D), got shape {values.shape}')
  if len(class_names) != values.shape[0]:
    raise ValueError(
      f'class_names: expected {values.shape[0]} names (one per value of {name}), '
      f'got {len(class_names)}'
    )
  return values


def _save(fig: Figure, path: str) -> str:
  """Renders `fig` to PNG and writes it atomically (local path or gs:// URL)."""
  backend_agg.FigureCanvasAgg(fig)
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=_DPI)
  storage.write_bytes(path, buffer.getvalue())
  return path


def plot_per_class(
  values,
  class_names: Sequence[str],
  path: str,
  title: str = '',
  metric_name: str = 'top-1 accuracy (%)',
) -> str:
  """Writes a PNG bar chart of one value per class, best class at the top; returns `path`.

  Classes whose value is NaN (no examples in the evaluation set) are left out, and the title
  says how many were.

  Args:
    values: (K,) per-class values, e.g. `eval_metrics.per_class_accuracy`.
    class_names: K names.
    path: output PNG file.
    title: figure title.
    metric_name: label of the value axis.
  """
  values = _as_values(values, class_names, 'values')
  present = np.flatnonzero(~np.isnan(values))
  if present.size == 0:
    raise ValueError('values: expected at least one non-NaN value to plot')
  # Ascending order draws the best class at the top of a horizontal bar chart.
  order = present[np.argsort(values[present], kind='stable')]
  height = max(_MIN_HEIGHT_IN, _BAR_HEIGHT_IN * len(order) + 1.5)
  fig = Figure(figsize=(8.0, height))
  ax = fig.add_subplot()
  positions = np.arange(len(order))
  ax.barh(positions, values[order], color='tab:blue', height=0.8)
  ax.set_yticks(positions, [class_names[i] for i in order], fontsize=_NAME_FONT_SIZE)
  ax.set_ylim(-0.6, len(order) - 0.4)
  ax.set_xlabel(metric_name)
  ax.grid(axis='x', alpha=0.3)
  left_out = len(values) - len(order)
  note = f' ({left_out} classes without examples left out)' if left_out else ''
  mean = float(values[present].mean())
  ax.set_title(f'{title}{note}\nmean over {len(order)} classes: {mean:.1f}', fontsize=9)
  fig.tight_layout()
  return _save(fig, path)


def biggest_changes(a, b, class_names: Sequence[str], top: int) -> tuple[list, list]:
  """The `top` classes gaining most and the `top` losing most from A to B.

  Args:
    a: (K,) per-class values of model A.
    b: (K,) per-class values of model B, same classes in the same order.
    class_names: K names.
    top: how many gains and how many losses, at most.

  Returns:
    `(gains, losses)`, lists of `Change`: gains have delta > 0, largest first; losses have
    delta < 0, most negative first. Unchanged classes and classes that are NaN in A or B are
    in neither. Equal deltas keep the class order.
  """
  a = _as_values(a, class_names, 'a')
  b = _as_values(b, class_names, 'b')
  if a.shape != b.shape:
    raise ValueError(f'b: expected {a.shape[0]} values (as a), got {b.shape[0]}')
  if int(top) != top or top < 1:
    raise ValueError(f'top: expected a positive integer, got {top!r}')
  delta = b - a
  valid = ~np.isnan(delta)

  def pick(indices):
    return [Change(str(class_names[i]), float(a[i]), float(b[i]), float(delta[i])) for i in indices]

  up = np.flatnonzero(valid & (delta > 0))
  down = np.flatnonzero(valid & (delta < 0))
  gains = up[np.argsort(-delta[up], kind='stable')][:top]
  losses = down[np.argsort(delta[down], kind='stable')][:top]
  return pick(gains), pick(losses)


def plot_comparison(
  a,
  b,
  class_names: Sequence[str],
  path: str,
  label_a: str = 'A',
  label_b: str = 'B',
  top: int = 20,
  metric_name: str = 'top-1 accuracy (%)',
) -> str:
  """Writes a PNG of the classes that gain and lose most from A to B; returns `path`.

  Bars show `B - A` per class: the `top` gains (green, largest at the top) above the `top`
  losses (red), each labelled with the class name and both values, as paper 000 Fig. A.1
  (AVSlowFast vs SlowFast per-class AP).

  Args:
    a: (K,) per-class values of model A.
    b: (K,) per-class values of model B, same classes in the same order.
    class_names: K names.
    path: output PNG file.
    label_a: name of model A.
    label_b: name of model B.
    top: gains and losses shown, at most, each.
    metric_name: what the values are.
  """
  gains, losses = biggest_changes(a, b, class_names, top)
  # Bottom to top: the most negative loss first, the largest gain last (drawn at the top).
  rows = sorted(losses + gains, key=lambda c: c.delta)
  height = max(_MIN_HEIGHT_IN, 0.22 * max(len(rows), 1) + 1.8)
  fig = Figure(figsize=(9.0, height))
  ax = fig.add_subplot()
  if rows:
    positions = np.arange(len(rows))
    deltas = [c.delta for c in rows]
    colors = ['tab:green' if d > 0 else 'tab:red' for d in deltas]
    ax.barh(positions, deltas, color=colors, height=0.8)
    labels = [f'{c.name} ({c.a:.1f} -> {c.b:.1f})' for c in rows]
    ax.set_yticks(positions, labels, fontsize=7)
    ax.set_ylim(-0.6, len(rows) - 0.4)
  else:
    ax.text(0.5, 0.5, 'no class changed', ha='center', va='center', transform=ax.transAxes)
    ax.set_yticks([])
  ax.axvline(0.0, color='black', linewidth=0.8)
  ax.set_xlabel(f'{metric_name}: {label_b} - {label_a}')
  ax.grid(axis='x', alpha=0.3)
  ax.set_title(
    f'{label_b} vs {label_a}: {len(gains)} largest gains, {len(losses)} largest losses',
    fontsize=9,
  )
  fig.tight_layout()
  return _save(fig, path)
