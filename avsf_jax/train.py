"""The training loop: an `Experiment` plus an optimizer, one jitted step, checkpoints, metrics.

`train_and_evaluate(config, workdir)` runs unchanged on one CPU, one GPU node or every host
of a TPU pod: the batch is split over the mesh's 'data' axis, each process feeds its share
of it, and one jitted, donated `train_step(state, batch, rng)` does the rest. What is
trained (model, loss, metrics, evaluator) is the task's (`avsf_jax.tasks`); the loop is the
same for every task.
"""

import functools
import json
import time
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from avsf_jax import checkpointing, console, optim, storage
from avsf_jax import experiment as experiment_lib
from avsf_jax import mesh as mesh_lib
from avsf_jax.evaluation import plots


@flax.struct.dataclass
class TrainState:
  """Everything a training step reads and writes; all leaves are arrays (checkpointable)."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState

  def variables(self, batch_stats: Any = None) -> dict[str, Any]:
    """Model variables, optionally with other BatchNorm statistics (e.g. precise BN)."""
    stats = self.batch_stats if batch_stats is None else batch_stats
    return {'params': self.params, 'batch_stats': stats}


class NonFiniteError(FloatingPointError):
  """A loss or gradient became NaN or Inf; the run stops without saving that state."""


class WorkdirMismatchError(ValueError):
  """The workdir holds checkpoints of another experiment (another model or task)."""


# Model fields that do not change what a checkpoint holds (the compute dtype).
_NEUTRAL_MODEL_FIELDS = frozenset({'dtype'})


def check_workdir(config: ml_collections.ConfigDict, workdir) -> None:
  """Raises WorkdirMismatchError when `workdir` has checkpoints and its saved `config.json`
  names another task or model than `config`: resuming would mix two experiments.

  Compares `task` and every `model` field but the compute dtype, and names the fields
  that differ.
  """
  workdir = storage.path(workdir)
  saved_path = workdir / 'config.json'
  checkpoints = workdir / 'checkpoints'
  if not saved_path.exists() or not checkpoints.exists():
    return
  if not any(p.name.isdigit() for p in checkpoints.iterdir()):
    return
  try:
    saved = json.loads(saved_path.read_text())
  except (ValueError, OSError) as e:
    raise WorkdirMismatchError(
      f'{saved_path}: not readable JSON ({e}); cannot tell whose checkpoints '
      f'{checkpoints} holds. Use another --workdir.'
    ) from None
  current = json.loads(config.to_json_best_effort())
  differ = []
  if saved.get('task') != current.get('task'):
    differ.append(('task', saved.get('task'), current.get('task')))
  saved_model, model = saved.get('model') or {}, current.get('model') or {}
  for key in sorted(set(saved_model) | set(model)):
    if key not in _NEUTRAL_MODEL_FIELDS and saved_model.get(key) != model.get(key):
      differ.append((f'model.{key}', saved_model.get(key), model.get(key)))
  if differ:
    shown = '; '.join(f'{k}: {a!r} there, {b!r} here' for k, a, b in differ[:3])
    more = f' (and {len(differ) - 3} more fields)' if len(differ) > 3 else ''
    raise WorkdirMismatchError(
      f'{workdir} holds checkpoints of another experiment ({shown}{more}); not mixing '
      'them. Use another --workdir, or delete that one to start over.'
    )


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  rng: jax.Array,
  *,
  task,
  model,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step of `task.loss`. Pure: the RNG is folded with the step, so a resumed
  run repeats it exactly."""
  rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    return task.loss(model, params, state.batch_stats, batch, rng, state.step)

  (loss, (batch_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  trainable = task.trainable(state.params)
  if trainable is not None:  # frozen leaves stay bit-identical (no `x + 0.0` sign flips)
    params = jax.tree.map(lambda new, old, t: new if t else old, params, state.params, trainable)
  grad_norm = optax.tree.norm(grads)
  metrics = dict(
    metrics,
    loss=loss,
    grad_norm=grad_norm,
    learning_rate=schedule(state.step),
    finite=(jnp.isfinite(loss) & jnp.isfinite(grad_norm)).astype(jnp.float32),
  )
  new_state = state.replace(
    step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
  )
  return new_state, metrics


class Trainer:
  """An experiment plus what only training needs: schedule, optimizer, state, step."""

  def __init__(self, config: ml_collections.ConfigDict, *, experiment=None):
    self.config = config
    self.experiment = experiment or experiment_lib.Experiment(config)
    ex = self.experiment
    batch_size = config.input.batch_size
    num_examples = ex.info.num_train_examples
    self.steps_per_epoch = num_examples / batch_size
    self.total_steps = optim.total_steps(config.optim, num_examples, batch_size)
    every = config.evals.every_epochs
    self.eval_every = optim.epochs_to_steps(every, num_examples, batch_size) if every else 0
    self.schedule = optim.learning_rate_schedule(
      config.optim,
      steps_per_epoch=self.steps_per_epoch,
      total_steps=self.total_steps,
      peak=optim.peak_learning_rate(config.optim, batch_size),
    )
    tx = ex.task.optimizer(self.schedule) or optim.make_optimizer(config.optim, self.schedule)
    self.tx = _freeze_untrainable(tx, ex.task)
    self.init_rng, self.train_rng = jax.random.split(jax.random.PRNGKey(config.seed))

    def init(rng):
      variables = ex.task.init_variables(ex.model, rng)
      return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables['params'],
        batch_stats=variables['batch_stats'],
        opt_state=self.tx.init(variables['params']),
      )

    abstract = jax.eval_shape(init, self.init_rng)
    self.state_sharding = TrainState(
      step=ex.replicated,
      params=ex.variable_shardings['params'],
      batch_stats=ex.variable_shardings['batch_stats'],
      opt_state=mesh_lib.state_shardings(abstract.opt_state, ex.mesh, config.mesh),
    )
    self.abstract_state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract,
      self.state_sharding,
    )
    self._init = jax.jit(init, out_shardings=self.state_sharding)
    step_fn = functools.partial(
      train_step, task=ex.task, model=ex.model, tx=self.tx, schedule=self.schedule
    )
    self.train_step = jax.jit(
      step_fn,
      in_shardings=(self.state_sharding, ex.batch_sharding, ex.replicated),
      out_shardings=(self.state_sharding, ex.replicated),
      donate_argnums=(0,),
    )

  def initial_state(self) -> TrainState:
    """A fresh state, with every matching tensor of `config.init_from` (an export) loaded.

    With `init_from`, parameters and BN statistics whose path and shape match the export's
    are taken from it; the rest (a classifier for another class count, say) keep their fresh
    initialisation, and the log says which. Optimizer state starts from zero either way.
    """
    state = self._init(self.init_rng)
    source = self.config.get('init_from')
    if not source:
      return state
    from avsf_jax import export  # noqa: PLC0415 - only fine-tuning reads exports
    from avsf_jax.models import weights  # noqa: PLC0415

    merged, report = weights.merge(jax.device_get(state.variables()), export.load(source).variables)
    self.init_report = report.summary(source)
    logging.info('%s', self.init_report)
    if jax.process_index() == 0:
      print(self.init_report)
    shardings = self.state_sharding
    return state.replace(
      params=jax.device_put(merged['params'], shardings.params),
      batch_stats=jax.device_put(merged.get('batch_stats', {}), shardings.batch_stats),
    )

  def restore(self, checkpointer: checkpointing.Checkpointer) -> tuple[int, TrainState]:
    """(step, state) of the newest checkpoint that restores (see `restore_newest_valid`)."""
    return checkpointer.restore_newest_valid(
      lambda step: checkpointer.restore(step, self.abstract_state)
    )


