"""Tasks: what a job trains and evaluates (batch spec, loss and metrics, evaluator) on the
shared loop. `create(config, info)` builds the task `config.task` names."""

from avsf_jax.tasks import (
  classification,
  clip_finetune,
  detection,
  distillation,
  linear_probe,
  pretraining,
  skimming,
)
from avsf_jax.tasks.base import Task

TASKS: dict[str, type[Task]] = {
  'classification': classification.Classification,
  'pretraining': pretraining.Pretraining,
  'linear_probe': linear_probe.LinearProbe,
  'detection': detection.Detection,
  'clip_finetune': clip_finetune.ClipFinetune,
  'distillation': distillation.Distillation,
  'skimming': skimming.SkimmingTask,
}


def create(config, info) -> Task:
  """The task of `config.task` (default 'classification') for a dataset described by `info`."""
  name = config.get('task', 'classification')
  if name not in TASKS:
    raise ValueError(f'config.task={name!r}; known tasks: {sorted(TASKS)}')
  return TASKS[name](config, info)


__all__ = ['TASKS', 'Task', 'create']
