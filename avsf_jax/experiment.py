"""The experiment core: what every job shares, and nothing that only training needs.

`Experiment(config)` holds the dataset info, the task (`avsf_jax.tasks`), the device mesh,
the model, the abstract variables and their shardings, the jitted predict and BN-statistics
functions, and restore. It has no optimizer: `train.Trainer` adds one (and the loop);
`evaluate`, `export` and feature extraction use the experiment alone.

  experiment = Experiment(config)
  variables, step = experiment.restore(workdir)          # newest valid checkpoint
  results, per_video = experiment.evaluate(variables, multi_view=True)
"""

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax
import ml_collections
from absl import logging

from avsf_jax import checkpointing, config_lib, tasks
from avsf_jax import mesh as mesh_lib
from avsf_jax.evaluation import precise_bn


def data_source(config: ml_collections.ConfigDict):
  """The module providing dataset_info / make_train_iterator / make_eval_iterator."""
  source = config.input.get('source', '')
  if source == 'ltl_clips':  # Listen to Look's clips of a prepared dataset (tf.data)
    from avsf_jax.input import ltl_pipeline  # noqa: PLC0415

    return ltl_pipeline
  if source:
    raise ValueError(f"config.input.source={source!r}; expected '' or 'ltl_clips'")
  if config.input.dataset in ('synthetic_ltl_clips', 'synthetic_ltl_pairs', 'ltl_banks'):
    from avsf_jax.input import ltl_data  # noqa: PLC0415

    return ltl_data
  if config.input.dataset == 'fake':
    from avsf_jax.input import fake  # noqa: PLC0415

    return fake
  if config.input.dataset == 'synthetic_av_sync_np':
    from avsf_jax.input import sync_arrays  # noqa: PLC0415

    return sync_arrays
  if config.input.dataset in ('ava', 'synthetic_ava'):
    from avsf_jax.input import ava_pipeline  # noqa: PLC0415

    return ava_pipeline
  if config.input.dataset == 'folder':  # your own videos: <root>/<split>/<class>/<video>
    from avsf_jax.input.prepare import folder  # noqa: PLC0415

    return folder
  if config.input.get('tf_data_service', ''):  # training batches from tf.data service workers
    from avsf_jax.input import service  # noqa: PLC0415

    return service
  from avsf_jax.input import pipeline  # noqa: PLC0415 (imports TensorFlow)

  return pipeline


class Experiment:
  """Dataset info, task, mesh, model, abstract variables, predict, precise BN, restore."""

  def __init__(self, config: ml_collections.ConfigDict, *, data=None):
    config_lib.validate(config, devices=jax.device_count())
    self.config = config
    self.data = data or data_source(config)
    self.info = self.data.dataset_info(config)
    self.task = tasks.create(config, self.info)
    self.mesh = mesh_lib.make_mesh(config.mesh)
    self.batch_sharding = mesh_lib.batch_sharding(self.mesh)
    self.replicated = mesh_lib.replicated(self.mesh)
    self.model = self.task.build_model()

    init = functools.partial(self.task.init_variables, self.model)
    abstract = jax.eval_shape(init, jax.random.key(0))
    self.variable_shardings = mesh_lib.state_shardings(abstract, self.mesh, config.mesh)
    self.abstract_variables = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract,
      self.variable_shardings,
    )
    self._init = jax.jit(init, out_shardings=self.variable_shardings)
    self.predict = jax.jit(
      functools.partial(self.task.predict, self.model),
      in_shardings=(self.variable_shardings, self.batch_sharding),
      out_shardings=self.batch_sharding,
    )
    stats_model = self.task.statistics_model(self.model)
    self._statistics = None
    if stats_model is not None:
      self._statistics = precise_bn.make_statistics_fn(
        stats_model, self.task.model_inputs, self.variable_shardings, self.batch_sharding
      )

  # -- variables -------------------------------------------------------------------------------

  def init_variables(self, rng: jax.Array) -> dict[str, Any]:
    """Fresh variables, created already sharded."""
    return self._init(rng)

  def restore(
    self, workdir: str, *, step: int | None = None, recompute_precise_bn: bool = False
  ) -> tuple[dict[str, Any], int]:
    """(evaluation variables, step) of checkpoint `step` in `workdir` (default: the newest
    one that restores). Batch statistics are the precise-BN ones saved with the final
    checkpoint; a checkpoint without them (older runs, intermediate steps) gets them
    recomputed from the training split when `evals.precise_bn_batches` asks for it (or
    always, with `recompute_precise_bn`)."""
    checkpointer = checkpointing.Checkpointer(workdir)
    try:

      def restore_fn(s):
        return checkpointer.restore_variables(s, self.abstract_variables)

      if step is None:
        step, (variables, has_stats) = checkpointer.restore_newest_valid(restore_fn)
      else:
        if step not in checkpointer.all_steps():
          raise FileNotFoundError(
            f'no checkpoint {step} in {checkpointer.directory}; there are '
            f'{checkpointer.all_steps()}'
          )
        variables, has_stats = restore_fn(step)
    finally:
      checkpointer.close()
    if recompute_precise_bn or (not has_stats and self.config.evals.precise_bn_batches):
      logging.info('Checkpoint %d has no saved precise-BN statistics: recomputing them.', step)
      variables = self.with_precise_bn(variables)
    return variables, step

  # -- data ------------------------------------------------------------------------------------

  def global_batches(self, local_batches: Iterable[Mapping[str, Any]]) -> Iterator[dict]:
    """Global arrays from this process's share of each batch."""
    for local in local_batches:
      yield mesh_lib.global_batch(local, self.batch_sharding)

  def train_batches(self, *, seed: int, start_step: int = 0) -> Iterator[dict]:
    return self.global_batches(
      self.data.make_train_iterator(
        self.config,
        seed=seed,
        start_step=start_step,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
      )
    )

  def eval_batches(self, *, multi_view: bool) -> Iterator[dict]:
    return self.global_batches(
      self.data.make_eval_iterator(
        self.config,
        multi_view=multi_view,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
      )
    )

  # -- evaluation ------------------------------------------------------------------------------

  def with_precise_bn(self, variables: dict[str, Any]) -> dict[str, Any]:
    """`variables` with BN statistics recomputed over `evals.precise_bn_batches` training
    batches (deterministic: batches from seed + 1), or unchanged when not configured."""
    num = self.config.evals.precise_bn_batches
    if not num or self._statistics is None or not jax.tree.leaves(variables['batch_stats']):
      return variables
    batches = self.train_batches(seed=self.config.seed + 1)
    stats = precise_bn.recompute(self._statistics, variables, batches, num_batches=num)
    return {**variables, 'batch_stats': stats}

  def evaluate(
    self,
    variables: dict[str, Any],
    *,
    multi_view: bool,
    progress: Callable[[Iterable], Iterable] | None = None,
  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(results, per-example outputs) of the task's evaluator over the eval split."""
    return self.task.evaluate(
      self.predict, variables, self.eval_batches(multi_view=multi_view), progress=progress
    )
