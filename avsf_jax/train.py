"""The training job: sharded steps, checkpoints with exact resume, metrics, evaluation.

`train_and_evaluate(config, workdir)` runs unchanged on one CPU, one GPU node or every host
of a TPU pod: the batch is split over the mesh's 'data' axis, each process feeds its share
of it, and one jitted, donated `train_step(state, batch, rng)` does the rest.
"""

import functools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from avsf_jax import checkpointing, losses, models, optim, train_state
from avsf_jax import mesh as mesh_lib
from avsf_jax.evaluation import plots, precise_bn
from avsf_jax.evaluation import views as evaluators
from avsf_jax.input import fake as fake_data


def data_source(config: ml_collections.ConfigDict):
  """The module providing dataset_info / make_train_iterator / make_eval_iterator."""
  if config.input.dataset == 'fake':
    return fake_data
  from avsf_jax.input import pipeline  # noqa: PLC0415 (imports TensorFlow)

  return pipeline


def uses_avs(model: models.AVSlowFast) -> bool:
  return 'audio' in model.pathways and len(model.pathways) > 1 and bool(model.avs_junctions)


def create_train_state(
  model: models.AVSlowFast, tx: optax.GradientTransformation, config, rng: jax.Array
) -> train_state.TrainState:
  """Initial state (call under jit with out_shardings to create it already sharded)."""
  inputs = models.inputs_for(model, config)
  params_rng, dropout_rng = jax.random.split(rng)
  variables = model.init({'params': params_rng, 'dropout': dropout_rng}, inputs, train=False)
  params = variables['params']
  return train_state.TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=variables.get('batch_stats', {}),
    opt_state=tx.init(params),
  )


