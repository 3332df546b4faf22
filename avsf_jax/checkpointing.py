"""Checkpoints (orbax) and preemption notices.

`Checkpointer` wraps an orbax `CheckpointManager` in `WORKDIR/checkpoints` (a local path or a
`gs://` URL): asynchronous saves, the last `keep` kept, restore straight into sharded arrays.
Every process takes part in saves and restores (orbax writes each shard from its owner).

A checkpoint `<step>/` holds the item `default`, the whole train state (the format of every
avsf_jax checkpoint so far), and, in the final checkpoint of a run, `eval_batch_stats`: the
precise-BN statistics that evaluation uses, so that `evaluate` and `export` need no training
data. Jobs that do not train (`evaluate`, `export`, feature extraction) restore only the
variables (`restore_variables`), without knowing the optimizer.

A checkpoint that fails to restore (corrupt or missing files, a shape mismatch) is never
deleted or overwritten: `restore_newest_valid` logs one line naming its step, the file and
the cause, and falls back to the newest older one that restores; when none does, it raises
`CheckpointError` listing every failure.

`PreemptionWatcher` turns SIGTERM (the notice Cloud TPU / GCE / Kubernetes / Slurm send
before killing a job) into "save now and stop", agreed on by all processes.
"""

import re
import signal
import threading
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from avsf_jax import storage

STATE = 'default'  # the train state's item (orbax's name for a single item: older checkpoints)
EVAL_STATS = 'eval_batch_stats'


class CheckpointError(RuntimeError):
  """No checkpoint could be restored; the message lists each one and why."""


def _cause(error: BaseException) -> str:
  """The innermost useful line of a restore failure (orbax wraps the real cause)."""
  messages = []
  while error is not None:
    text = str(error).strip().splitlines()
    if text:
      messages.append(text[0][:300])
    error = error.__cause__ or error.__context__
  for message in messages:
    if re.search(
      r'corrupt|ZSTD|checksum|not found|No such file|shape|mismatch|truncat', message, re.I
    ):
      return message
  return messages[-1] if messages else 'unknown error'


def _file_in(error: BaseException, default: str) -> str:
  """A path named anywhere in the error chain (the damaged file), else `default`."""
  while error is not None:
    match = re.search(r"((?:gs://|/)[^\s'\"]+)", str(error))
    if match:
      return match.group(1).rstrip('.:,')
    error = error.__cause__ or error.__context__
  return default


class Checkpointer:
  """Saves and restores the train state under `workdir/checkpoints/<step>`."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict | None = None):
    config = config or ml_collections.ConfigDict({'keep': 3, 'async': False})
    self.directory = storage.path(workdir) / 'checkpoints'
    options = ocp.CheckpointManagerOptions(
      max_to_keep=config.keep,
      enable_async_checkpointing=config['async'],
      create=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state, eval_batch_stats: Any = None) -> None:
    """Starts saving `state` (and the evaluation's BN statistics) as checkpoint `step`."""
    items = {STATE: ocp.args.StandardSave(state)}
    if eval_batch_stats is not None:
      items[EVAL_STATS] = ocp.args.StandardSave(eval_batch_stats)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def has_eval_stats(self, step: int) -> bool:
    return (self.directory / str(step) / EVAL_STATS).exists()

  def restore(self, step: int, abstract_state):
    """Restores checkpoint `step`'s train state into arrays shaped like `abstract_state`.

    `abstract_state` holds `jax.ShapeDtypeStruct`s with `sharding` set, so each process
    reads only the shards it owns.
    """
    # Read the item directly: a manager that reopens a directory infers "one unnamed item"
    # from checkpoints that hold only `default`, and then refuses named (Composite) restores.
    return ocp.StandardCheckpointer().restore(self.directory / str(step) / STATE, abstract_state)

  def restore_variables(self, step: int, abstract_variables) -> tuple[dict[str, Any], bool]:
    """(variables, has_eval_stats): params and batch stats of checkpoint `step`, without the
    optimizer state; batch stats are the saved precise-BN ones where the checkpoint has them.
    `abstract_variables` = {'params': ..., 'batch_stats': ...} of ShapeDtypeStructs."""
    step_dir = self.directory / str(step)
    restore_args = jax.tree.map(
      lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding, global_shape=x.shape, dtype=x.dtype),
      abstract_variables,
    )
    variables = ocp.PyTreeCheckpointer().restore(
      step_dir / STATE,
      args=ocp.args.PyTreeRestore(
        item=dict(abstract_variables), restore_args=dict(restore_args), partial_restore=True
      ),
    )
    has_stats = self.has_eval_stats(step)
    if has_stats and jax.tree.leaves(abstract_variables['batch_stats']):
      stats = ocp.StandardCheckpointer().restore(
        step_dir / EVAL_STATS, abstract_variables['batch_stats']
      )
      variables = {**variables, 'batch_stats': stats}
    return variables, has_stats

  def restore_newest_valid(self, restore_fn, *, below: int | None = None):
    """(step, restore_fn(step)) for the newest checkpoint that restores (below `below`).

    A checkpoint that fails is left as it is; one line says which and why, and the next
    older one is tried. Raises CheckpointError (listing them) when none restores, or
    FileNotFoundError when there is no checkpoint at all.
    """
    steps = [s for s in self.all_steps() if below is None or s < below]
    if not steps:
      raise FileNotFoundError(f'no checkpoint in {self.directory}')
    failures = []
    for step in reversed(steps):
      try:
        return step, restore_fn(step)
      except Exception as e:  # noqa: BLE001 - any failure means "try the next older one"
        where = _file_in(e, str(self.directory / str(step)))
        line = f'checkpoint {step} ({where}) cannot be restored: {_cause(e)}'
        logging.warning('%s', line)
        failures.append(line)
        if len(failures) < len(steps):
          print(f'warning: {line}; trying the one before it')
    raise CheckpointError(
      f'no checkpoint in {self.directory} can be restored:\n  ' + '\n  '.join(failures)
    )

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


class PreemptionWatcher:
  """Tells every process, at the same step, that a preemption notice (SIGTERM) arrived.

  Multi-process runs use JAX's preemption sync point (the coordination service relays the
  notice to all processes, which agree on a step); a single process installs its own SIGTERM
  handler. `reached(step)` must be called by every process at every step.
  """

  def __init__(self):
    self._notice = threading.Event()
    self._previous = None
    self._multi = jax.process_count() > 1
    if not self._multi and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)

  def _on_signal(self, signum, frame) -> None:
    del frame
    logging.warning('Received signal %d: will save a checkpoint and stop.', signum)
    self._notice.set()

  def reached(self, step: int) -> bool:
    if self._multi:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._notice.is_set()

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