def _freeze_untrainable(tx: optax.GradientTransformation, task) -> optax.GradientTransformation:
  """`tx` on the task's trainable leaves, zero updates for the others (a frozen backbone).

  Tasks that train everything (`trainable` returns None) get `tx` itself, so their optimizer
  state, and with it the checkpoint format, is unchanged.
  """

  def labels(params):
    mask = task.trainable(params)
    return jax.tree.map(lambda t: 'train' if t else 'freeze', mask)

  if task.trainable(None) is None:
    return tx
  return optax.multi_transform({'train': tx, 'freeze': optax.set_to_zero()}, labels)


def _check_finite(pending: list[tuple[int, dict[str, jax.Array]]]) -> dict[str, float] | None:
  """Means of the pending steps' metrics; raises NonFiniteError naming the first bad step."""
  if not pending:
    return None
  fetched = jax.device_get([m for _, m in pending])
  for (step, _), m in zip(pending, fetched):
    if m['finite'] < 1.0:
      raise NonFiniteError(
        f'Non-finite loss or gradients at training step {step} '
        f'(loss={float(m["loss"])}, grad_norm={float(m["grad_norm"])}); stopping. '
        'Nothing from this step on was saved.'
      )
  return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0] if k != 'finite'}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
  """Trains (resuming from the newest valid checkpoint in `workdir`) and evaluates.

  Returns the final evaluation results (also in WORKDIR/eval_results.json), or None when a
  preemption notice stopped the run after saving a checkpoint.
  """
  mesh_lib.maybe_initialize_distributed()
  workdir = storage.path(workdir)
  lead = jax.process_index() == 0
  if lead:
    workdir.mkdir(parents=True, exist_ok=True)
  check_workdir(config, workdir)
  trainer = Trainer(config)
  info = trainer.experiment.info
  classes = info.num_classes if isinstance(info.num_classes, int) else dict(info.num_classes)
  console.stage(
    'dataset',
    f'{config.input.dataset}: {info.num_train_examples} training / '
    f'{info.num_eval_examples} evaluation videos, {classes} classes',
  )
  # clu's writers (TensorBoard + console) load TensorFlow's summary ops; importing them here
  # keeps `import avsf_jax.train` free of TensorFlow.
  from clu import metric_writers  # noqa: PLC0415

  writer = metric_writers.create_default_writer(str(workdir), just_logging=not lead)
  if lead:
    storage.write_text(workdir / 'config.json', config.to_json_best_effort(indent=2))
  logging.info(
    'Training %d steps (%.2f per epoch) of global batch %d on %d devices, %d processes.',
    trainer.total_steps,
    trainer.steps_per_epoch,
    config.input.batch_size,
    jax.device_count(),
    jax.process_count(),
  )
  checkpointer = checkpointing.Checkpointer(str(workdir), config.checkpoint)
  watcher = checkpointing.PreemptionWatcher()
  try:
    return _run(trainer, config, workdir, writer, checkpointer, watcher)
  finally:
    watcher.close()
    checkpointer.close()
    writer.flush()


