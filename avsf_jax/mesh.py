"""Device mesh, shardings, and the global batch assembled from every process's share.

The batch is split over the 'data' axis. Parameters (and everything shaped like them in the
optimizer state) are replicated, or with `mesh.param_sharding = 'fsdp'` each large leaf is
split over 'data' along its largest divisible axis (ZeRO-3 style); XLA inserts the
all-gathers and reduce-scatters.
"""

import math
import os
from collections.abc import Mapping

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA = 'data'


def hide_accelerators_from_tensorflow() -> None:
  """Keeps TensorFlow (tf.data, clu's summary writers) off GPUs/TPUs so that JAX owns them."""
  import tensorflow as tf  # noqa: PLC0415 - only entry points call this

  for kind in ('GPU', 'TPU'):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):
      pass  # already initialised, or no such device type


def prepare_process() -> None:
  """What every entry point does first: TensorFlow off the accelerators, then
  `jax.distributed` when several processes run the same command."""
  hide_accelerators_from_tensorflow()
  maybe_initialize_distributed()


def maybe_initialize_distributed() -> None:
  """`jax.distributed.initialize()` where several processes take part.

  On Cloud TPU pods JAX finds the coordinator itself; elsewhere the standard
  JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID variables say so.
  """
  if jax.distributed.is_initialized():
    return
  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    jax.distributed.initialize(
      coordinator_address=os.environ['JAX_COORDINATOR_ADDRESS'],
      num_processes=int(os.environ['JAX_NUM_PROCESSES']),
      process_id=int(os.environ['JAX_PROCESS_ID']),
    )
  elif os.environ.get('TPU_WORKER_HOSTNAMES', '').count(',') > 0 or os.environ.get(
    'MEGASCALE_COORDINATOR_ADDRESS'
  ):
    jax.distributed.initialize()


def make_mesh(config: ml_collections.ConfigDict) -> Mesh:
  """A mesh with the axes of `config.mesh` other than its options (-1: the remaining devices)."""
  axes = {k: v for k, v in config.items() if k not in ('param_sharding', 'fsdp_min_size')}
  devices = jax.device_count()
  known = math.prod(v for v in axes.values() if v != -1)
  sizes = {k: (devices // known if v == -1 else v) for k, v in axes.items()}
  if math.prod(sizes.values()) != devices:
    raise ValueError(f'mesh {sizes} does not cover the {devices} devices')
  # Auto axes: XLA's partitioner places the collectives (classic `jit` + NamedSharding).
  auto = (jax.sharding.AxisType.Auto,) * len(sizes)
  return jax.make_mesh(tuple(sizes.values()), tuple(sizes.keys()), axis_types=auto)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _fsdp_spec(shape: tuple[int, ...], axis_size: int, min_size: int) -> P:
  if math.prod(shape) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % axis_size == 0:
      spec = [None] * len(shape)
      spec[dim] = DATA
      return P(*spec)
  return P()


def state_shardings(abstract_state, mesh: Mesh, config: ml_collections.ConfigDict):
  """NamedShardings for every leaf of a (shape-only) train state."""
  if config.param_sharding == 'replicated':
    return jax.tree.map(lambda _: replicated(mesh), abstract_state)
  if config.param_sharding != 'fsdp':
    raise ValueError(f'mesh.param_sharding={config.param_sharding!r}; replicated or fsdp')
  size = mesh.shape[DATA]
  return jax.tree.map(
    lambda x: NamedSharding(mesh, _fsdp_spec(tuple(x.shape), size, config.fsdp_min_size)),
    abstract_state,
  )


def global_batch(local: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Global arrays from each process's share of the batch (split on the leading axis)."""
  arrays = {k: np.asarray(v) for k, v in local.items()}
  return {
    k: jax.make_array_from_process_local_data(sharding, v)
    for k, v in arrays.items()
    if v.dtype.kind in 'biuf'  # strings (e.g. video ids) stay on the host
  }
