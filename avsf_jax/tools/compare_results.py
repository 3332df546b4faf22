r"""Compares two evaluation result files per class: a PNG of the largest gains and losses.

  python -m avsf_jax.tools.compare_results --a=slowfast/eval_results.json \
      --b=avslowfast/eval_results.json --output=compare.png --label_a=SlowFast \
      --label_b=AVSlowFast

A result file is the JSON that `avsf_jax.main` (`DIR/eval_results.json`) and
`avsf_jax.evaluate --output` write:

  {"top1": .., "top5": .., "per_class_top1": {name: value, ...} or [value, ...],
   "class_names": [...] (optional), "num_examples": ..}

Charades results carry `per_class_ap` (and `mAP`) instead of `per_class_top1`. Values are
percent; `null` or NaN marks a class without examples. With dicts, classes are matched by
name; with lists, by index (and the two files' `class_names` must agree). The tool prints
both headlines, the top gains / losses from A to B and both models' per-class rows (up to
30 classes), and writes the comparison chart.
"""

import json
import math
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

from absl import app, flags

from avsf_jax import console
from avsf_jax.evaluation import plots

# Per-class keys in the order they are looked for, and how each is named in the chart.
PER_CLASS_KEYS = {'per_class_top1': 'top-1 accuracy (%)', 'per_class_ap': 'AP (%)'}
_HEADLINE_KEYS = ('top1', 'top5', 'mAP', 'num_examples')


class Results(NamedTuple):
  """The per-class values of one result file, and its headline figures."""

  key: str
  class_names: list[str]
  values: list[float]
  headline: dict[str, Any]


def _number(value, where: str) -> float:
  if value is None:
    return math.nan
  if isinstance(value, bool) or not isinstance(value, int | float):
    raise ValueError(f'{where}: expected a number or null, got {value!r}')
  return float(value)


def parse_results(data: Any, source: str = 'results') -> Results:
  """A decoded result JSON -> `Results`; raises ValueError naming what was expected."""
  if not isinstance(data, dict):
    raise ValueError(f'{source}: expected a JSON object, got {type(data).__name__}')
  key = next((k for k in PER_CLASS_KEYS if k in data), None)
  if key is None:
    raise ValueError(f'{source}: expected one of the keys {", ".join(PER_CLASS_KEYS)}')
  per_class = data[key]
  given_names = data.get('class_names')
  if given_names is not None and not (
    isinstance(given_names, list) and all(isinstance(n, str) for n in given_names)
  ):
    raise ValueError(f'{source}: expected class_names to be a list of strings')
  if isinstance(per_class, dict):
    names = [str(n) for n in per_class]
    values = [_number(v, f'{source}: {key}[{n!r}]') for n, v in per_class.items()]
  elif isinstance(per_class, list):
    values = [_number(v, f'{source}: {key}[{i}]') for i, v in enumerate(per_class)]
    if given_names is None:
      names = [f'class_{i}' for i in range(len(values))]
    elif len(given_names) != len(values):
      raise ValueError(
        f'{source}: expected {len(values)} class_names (one per {key} value), '
        f'got {len(given_names)}'
      )
    else:
      names = list(given_names)
  else:
    raise ValueError(f'{source}: expected {key} to be an object {{class: value}} or a list')
  headline = {k: data[k] for k in _HEADLINE_KEYS if k in data}
  return Results(key, names, values, headline)


def load_results(path: str) -> Results:
  """Reads and parses one result JSON file."""
  with open(path) as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}: not valid JSON ({e})') from None
  return parse_results(data, path)


def align(a: Results, b: Results) -> tuple[list[str], list[float], list[float]]:
  """The classes of A and B matched up: `(names, values_a, values_b)`."""
  if a.key != b.key:
    raise ValueError(f'expected both files to hold the same metric, got {a.key} and {b.key}')
  if a.class_names == b.class_names:
    return a.class_names, a.values, b.values
  if len(set(a.class_names)) != len(a.class_names) or set(a.class_names) != set(b.class_names):
    raise ValueError(
      'expected both files to cover the same classes; they differ in '
      f'{len(set(a.class_names) ^ set(b.class_names))} class names'
    )
  b_value = dict(zip(b.class_names, b.values))
  return a.class_names, a.values, [b_value[n] for n in a.class_names]