def _run(trainer: Trainer, config, workdir, writer, checkpointer, watcher):
  ex = trainer.experiment
  eval_stats = None
  compile_start = None
  if checkpointer.latest_step() is not None:
    start_step, state = trainer.restore(checkpointer)
    logging.info('Resuming from checkpoint %d in %s.', start_step, checkpointer.directory)
    finished = start_step == trainer.total_steps
    console.stage(
      'resume',
      f'checkpoint {start_step} of {trainer.total_steps} in {checkpointer.directory}'
      + (': training is done, evaluating again' if finished else ''),
    )
    if start_step == trainer.total_steps and checkpointer.has_eval_stats(start_step):
      eval_stats = checkpointer.restore_variables(start_step, ex.abstract_variables)[0]
  else:
    console.begin('compile', 'initialisation and the train step')
    compile_start = time.time()
    state, start_step = trainer.initial_state(), 0
  train_iter = ex.train_batches(seed=config.seed, start_step=start_step)
  log_every = config.logging.every_steps
  save_every = config.checkpoint.every_steps
  pending: list[tuple[int, dict[str, jax.Array]]] = []
  clips = config.input.batch_size
  last_time, last_step = time.time(), start_step
  bar = None
  if compile_start is None and start_step < trainer.total_steps:
    console.begin('compile', 'the train step')
    compile_start = time.time()
  for step in range(start_step, trainer.total_steps):
    state, step_metrics = trainer.train_step(state, next(train_iter), trainer.train_rng)
    done = step + 1
    if bar is None:  # the first step includes compilation
      jax.block_until_ready(step_metrics)
      console.end(f'{time.time() - compile_start:.0f} s')
      console.stage(
        'training',
        f'{trainer.total_steps} steps of {clips} clips '
        f'({trainer.total_steps / trainer.steps_per_epoch:g} epochs) on {jax.device_count()} '
        f'{jax.default_backend()} device(s)' + (f', from step {start_step}' if start_step else ''),
      )
      bar = console.progress(trainer.total_steps, desc='training', initial=step)
    bar.update(1)
    pending.append((done, step_metrics))
    preempted = config.checkpoint.save_on_preemption and watcher.reached(done)
    is_last = done == trainer.total_steps
    save_now = preempted or (save_every and done % save_every == 0 and not is_last)
    eval_now = trainer.eval_every and done % trainer.eval_every == 0 and not is_last
    if save_now or eval_now or is_last or done % log_every == 0:
      summary = _check_finite(pending)  # before anything of this state is saved
      pending = []
      now = time.time()
      rate = (done - last_step) / max(now - last_time, 1e-9)
      last_time, last_step = now, done
      summary.update(
        steps_per_sec=rate,
        clips_per_sec=rate * clips,
        eta_minutes=(trainer.total_steps - done) / max(rate, 1e-9) / 60.0,
        epoch=done / trainer.steps_per_epoch,
      )
      writer.write_scalars(done, {f'train/{k}': v for k, v in summary.items()})
      bar.set_postfix_str(console.train_postfix(summary), refresh=False)
    if save_now:
      checkpointer.save(done, state)
    if preempted:
      bar.close()
      checkpointer.wait()
      logging.warning('Preemption notice: saved checkpoint %d; stopping.', done)
      return None
    if eval_now:
      variables = ex.with_precise_bn(state.variables())
      results, _ = ex.evaluate(
        variables,
        multi_view=config.evals.periodic_multi_view,
        progress=_eval_progress(ex, f'eval@{done}', config.evals.periodic_multi_view),
      )
      bar.set_postfix_str(console.train_postfix(summary) + ', ' + _headline(results), refresh=False)
      writer.write_scalars(done, _scalars('eval', results))

  if bar is not None:
    bar.close()
  views = config.input.num_temporal_views * config.input.num_spatial_views
  console.stage(
    'evaluation',
    f'{ex.info.num_eval_examples} videos x {views} views'
    + ('' if eval_stats is not None else ', after precise BN statistics'),
  )
  if eval_stats is not None:
    eval_variables = eval_stats
  else:
    eval_variables = ex.with_precise_bn(state.variables())
    if start_step < trainer.total_steps:
      # The final checkpoint carries the evaluation's BN statistics, so that evaluate and
      # export need no training data.
      checkpointer.save(trainer.total_steps, state, eval_batch_stats=eval_variables['batch_stats'])
  checkpointer.wait()

  results, _ = ex.evaluate(
    eval_variables, multi_view=True, progress=_eval_progress(ex, 'evaluating', True)
  )
  step = int(jax.device_get(state.step))
  console.stage('results', f'{_headline(results)} at step {step}')
  if 'per_class_top1' in results:
    values = ' '.join(f'{v:.0f}' for v in np.asarray(results['per_class_top1'], float))
    console.stage('per class', f'top-1 {values}')
  results['step'] = step
  results['class_names'] = _plain(ex.info.class_names)
  writer.write_scalars(step, _scalars('final', results))
  if jax.process_index() == 0:
    storage.write_json(workdir / 'eval_results.json', results)
    logging.info('Final evaluation at step %d: %s', step, _scalars('final', results))
    if 'per_class_top1' in results:
      plots.plot_per_class(
        results['per_class_top1'],
        results['class_names'],
        str(workdir / 'per_class_top1.png'),
        title=f'per-class top-1, overall {results["top1"]:.1f}%',
      )
  return results


def _eval_progress(ex, desc: str, multi_view: bool):
  """A progress bar over the evaluation batches."""
  del multi_view  # the batch count is per video either way
  batch = ex.config.input.eval_batch_size
  return console.progress_wrap(-(-ex.info.num_eval_examples // batch), desc=desc)


def _headline(results: dict[str, Any]) -> str:
  keys = [k for k in results if k.startswith(('top1', 'top5', 'mAP'))]
  return ', '.join(f'{k} {float(results[k]):.1f}%' for k in keys)


def _plain(x):
  if isinstance(x, dict):
    return {str(k): _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  return x


def _scalars(prefix: str, results: dict[str, Any]) -> dict[str, float]:
  return {
    f'{prefix}/{k}': float(v)
    for k, v in results.items()
    if isinstance(v, (int, float)) and not isinstance(v, bool)
  }
