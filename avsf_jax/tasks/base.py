"""The task seam: what a job trains and evaluates, apart from the loop that runs it.

A `Task` answers five questions for the shared machinery (`experiment.Experiment`, the loop
in `train.py`, `evaluate`, `export`):

  model     `build_model()`: the Flax module; `model_inputs(batch)`: which batch keys feed it.
  batch     `input_spec(train=...)`: per-example shapes and dtypes of the model inputs (used
            to initialise variables, to check batches, and as an export's input signature).
  loss      `loss(model, params, batch_stats, batch, rng, step)` -> (loss, (batch_stats,
            metrics)): pure and jittable; the loop differentiates it w.r.t. `params`.
  predict   `predict(model, variables, batch)` -> {name: array}: what evaluation gathers
            (jitted and sharded by the experiment).
  evaluate  `evaluate(predict_fn, variables, batches, progress)` -> (results, per-example
            outputs): turns predictions over a finite split into the task's metrics.

Optional hooks have defaults here: `trainable(params)` (a mask; a linear probe freezes the
backbone), `optimizer(schedule)` (per-group learning rates), `statistics_model(model)` (the model precise BN runs, or None for no precise BN),
`export_function(model)` (what an export serialises) and `export_predict(loaded)` (how
`evaluate --export` runs a loaded export on eval batches). A new task subclasses `Task`,
registers itself in `tasks.TASKS`, and is picked with `--config.task=NAME`; the loop never
changes. See docs/architecture.md for a walk-through.
"""

import abc
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from avsf_jax.input import info as info_lib

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


class Task(abc.ABC):
  """Base class of the tasks on the shared loop; see the module docstring."""

  name: str = ''

  def __init__(self, config: ml_collections.ConfigDict, info: info_lib.DatasetInfo | None):
    """`info` None: a task without its dataset (building a model or an export from weights)."""
    self.config = config
    self.info = info
    if info is not None:
      self.check_dataset()

  def check_dataset(self) -> None:
    """Raises ValueError when the dataset does not fit the config (e.g. a class count)."""
    return None

  # -- model ---------------------------------------------------------------------------------

  @abc.abstractmethod
  def build_model(self) -> nn.Module:
    """The Flax module this task trains (from `config.model`)."""

  @abc.abstractmethod
  def input_spec(self, *, train: bool) -> dict[str, jax.ShapeDtypeStruct]:
    """Per-example shapes (no batch axis) and dtypes of the model's inputs."""

  def model_inputs(self, batch: Batch) -> dict[str, jax.Array]:
    """The entries of `batch` the model reads (by default those of `input_spec`)."""
    return {k: batch[k] for k in self.input_spec(train=False)}

  def example_inputs(self, batch_size: int = 1, *, train: bool = False) -> dict[str, jax.Array]:
    """Zeros shaped like a batch of model inputs (for `init` and shape checks)."""
    return {
      k: jnp.zeros((batch_size, *s.shape), s.dtype) for k, s in self.input_spec(train=train).items()
    }

  def init_variables(self, model: nn.Module, rng: jax.Array) -> dict[str, Any]:
    """Fresh variables: {'params': ..., 'batch_stats': ...} (the latter possibly empty)."""
    params_rng, dropout_rng = jax.random.split(rng)
    variables = model.init(
      {'params': params_rng, 'dropout': dropout_rng}, self.example_inputs(), train=False
    )
    return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}

  # -- training ------------------------------------------------------------------------------

  @abc.abstractmethod
  def loss(
    self,
    model: nn.Module,
    params: Any,
    batch_stats: Any,
    batch: Batch,
    rng: jax.Array,
    step: jax.Array,
  ) -> tuple[jax.Array, tuple[Any, Metrics]]:
    """(scalar loss, (new batch_stats, metrics)); pure, jittable, differentiated in params."""

  def trainable(self, params: Any) -> Any:
    """A pytree of Python bools like `params` saying which leaves train, or None (the
    default) when every parameter trains. Frozen leaves are carried over bit-for-bit (the
    loop selects the old leaf; it never adds a zero update). Called with `params=None` to
    ask whether anything is frozen."""
    del params
    return None

  def optimizer(self, schedule: Callable[[jax.Array], jax.Array]) -> Any:
    """The task's own optax transformation (e.g. per-group learning rates), or None (the
    default) for the papers' recipe from `config.optim` (`optim.make_optimizer`)."""
    del schedule
    return None

  # -- evaluation ----------------------------------------------------------------------------

  @abc.abstractmethod
  def predict(self, model: nn.Module, variables: Any, batch: Batch) -> dict[str, jax.Array]:
    """Per-example outputs of one eval batch (device side; jitted by the experiment)."""

  @abc.abstractmethod
  def evaluate(
    self,
    predict_fn: Callable[[Any, Batch], Mapping[str, jax.Array]],
    variables: Any,
    batches: Iterable[Batch],
    *,
    progress: Callable[[Iterable], Iterable] | None = None,
  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(results, per-example outputs) over a finite, padded (`_mask`) eval split."""

  def statistics_model(self, model: nn.Module) -> nn.Module | None:
    """The model whose train-mode pass gives one batch's BN statistics (precise BN), or None
    when the task keeps the running averages."""
    del model
    return None

  def export_predict(self, loaded: Any) -> Callable[[Any, Batch], dict[str, Any]]:
    """A `predict_fn(variables, batch)` for `evaluate` that runs a loaded export
    (`export.load`; it carries its own variables, so `variables` is ignored).

    The default is classification's: eval batches hold (batch, views, ...) inputs, the export
    takes one view per row, and the logits (one array, or one per head) come back as
    {'label' or 'label_<head>': (batch, views, classes)}. A task whose batches or outputs
    differ (detection's boxes) overrides it."""
    heads = info_lib.heads(self.info.num_classes)

    def predict(variables, batch):
      del variables
      inputs = {k: np.asarray(batch[k]) for k in loaded.input_spec}
      b, views = next(iter(inputs.values())).shape[:2]
      flat = {k: v.reshape((b * views,) + v.shape[2:]) for k, v in inputs.items()}
      logits = loaded.predict(flat)
      if None in heads:
        return {'label': np.asarray(logits).reshape(b, views, -1)}
      return {info_lib.label_key(h): np.asarray(logits[h]).reshape(b, views, -1) for h in heads}

    return predict

  def export_input_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
    """The inputs of the exported function (the evaluation's)."""
    return self.input_spec(train=False)

  def export_variables(self, variables: Any) -> dict[str, Any]:
    """The variables an export keeps and `export_function` receives (all of them)."""
    return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}

  def export_preprocessing(self) -> dict[str, Any] | None:
    """The export's `preprocessing` metadata; None: `export.preprocessing_of(config)`."""
    return None

  def export_function(self, model: nn.Module) -> Callable[[Any, Batch], Any]:
    """`(variables, inputs) -> outputs` that an export serialises (eval mode)."""

    def apply(variables, inputs):
      return model.apply(variables, inputs, train=False)[0]

    return apply