def format_changes(gains: Sequence, losses: Sequence, label_a: str, label_b: str) -> str:
  """A text table of the gains and losses (`plots.Change` rows)."""
  lines = []
  for title, rows in (('gains', gains), ('losses', losses)):
    lines.append(f'Largest {title} ({label_a} -> {label_b}):')
    if not rows:
      lines.append('  (none)')
    for c in rows:
      lines.append(f'  {c.delta:+7.2f}  {c.a:6.2f} -> {c.b:6.2f}  {c.name}')
  return '\n'.join(lines)


def format_rows(
  names: Sequence[str],
  values_a: Sequence[float],
  values_b: Sequence[float],
  label_a: str,
  label_b: str,
  metric: str,
) -> str:
  """Both models' per-class values as two rows under class-index columns, and the legend.

  `metric` heads the table. NaN (a class without examples) prints as `-`.
  """
  width = max(4, len(str(len(names) - 1)) + 1)
  label_width = max(len(label_a), len(label_b), len(metric))

  def cells(values):
    return ''.join(f'{"-" if math.isnan(v) else f"{v:.0f}":>{width}}' for v in values)

  lines = [
    f'{metric:<{label_width}}' + ''.join(f'{i:>{width}}' for i in range(len(names))),
    f'{label_a:<{label_width}}' + cells(values_a),
    f'{label_b:<{label_width}}' + cells(values_b),
    'classes: ' + ', '.join(f'{i} {n}' for i, n in enumerate(names)),
  ]
  return '\n'.join(lines)


# Up to this many classes, the report shows every class of both models side by side.
MAX_ROW_CLASSES = 30


def compare(
  path_a: str, path_b: str, output: str, label_a: str = 'A', label_b: str = 'B', top: int = 20
) -> str:
  """Writes the comparison PNG of two result files; returns the printed report."""
  a, b = load_results(path_a), load_results(path_b)
  names, values_a, values_b = align(a, b)
  gains, losses = plots.biggest_changes(values_a, values_b, names, top)
  metric = PER_CLASS_KEYS[a.key]
  plots.plot_comparison(values_a, values_b, names, output, label_a, label_b, top, metric)
  headline = [
    f'{label}: ' + ', '.join(f'{k} {v}' for k, v in r.headline.items())
    for label, r in ((label_a, a), (label_b, b))
  ]
  rows = []
  if len(names) <= MAX_ROW_CLASSES:
    rows = [format_rows(names, values_a, values_b, label_a, label_b, metric)]
  report = '\n'.join(headline + [format_changes(gains, losses, label_a, label_b)] + rows)
  return report + f'\nChart: {output}'


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  missing = [f'--{name}' for name in ('a', 'b', 'output') if not flags.FLAGS[name].value]
  if missing:
    sys.exit(
      f'compare_results: {", ".join(missing)} required (--a=A.json --b=B.json --output=X.png)'
    )
  # OSError and ValueError (a missing or malformed result file) end it in one line
  # (console.guard in __main__; the traceback too with --verbose).
  print(
    compare(
      flags.FLAGS.a,
      flags.FLAGS.b,
      flags.FLAGS.output,
      flags.FLAGS.label_a,
      flags.FLAGS.label_b,
      flags.FLAGS.top,
    )
  )


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, because this module is
  also imported as a library (absl flags are process-global)."""
  flags.DEFINE_string('a', None, 'Result JSON of model A (the baseline).')
  flags.DEFINE_string('b', None, 'Result JSON of model B.')
  flags.DEFINE_string('output', None, 'Output PNG.')
  flags.DEFINE_string('label_a', 'A', 'Name of model A in the chart.')
  flags.DEFINE_string('label_b', 'B', 'Name of model B in the chart.')
  flags.DEFINE_integer('top', 20, 'How many gains and how many losses to show.')
  console.define_flags()


if __name__ == '__main__':
  define_flags()
  app.run(console.guard('compare_results', main, errors=(ValueError,)))