def roll_within_groups(x: jax.Array, group: int) -> jax.Array:
  """Rolls the batch by one inside consecutive groups of `group` clips (the whole batch if
  `group` does not divide it or is 1). With `group` = the per-device batch, every clip's
  partner lives on the same device, so forming easy negatives needs no communication."""
  n = x.shape[0]
  if group <= 1 or n % group:
    return jnp.roll(x, 1, axis=0)
  return jnp.roll(x.reshape((n // group, group) + x.shape[1:]), 1, axis=1).reshape(x.shape)


def select_negatives(
  batch: dict[str, jax.Array], use_hard_prob: jax.Array, rng: jax.Array, *, group: int = 0
) -> tuple[jax.Array, jax.Array]:
  """Negative audio for the AVS loss, and whether each negative is usable.

  Easy negatives are another clip's audio: the batch rolled by one within groups of `group`
  clips (see `roll_within_groups`; 0 = the whole batch). With probability `use_hard_prob`
  (0 during the easy phase of the curriculum) an example takes the hard negative of its own
  video (time-shifted audio from the pipeline) where it has one.
  """
  easy = roll_within_groups(batch['audio'], group)
  easy_ok = roll_within_groups(batch['has_audio'], group)
  n = easy.shape[0]
  hard_ok = batch['audio_negative_is_hard'] > 0
  use_hard = (jax.random.uniform(rng, (n,)) < use_hard_prob) & hard_ok
  expand = (slice(None),) + (None,) * (easy.ndim - 1)
  negative = jnp.where(use_hard[expand], batch['audio_negative'], easy)
  negative_ok = jnp.where(use_hard, 1.0, easy_ok)
  return negative, negative_ok


def audible(audio: jax.Array, has_audio: jax.Array, threshold: float) -> jax.Array:
  """1 where a clip has an audio track whose mean normalized log-mel exceeds `threshold`."""
  energy = audio.astype(jnp.float32).mean(axis=tuple(range(1, audio.ndim)))
  return has_audio.astype(jnp.float32) * (energy > threshold).astype(jnp.float32)


def train_step(
  state: train_state.TrainState,
  batch: dict[str, jax.Array],
  rng: jax.Array,
  *,
  model: models.AVSlowFast,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  loss_config: ml_collections.ConfigDict,
  multi_label: bool,
  hard_from_step: int,
  negative_group: int,
) -> tuple[train_state.TrainState, dict[str, jax.Array]]:
  """One SGD step. Pure: the RNG is folded with the step, so a resumed run repeats it."""
  rng = jax.random.fold_in(rng, state.step)
  dropout_rng, drop_pathway_rng, negative_rng = jax.random.split(rng, 3)
  inputs = {p: batch[p] for p in model.pathways}
  avs = uses_avs(model)
  pair_mask = None
  if avs:
    use_hard_prob = jnp.where(state.step >= hard_from_step, loss_config.avs_hard_fraction, 0.0)
    negative, negative_ok = select_negatives(
      batch, use_hard_prob, negative_rng, group=negative_group
    )
    inputs['audio_negative'] = negative
    threshold = loss_config.avs_silence_threshold
    pair_mask = audible(batch['audio'], batch['has_audio'], threshold) * audible(
      negative, negative_ok, threshold
    )

  def loss_fn(params):
    (logits, aux), updates = model.apply(
      {'params': params, 'batch_stats': state.batch_stats},
      inputs,
      train=True,
      rngs={'dropout': dropout_rng, 'drop_pathway': drop_pathway_rng},
      mutable=['batch_stats'],
    )
    loss, metrics = losses.classification(
      logits, batch, multi_label=multi_label, label_smoothing=loss_config.label_smoothing
    )
    if avs:
      avs_loss, avs_metrics = losses.avs_total(
        aux['avs'],
        margin=loss_config.avs_margin,
        pair_mask=pair_mask,
        duplicate_distance=loss_config.avs_duplicate_distance,
      )
      metrics.update(avs_metrics, avs_loss=avs_loss)
      loss = loss + loss_config.avs_weight * avs_loss
      metrics['avs_pairs'] = jnp.mean(pair_mask)
    metrics['drop_pathway_keep'] = jnp.mean(aux['drop_pathway_keep'])
    return loss, (updates['batch_stats'], metrics)

  (loss, (batch_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  grad_norm = optax.tree.norm(grads)
  metrics.update(
    loss=loss,
    grad_norm=grad_norm,
    learning_rate=schedule(state.step),
    finite=(jnp.isfinite(loss) & jnp.isfinite(grad_norm)).astype(jnp.float32),
  )
  new_state = state.replace(
    step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
  )
  return new_state, metrics


class NonFiniteError(FloatingPointError):
  """A loss or gradient became NaN or Inf; the run stops without saving that state."""


def _write_json(path: str, data: Any) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(data, f, indent=2)
  os.replace(tmp, path)


class Trainer:
  """Holds the compiled functions and the pieces a run needs; `run()` does the work."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    self.workdir = workdir
    self.data = data_source(config)
    self.info = self.data.dataset_info(config)
    if _as_dict(self.info.num_classes) != _as_dict(config.model.num_classes):
      raise ValueError(
        f'config.model.num_classes={config.model.num_classes} but the dataset has '
        f'{self.info.num_classes} classes'
      )
    self.mesh = mesh_lib.make_mesh(config.mesh)
    self.batch_sharding = mesh_lib.batch_sharding(self.mesh)
    self.replicated = mesh_lib.replicated(self.mesh)
    self.model = models.build_model(config.model)

    batch_size = config.input.batch_size
    if batch_size % jax.device_count():
      raise ValueError(f'batch_size {batch_size} is not divisible by {jax.device_count()} devices')
    self.steps_per_epoch = self.info.num_train_examples / batch_size
    self.total_steps = max(
      1, optim.epochs_to_steps(config.optim.num_epochs, self.info.num_train_examples, batch_size)
    )
    steps = functools.partial(
      optim.epochs_to_steps,
      num_examples=self.info.num_train_examples,
      global_batch_size=batch_size,
    )
    self.eval_every = steps(config.evals.every_epochs) if config.evals.every_epochs else 0
    self.schedule = optim.learning_rate_schedule(
      config.optim,
      steps_per_epoch=self.steps_per_epoch,
      total_steps=self.total_steps,
      peak=optim.peak_learning_rate(config.optim, batch_size),
    )
    self.tx = optim.make_optimizer(config.optim, self.schedule)

    init = functools.partial(create_train_state, self.model, self.tx, config)
    rng = jax.random.PRNGKey(config.seed)
    self.init_rng, self.train_rng = jax.random.split(rng)
    abstract = jax.eval_shape(init, self.init_rng)
    self.state_sharding = mesh_lib.state_shardings(abstract, self.mesh, config.mesh)
    self.abstract_state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract,
      self.state_sharding,
    )
    self._init = jax.jit(init, out_shardings=self.state_sharding)
    step_fn = functools.partial(
      train_step,
      model=self.model,
      tx=self.tx,
      schedule=self.schedule,
      loss_config=config.loss,
      multi_label=self.info.multi_label,
      hard_from_step=int(round(config.loss.avs_easy_until * self.total_steps)),
      negative_group=batch_size // jax.device_count(),
    )
    self.train_step = jax.jit(
      step_fn,
      in_shardings=(self.state_sharding, self.batch_sharding, self.replicated),
      out_shardings=(self.state_sharding, self.replicated),
      donate_argnums=(0,),
    )
    variable_shardings = {
      'params': self.state_sharding.params,
      'batch_stats': self.state_sharding.batch_stats,
    }
    self.predict = evaluators.make_predict_fn(
      self.model, variable_shardings, self.batch_sharding, multi_label=self.info.multi_label
    )
    self.bn_statistics = precise_bn.make_statistics_fn(
      self.model, variable_shardings, self.batch_sharding
    )

  def initial_state(self) -> train_state.TrainState:
    """A fresh state, with every matching tensor of `config.init_from` (an export) loaded.

    With `init_from`, parameters and BN statistics whose path and shape match the export's
    are taken from it; the rest (a classifier for another class count, say) keep their fresh
    initialisation, and the log says which. Optimizer state starts from zero either way.
    """
    state = self._init(self.init_rng)
    source = self.config.get('init_from')
    if not source:
      return state
    from avsf_jax.models import weights as init_from  # noqa: PLC0415

    merged, report = init_from.load(source, jax.device_get(state.variables()))
    self.init_report = report.summary(source)
    logging.info('%s', self.init_report)
    if jax.process_index() == 0:
      print(self.init_report)
    return state.replace(
      params=jax.device_put(merged['params'], self.state_sharding.params),
      batch_stats=jax.device_put(merged.get('batch_stats', {}), self.state_sharding.batch_stats),
    )

  def _global(self, iterator):
    for local in iterator:
      yield mesh_lib.global_batch(local, self.batch_sharding)

  def eval_variables(self, state: train_state.TrainState) -> dict[str, Any]:
    """The variables evaluation uses: precise-BN statistics (if configured) or the running
    averages. Deterministic (its batches come from seed + 1), so `evaluate` and `export`
    reproduce the numbers of the end of training."""
    stats = state.batch_stats
    num_bn = self.config.evals.precise_bn_batches
    if num_bn and jax.tree.leaves(stats):
      bn_batches = self._global(
        self.data.make_train_iterator(
          self.config,
          seed=self.config.seed + 1,
          process_index=jax.process_index(),
          process_count=jax.process_count(),
        )
      )
      stats = precise_bn.recompute(
        self.bn_statistics, state.variables(), bn_batches, num_batches=num_bn
      )
    return state.variables(stats)

  def eval_batches(self, *, multi_view: bool):
    return self._global(
      self.data.make_eval_iterator(
        self.config,
        multi_view=multi_view,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
      )
    )

  def evaluate(
    self, state: train_state.TrainState, *, multi_view: bool, variables=None, **kwargs
  ) -> Any:
    """Precise BN (if configured) then evaluation over the eval split."""
    return evaluators.evaluate(
      self.predict,
      self.eval_variables(state) if variables is None else variables,
      self.eval_batches(multi_view=multi_view),
      num_classes=self.info.num_classes,
      multi_label=self.info.multi_label,
      view_aggregation=self.config.evals.view_aggregation,
      **kwargs,
    )

  def restore_latest(self, checkpointer) -> train_state.TrainState:
    """The newest checkpoint's state, sharded; a clear error when there is none."""
    latest = checkpointer.latest_step()
    if latest is None:
      raise FileNotFoundError(f'no checkpoint in {checkpointer.directory}')
    return checkpointer.restore(latest, self.abstract_state)


def _as_dict(num_classes) -> dict:
  if hasattr(num_classes, 'items'):
    return dict(num_classes.items())
  return {None: num_classes}


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
  """Trains (resuming from the newest checkpoint in `workdir`) and evaluates.

  Returns the final evaluation results (also in WORKDIR/eval_results.json), or None when a
  preemption notice stopped the run after saving a checkpoint.
  """
  mesh_lib.maybe_initialize_distributed()
  workdir = os.path.abspath(workdir)
  lead = jax.process_index() == 0
  if lead:
    os.makedirs(workdir, exist_ok=True)
  trainer = Trainer(config, workdir)
  # clu's writers (TensorBoard + console) load TensorFlow's summary ops; importing them here
  # keeps `import avsf_jax.train` free of TensorFlow.
  from clu import metric_writers  # noqa: PLC0415

  writer = metric_writers.create_default_writer(workdir, just_logging=not lead)
  if lead:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
  logging.info(
    'Training %d steps (%.2f per epoch) of global batch %d on %d devices, %d processes.',
    trainer.total_steps,
    trainer.steps_per_epoch,
    config.input.batch_size,
    jax.device_count(),
    jax.process_count(),
  )

  checkpointer = checkpointing.Checkpointer(workdir, config.checkpoint)
  watcher = checkpointing.PreemptionWatcher()
  try:
    return _run(trainer, config, workdir, writer, checkpointer, watcher)
  finally:
    watcher.close()
    checkpointer.close()
    writer.flush()


def _run(trainer, config, workdir, writer, checkpointer, watcher):
  lead = jax.process_index() == 0
  latest = checkpointer.latest_step()
  if latest is not None:
    logging.info('Resuming from checkpoint %d in %s.', latest, checkpointer.directory)
    state = checkpointer.restore(latest, trainer.abstract_state)
    start_step = latest
  else:
    state = trainer.initial_state()
    start_step = 0
  train_iter = trainer.data.make_train_iterator(
    config,
    seed=config.seed,
    start_step=start_step,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  log_every = config.logging.every_steps
  save_every = config.checkpoint.every_steps
  pending: list[tuple[int, dict[str, jax.Array]]] = []
  clips = config.input.batch_size
  last_time, last_step = time.time(), start_step
  for step in range(start_step, trainer.total_steps):
    batch = mesh_lib.global_batch(next(train_iter), trainer.batch_sharding)
    state, step_metrics = trainer.train_step(state, batch, trainer.train_rng)
    done = step + 1
    pending.append((done, step_metrics))
    preempted = config.checkpoint.save_on_preemption and watcher.reached(done)
    is_last = done == trainer.total_steps
    save_now = preempted or is_last or (save_every and done % save_every == 0)
    eval_now = trainer.eval_every and done % trainer.eval_every == 0 and not is_last
    if save_now or eval_now or done % log_every == 0:
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
    if save_now:
      checkpointer.save(done, state)
    if preempted:
      checkpointer.wait()
      logging.warning('Preemption notice: saved checkpoint %d; stopping.', done)
      return None
    if eval_now:
      results = trainer.evaluate(state, multi_view=config.evals.periodic_multi_view)
      writer.write_scalars(done, _scalars('eval', results))
  checkpointer.wait()

  results = trainer.evaluate(state, multi_view=True)
  step = int(jax.device_get(state.step))
  results['step'] = step
  results['class_names'] = _plain(trainer.info.class_names)
  writer.write_scalars(step, _scalars('final', results))
  if lead:
    path = os.path.join(workdir, 'eval_results.json')
    _write_json(path, results)
    logging.info('Final evaluation at step %d: %s', step, _scalars('final', results))
    if 'per_class_top1' in results:
      plots.plot_per_class(
        results['per_class_top1'],
        results['class_names'],
        os.path.join(workdir, 'per_class_top1.png'),
        title=f'per-class top-1, overall {results["top1"]:.1f}%',
      )
  return results


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
