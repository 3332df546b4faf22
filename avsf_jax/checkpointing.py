"""Checkpoints (orbax) and preemption notices.

`Checkpointer` wraps an orbax `CheckpointManager` in `WORKDIR/checkpoints` (a local path or a
`gs://` URL): asynchronous saves, the last `keep` kept, restore straight into sharded arrays.
Every process takes part in saves and restores (orbax writes each shard from its owner).

A checkpoint `<step>/` holds the item `default`, the whole train state (the format of every
avsf_jax checkpoint so far), and, in the final checkpoint of a run, `eval_batch_stats`: the
precise-BN statistics that evaluation uses, so that `evaluate` and `export` need no training
data. Jobs that do not train (`evaluate`, `export`, feature extraction) restore only the
variables (`restore_variables`), without knowing the optimizer.

A checkpoint that fails to restore (corrupt or missing files, a shape mismatch, NaN or Inf in
its parameters) is never deleted or overwritten: `restore_newest_valid` logs one line naming
its step, the file and the cause, and falls back to the newest older one that restores; when
none does, it raises `CheckpointError` listing every failure. When the resumed run later
saves that same step again, the bad checkpoint is first moved, byte for byte, to
`WORKDIR/corrupt_checkpoints/<step>` (kept for inspection, out of orbax's way).

`PreemptionWatcher` turns SIGTERM (the notice Cloud TPU / GCE / Kubernetes / Slurm send
before killing a job) into "save now and stop", agreed on by all processes.
"""

import hashlib
import json
import re
import signal
import threading
from typing import Any

import jax
import jax.numpy  # noqa: F401 - jax.numpy.isfinite in _check_finite
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from avsf_jax import storage

STATE = 'default'  # the train state's item (orbax's name for a single item: older checkpoints)
EVAL_STATS = 'eval_batch_stats'
DIGESTS = 'avsf_sha256.json'  # sha256 of every file of a finished checkpoint


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


def _check_finite(params: Any, where) -> None:
  """NonFiniteCheckpointError naming the first parameter that holds NaN or Inf."""
  if params is None:
    return
  for key, leaf in jax.tree_util.tree_leaves_with_path(params):
    if not bool(jax.numpy.isfinite(leaf).all()):
      raise NonFiniteCheckpointError(
        f'{where}: parameter {jax.tree_util.keystr(key)} holds NaN or Inf (corrupt)'
      )


class NonFiniteCheckpointError(ValueError):
  """A checkpoint restored, but its parameters hold NaN or Inf."""


