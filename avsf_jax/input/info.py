"""What a job needs to know about its dataset, and the class-count shapes (no TensorFlow)."""

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Sizes, classes and label kind of a dataset's train and eval splits.

  `num_classes` is an int for one head, or {head: classes} for several (EPIC's verb/noun);
  `class_names` has the same shape.
  """

  num_train_examples: int
  num_eval_examples: int
  num_classes: int | Mapping[str, int]
  class_names: tuple[str, ...] | Mapping[str, tuple[str, ...]]
  multi_label: bool


def heads(num_classes) -> dict[str | None, int]:
  """{head: classes}: `{None: K}` for one unnamed head, else the mapping (EPIC's verb/noun)."""
  if hasattr(num_classes, 'items'):
    return {str(k): int(v) for k, v in num_classes.items()}
  return {None: int(num_classes)}


def label_key(head: str | None) -> str:
  """Batch key of a head's labels: 'label', or 'label_<head>' for named heads (EPIC)."""
  return 'label' if head is None else f'label_{head}'


def flat_class_names(class_names) -> list[str]:
  """One list of names: a mapping's become '<head>:<name>', in head order."""
  if hasattr(class_names, 'items'):
    return [f'{h}:{n}' for h, names in sorted(class_names.items()) for n in names]
  return list(class_names)
