"""Fine-tuning initialisation: `--config.init_from=EXPORT_DIR` (an export or a conversion).

Every tensor of the fresh model whose path and shape match the export's is taken from the
export; the rest keep their fresh initialisation. The classifier is re-initialised when the
class count differs (Kinetics -> Charades, say). What was loaded, re-initialised and left out
is returned as text so the training log says exactly what happened.
"""

import dataclasses
from typing import Any

import flax.traverse_util
import numpy as np

from avsf_jax import export


@dataclasses.dataclass
class InitReport:
  loaded: int = 0
  reinitialised: list[str] = dataclasses.field(default_factory=list)
  not_in_export: list[str] = dataclasses.field(default_factory=list)
  unused_from_export: list[str] = dataclasses.field(default_factory=list)

  def summary(self, source: str) -> str:
    lines = [f'init_from {source}: {self.loaded} tensors loaded']
    if self.reinitialised:
      lines.append(
        'freshly initialised (shape differs, e.g. a new class count): '
        + ', '.join(self.reinitialised)
      )
    if self.not_in_export:
      lines.append('freshly initialised (not in the export): ' + ', '.join(self.not_in_export))
    if self.unused_from_export:
      lines.append('in the export but not in this model: ' + ', '.join(self.unused_from_export))
    return '\n'.join(lines)


WRAPPER = 'backbone'


def _source_path(path: str, flat_pre: dict) -> str:
  """The export's path for `path`: the same one, else the same under or without a 'backbone'
  wrapper (a self-supervised `PretextModel` export into a classifier, a classifier or
  pretext export into a `ProbeModel`). Paths are '<collection>/<module path>'."""
  if path in flat_pre:
    return path
  collection, _, rest = path.partition('/')
  wrapped = f'{collection}/{WRAPPER}/{rest}'
  if wrapped in flat_pre:
    return wrapped
  if rest.startswith(f'{WRAPPER}/'):
    unwrapped = f'{collection}/{rest[len(WRAPPER) + 1 :]}'
    if unwrapped in flat_pre:
      return unwrapped
  return path


def merge(fresh: Any, pretrained: Any) -> tuple[dict, InitReport]:
  """`fresh` variables with every same-path, same-shape tensor taken from `pretrained`.

  A path missing from `pretrained` is also looked up under and without a 'backbone' wrapper,
  so that the backbone of a self-supervised export initialises a classifier or a probe.
  """
  report = InitReport()
  flat_fresh = flax.traverse_util.flatten_dict(dict(fresh), sep='/')
  flat_pre = flax.traverse_util.flatten_dict(dict(pretrained), sep='/')
  out = {}
  used = set()
  for path, value in flat_fresh.items():
    source_path = _source_path(path, flat_pre)
    used.add(source_path)
    source = flat_pre.get(source_path)
    if source is None:
      report.not_in_export.append(path)
      out[path] = value
    elif tuple(np.shape(source)) != tuple(np.shape(value)):
      report.reinitialised.append(f'{path} {tuple(np.shape(source))}->{tuple(np.shape(value))}')
      out[path] = value
    else:
      out[path] = np.asarray(source, dtype=np.asarray(value).dtype)
      report.loaded += 1
  report.unused_from_export = sorted(set(flat_pre) - used)
  return flax.traverse_util.unflatten_dict(out, sep='/'), report


def load(export_dir: str, fresh: Any) -> tuple[dict, InitReport]:
  """`merge(fresh, variables of the export at export_dir)`.

  Errors name the export and the fault (`export.ExportError`): a damaged export, NaN or Inf
  in its variables, or an export of another model (not one tensor matches in path and shape).
  """
  variables, report = merge(fresh, export.load(export_dir).variables)
  if report.loaded == 0:
    raise export.ExportError(
      f'{export_dir}: init_from: no tensor of this export matches the model in name and '
      f'shape (an export of another model?): {len(report.not_in_export)} not in the export, '
      f'{len(report.reinitialised)} of another shape'
    )
  return variables, report