def _files(folder):
  """Every file under `folder`, sorted (epath's `rglob` refuses `**` on object stores)."""
  out = []
  for entry in sorted(folder.iterdir()):
    out.extend(_files(entry) if entry.is_dir() else [entry])
  return out


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
    self.failed: dict[int, str] = {}  # step -> why it could not be restored

  def _move_aside(self, step: int) -> None:
    """Moves the unrestorable checkpoint `step` to WORKDIR/corrupt_checkpoints/ unchanged."""
    source = self.directory / str(step)
    if not source.exists():
      return
    target_dir = self.directory.parent / 'corrupt_checkpoints'
    target_dir.mkdir(parents=True, exist_ok=True)
    target, n = target_dir / str(step), 1
    while target.exists():
      target, n = target_dir / f'{step}.{n}', n + 1
    source.rename(target)
    self._manager.reload()
    line = f'{self.failed[step]}; moved it to {target}'
    logging.warning('%s', line)
    print(f'warning: {line}')

  def _record_digests(self) -> None:
    """Writes `<step>/avsf_sha256.json` (sha256 of every file) for each finished checkpoint
    that has none. orbax stores no checksums of its own, so flipped bytes in raw tensor
    data would otherwise restore as wrong numbers; the record is checked before a restore.
    Process 0 writes it once the save has finished (before the next save, at wait/close)."""
    if jax.process_index() != 0:
      return
    for step in self.all_steps():
      folder = self.directory / str(step)
      if (folder / DIGESTS).exists() or not folder.exists():
        continue
      digests = {
        str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in _files(folder)
        if f.name != DIGESTS
      }
      storage.write_json(folder / DIGESTS, digests)

  def verify(self, step: int) -> None:
    """Raises CheckpointError naming the first file of checkpoint `step` that is missing or
    whose bytes differ from those recorded when it was saved (no record: nothing to check)."""
    folder = self.directory / str(step)
    record = folder / DIGESTS
    if not record.exists():
      return
    try:
      digests = json.loads(record.read_text())
    except (ValueError, OSError) as e:
      raise CheckpointError(f'checkpoint {step} ({record}) cannot be restored: {e}') from None
    for name, digest in sorted(digests.items()):
      path = folder / name
      try:
        data = path.read_bytes()
      except OSError as e:  # missing, unreadable
        raise CheckpointError(
          f'checkpoint {step} ({path}) cannot be restored: {storage.first_line(e)}'
        ) from None
      if hashlib.sha256(data).hexdigest() != digest:
        raise CheckpointError(
          f'checkpoint {step} ({path}) cannot be restored: damaged (its sha256 differs from '
          'the one recorded when it was saved: corrupt, truncated or replaced bytes)'
        )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state, eval_batch_stats: Any = None) -> None:
    """Starts saving `state` (and the evaluation's BN statistics, when there are any) as
    checkpoint `step`."""
    if step in self.failed and jax.process_index() == 0:
      self._move_aside(step)
    if step in self.failed and jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'checkpoint_moved_aside_{step}')
    self.failed.pop(step, None)
    self._manager.wait_until_finished()
    self._record_digests()
    items = {STATE: ocp.args.StandardSave(state)}
    # A model without BatchNorm has empty statistics, and orbax refuses to save an empty tree
    # ('Found empty item'): such a checkpoint simply has no `eval_batch_stats` item.
    if eval_batch_stats is not None and jax.tree.leaves(eval_batch_stats):
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
    path = self.directory / str(step) / STATE
    try:
      self.verify(step)
      state = ocp.StandardCheckpointer().restore(path, abstract_state)
      _check_finite(getattr(state, 'params', None), path)
    except Exception as e:  # noqa: BLE001 - orbax raises many kinds; one line says which
      raise CheckpointError(self._failure(step, e)) from e
    return state

  def restore_variables(self, step: int, abstract_variables) -> tuple[dict[str, Any], bool]:
    """(variables, has_eval_stats): params and batch stats of checkpoint `step`, without the
    optimizer state; batch stats are the saved precise-BN ones where the checkpoint has them.
    `abstract_variables` = {'params': ..., 'batch_stats': ...} of ShapeDtypeStructs."""
    try:
      return self._restore_variables(step, abstract_variables)
    except Exception as e:  # noqa: BLE001 - orbax raises many kinds; one line says which
      raise CheckpointError(self._failure(step, e)) from e

  def _failure(self, step: int, error: BaseException) -> str:
    """One line: the checkpoint's step, the damaged file (where the error names one), why."""
    if isinstance(error, CheckpointError):
      return str(error)
    where = _file_in(error, str(self.directory / str(step)))
    return f'checkpoint {step} ({where}) cannot be restored: {_cause(error)}'

  def _restore_variables(self, step: int, abstract_variables):
    self.verify(step)
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
    _check_finite(variables['params'], step_dir / STATE)
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
        line = self._failure(step, e)
        self.failed[step] = line
        logging.warning('%s', line)
        failures.append(line)
        if len(failures) < len(steps):
          print(f'warning: {line}; trying the one before it')
    raise CheckpointError(
      f'no checkpoint in {self.directory} can be restored:\n  ' + '\n  '.join(failures)
    )

  def wait(self) -> None:
    self._manager.wait_until_finished()
    self._record_digests()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._record_digests()
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
