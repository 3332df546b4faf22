"""Checkpoints (orbax) and preemption notices.

`Checkpointer` wraps an orbax `CheckpointManager` in `WORKDIR/checkpoints`: asynchronous
saves, the last `keep` kept, restore of the newest straight into sharded arrays. Every
process takes part in saves and restores (orbax writes each shard from its owner).

`PreemptionWatcher` turns SIGTERM (the notice Cloud TPU / GCE / Kubernetes / Slurm send
before killing a job) into "save now and stop", agreed on by all processes.
"""

import os
import signal
import threading

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils


class Checkpointer:
  """Saves and restores the train state under `workdir/checkpoints/<step>`."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    options = ocp.CheckpointManagerOptions(
      max_to_keep=config.keep,
      enable_async_checkpointing=config['async'],
      create=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state) -> None:
    """Starts saving `state` as checkpoint `step` (asynchronous unless configured not to)."""
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def restore(self, step: int, abstract_state):
    """Restores checkpoint `step` into arrays with the shardings of `abstract_state`.

    `abstract_state` holds `jax.ShapeDtypeStruct`s with `sharding` set, so each process
    reads only the shards it owns.
    """
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

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
