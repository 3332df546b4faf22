"""Linear-probe and fine-tuning mechanics for the self-supervised evaluation (spec 3).

- **Frozen means frozen**: in `linear` mode the optimizer is an optax `multi_transform` that
  sends every leaf outside `probe_fc` to `set_to_zero`, `apply_updates` leaves those leaves
  untouched (not even `+ 0.0`, which would turn -0.0 into +0.0), and the step returns the BN
  statistics it was given (the backbone runs in inference mode, see `models.probe`).
- **Recipes** (`RECIPES`): the paper's probe (320k iterations, LR 0.01, half-period cosine,
  batch 64) and fine-tuning (UCF-101: 80k, LR 0.005; HMDB-51: 30k, LR 0.01; batch 16), SGD
  with momentum 0.9; weight decay 0 for the probe [assumption], 1e-4 for fine-tuning.
- **`features` mode**: `extract_features` runs the frozen backbone once over K augmented copies
  of the training set, and `fit_logistic_regression` trains a multinomial logistic regression
  on them (full batch, deterministic).
"""

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from avsf_jax import losses, models
from avsf_jax.evaluation import views
from avsf_jax.models import probe as probe_lib
from avsf_jax.tasks import base, pretraining

HEAD = 'probe_fc'


@dataclasses.dataclass(frozen=True)
class Recipe:
  """One evaluation protocol's optimisation (half-period cosine from `learning_rate` to 0)."""

  mode: str
  steps: int
  learning_rate: float
  batch_size: int
  momentum: float = 0.9
  weight_decay: float = 0.0


RECIPES = {
  'linear': Recipe('linear', steps=320_000, learning_rate=0.01, batch_size=64),
  'fine_tune_ucf101': Recipe(
    'fine_tune_all', steps=80_000, learning_rate=0.005, batch_size=16, weight_decay=1e-4
  ),
  'fine_tune_hmdb51': Recipe(
    'fine_tune_all', steps=30_000, learning_rate=0.01, batch_size=16, weight_decay=1e-4
  ),
}


def trainable_mask(params: Any, mode: str) -> Any:
  """True for the leaves the optimizer may change: only `probe_fc` in linear mode, all else."""
  if mode not in probe_lib.PROBE_MODES:
    raise ValueError(f'linear_probe: mode={mode!r}; one of {probe_lib.PROBE_MODES}')
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  return flax.traverse_util.unflatten_dict(
    {path: mode == 'fine_tune_all' or path[0] == HEAD for path in flat}
  )


def learning_rate_schedule(recipe: Recipe, steps: int | None = None) -> optax.Schedule:
  """lr(t) = learning_rate * (1 + cos(pi t / T)) / 2, T = `steps` (default the recipe's)."""
  return optax.cosine_decay_schedule(recipe.learning_rate, decay_steps=steps or recipe.steps)


def make_optimizer(params: Any, recipe: Recipe, steps: int | None = None):
  """SGD + momentum (+ weight decay on kernels) for trainable leaves, zero updates for the rest."""
  parts = []
  if recipe.weight_decay > 0:
    parts.append(optax.add_decayed_weights(recipe.weight_decay, mask=_kernels))
  parts.append(optax.sgd(learning_rate_schedule(recipe, steps), momentum=recipe.momentum))
  mask = trainable_mask(params, recipe.mode)
  labels = jax.tree.map(lambda m: 'train' if m else 'frozen', mask)
  return optax.multi_transform(
    {'train': optax.chain(*parts), 'frozen': optax.set_to_zero()}, labels
  )


def _kernels(params):
  return jax.tree.map(lambda p: p.ndim > 1, params)


def apply_updates(params: Any, updates: Any, mask: Any) -> Any:
  """`params + updates` on trainable leaves; frozen leaves are returned as they are."""
  return jax.tree.map(lambda p, u, m: p + u.astype(p.dtype) if m else p, params, updates, mask)


def with_pretrained_backbone(params: Any, backbone_params: Any) -> Any:
  """The probe's params with 'backbone' replaced by pretrained ones (shapes must match)."""
  ours = jax.tree.map(jnp.shape, params['backbone'])
  theirs = jax.tree.map(jnp.shape, backbone_params)
  if ours != theirs:
    raise ValueError('linear_probe: the pretrained backbone does not match the probe model')
  return {**params, 'backbone': backbone_params}


def probe_loss(
  model: probe_lib.ProbeModel,
  params: Any,
  batch_stats: Any,
  batch: Mapping[str, jax.Array],
  rng: jax.Array,
  step: jax.Array,
) -> tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]:
  """Cross-entropy of the probe's logits; (loss, (batch_stats, metrics)) as `Task.loss`.

  In linear mode the BN statistics returned are the ones given (bit-identical).
  """
  rng = jax.random.fold_in(rng, step)
  dropout_rng, drop_pathway_rng = jax.random.split(rng)
  inputs = {p: batch[p] for p in model.backbone.pathways}
  variables = {'params': params, 'batch_stats': batch_stats}
  rngs = {'dropout': dropout_rng, 'drop_pathway': drop_pathway_rng}
  if model.frozen():
    (logits, _), new_stats = model.apply(variables, inputs, train=True, rngs=rngs), batch_stats
  else:
    (logits, _), updates = model.apply(
      variables, inputs, train=True, rngs=rngs, mutable=['batch_stats']
    )
    new_stats = updates['batch_stats']
  loss = losses.softmax_cross_entropy(logits, batch['label'])
  accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == batch['label']).astype(jnp.float32))
  return loss, (new_stats, {'loss': loss, 'accuracy': accuracy})


def make_train_step(model: probe_lib.ProbeModel, tx: optax.GradientTransformation, params: Any):
  """A jitted `step(params, batch_stats, opt_state, batch, rng, step) -> (..., metrics)`."""
  mask = trainable_mask(params, model.mode)

  @jax.jit
  def train_step(params, batch_stats, opt_state, batch, rng, step):
    grad_fn = jax.value_and_grad(probe_loss, argnums=1, has_aux=True)
    (_, (batch_stats, metrics)), grads = grad_fn(model, params, batch_stats, batch, rng, step)
    updates, opt_state = tx.update(grads, opt_state, params)
    return apply_updates(params, updates, mask), batch_stats, opt_state, metrics

  return train_step


# -- `features` mode ------------------------------------------------------------------------


def feature_function(model: probe_lib.ProbeModel) -> Callable:
  """Jitted `(variables, batch) -> (N, D)` pool5 features of the frozen backbone."""

  @jax.jit
  def features(variables, batch):
    inputs = {p: batch[p] for p in model.backbone.pathways}
    _, aux = model.apply(variables, inputs, train=False)
    return aux['features']

  return features


def extract_features(
  model: probe_lib.ProbeModel,
  variables: Any,
  batches_of_copy: Callable[[int], Iterable[Mapping[str, Any]]],
  num_copies: int,
) -> tuple[np.ndarray, np.ndarray]:
  """Features and labels of `num_copies` augmented passes over a split: (K * N, D), (K * N,).

  `batches_of_copy(k)` yields the split's batches augmented with seed k (one random clip and
  crop per video); padded examples (`_mask` = 0) are dropped.
  """
  features_fn = feature_function(model)
  out, labels = [], []
  for k in range(num_copies):
    for batch in batches_of_copy(k):
      keep = np.asarray(batch.get('_mask', np.ones(len(batch['label'])))) > 0
      out.append(np.asarray(features_fn(variables, batch))[keep])
      labels.append(np.asarray(batch['label'])[keep])
  return np.concatenate(out), np.concatenate(labels)


@dataclasses.dataclass(frozen=True)
class LogisticRegression:
  """Multinomial logistic regression: `logits = standardise(x) @ kernel + bias`."""

  kernel: np.ndarray
  bias: np.ndarray
  mean: np.ndarray
  scale: np.ndarray

  def logits(self, features) -> np.ndarray:
    x = (np.asarray(features, np.float32) - self.mean) / self.scale
    return x @ self.kernel + self.bias


def fit_logistic_regression(
  features,
  labels,
  num_classes: int,
  *,
  steps: int = 500,
  learning_rate: float = 0.5,
  l2: float = 1e-4,
  standardise: bool = True,
) -> LogisticRegression:
  """Full-batch gradient descent with momentum 0.9 from zero weights (deterministic).

  Features are standardised with the training set's mean and standard deviation (pool5
  features of different pathways have very different scales); `l2` penalises the kernel.
  """
  x = np.asarray(features, np.float32)
  y = np.asarray(labels)
  if x.ndim != 2 or y.shape != (x.shape[0],):
    raise ValueError(
      f'logistic regression: features (N, D) and labels (N,); got {x.shape}, {y.shape}'
    )
  mean = x.mean(axis=0) if standardise else np.zeros(x.shape[1], np.float32)
  scale = x.std(axis=0) + 1e-6 if standardise else np.ones(x.shape[1], np.float32)
  x = jnp.asarray((x - mean) / scale)
  targets = jax.nn.one_hot(jnp.asarray(y), num_classes)

  def loss(w):
    logits = x @ w['kernel'] + w['bias']
    return optax.softmax_cross_entropy(logits, targets).mean() + 0.5 * l2 * jnp.sum(
      jnp.square(w['kernel'])
    )

  tx = optax.sgd(learning_rate, momentum=0.9)

  @jax.jit
  def fit(w):
    def body(carry, _):
      w, state = carry
      updates, state = tx.update(jax.grad(loss)(w), state, w)
      return (optax.apply_updates(w, updates), state), None

    (w, _), _ = jax.lax.scan(body, (w, tx.init(w)), None, length=steps)
    return w

  w = fit({'kernel': jnp.zeros((x.shape[1], num_classes)), 'bias': jnp.zeros((num_classes,))})
  return LogisticRegression(
    kernel=np.asarray(w['kernel']), bias=np.asarray(w['bias']), mean=mean, scale=scale
  )


# -- the task on the shared loop ------------------------------------------------------------

PROBE = {
  'mode': 'linear',  # or 'fine_tune_all'
  'features': probe_lib.FEATURE_ORDER,  # the pool5 features the new FC reads
  'dropout_rate': 0.0,
  'num_copies': 4,  # `features` mode: augmented copies per training clip
}


def probe_section(config) -> dict:
  """`config.probe` over `PROBE`; unknown fields are an error naming them."""
  section = dict(config.get('probe') or {})
  unknown = sorted(set(section) - set(PROBE))
  if unknown:
    raise ValueError(f'config.probe has unknown fields {unknown}; known: {sorted(PROBE)}')
  out = {**PROBE, **section}
  if out['mode'] not in probe_lib.PROBE_MODES:
    raise ValueError(f'config.probe.mode={out["mode"]!r}; one of {probe_lib.PROBE_MODES}')
  return out


def per_view_logits(model: probe_lib.ProbeModel) -> Callable:
  """`(variables, batch) -> {'label': (b, V, K)}` of (b, V, ...) view batches."""

  def predict(variables, batch):
    pathways = model.backbone.pathways
    b, views = batch[pathways[0]].shape[:2]
    inputs = {p: batch[p].reshape((-1,) + batch[p].shape[2:]) for p in pathways}
    logits, _ = model.apply(variables, inputs, train=False)
    return {'label': logits.astype(jnp.float32).reshape(b, views, -1)}

  return predict


class LinearProbe(base.Task):
  """A new FC on a (pretrained, `init_from`) backbone's pool5 features, trained with labels.

  `probe.mode = 'linear'` (the default): the backbone and its BN statistics are frozen (the
  loop carries frozen leaves over bit-for-bit and the loss returns the statistics unchanged; no
  precise BN). `'fine_tune_all'` trains everything. Evaluation is the classification task's
  multi-view top-1 (mean of softmaxes over views).
  """

  name = 'linear_probe'

  def section(self) -> dict:
    return probe_section(self.config)

  def check_dataset(self) -> None:
    if int(self.config.model.num_classes) != self.info.num_classes:
      raise ValueError(
        f'config.model.num_classes={self.config.model.num_classes} but dataset '
        f'{self.config.input.dataset!r} has {self.info.num_classes} classes'
      )

  def build_model(self) -> probe_lib.ProbeModel:
    section = self.section()
    return probe_lib.ProbeModel(
      backbone=models.build_model(self.config.model),
      num_classes=int(self.config.model.num_classes),
      mode=section['mode'],
      features=tuple(section['features']),
      dropout_rate=section['dropout_rate'],
    )

  def input_spec(self, *, train: bool) -> dict[str, jax.ShapeDtypeStruct]:
    return pretraining.clip_input_spec(self.config, train=train)

  def init_variables(self, model, rng):
    params_rng, dropout_rng = jax.random.split(rng)
    variables = model.init(
      {'params': params_rng, 'dropout': dropout_rng}, self.example_inputs(train=True), train=False
    )
    return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}

  def loss(self, model, params, batch_stats, batch, rng, step):
    return probe_loss(model, params, batch_stats, batch, rng, step)

  def trainable(self, params):
    mode = self.section()['mode']
    if mode == 'fine_tune_all':
      return None
    if params is None:
      return True  # something is frozen
    return trainable_mask(params, mode)

  def predict(self, model, variables, batch):
    return per_view_logits(model)(variables, batch)

  def evaluate(self, predict_fn, variables, batches, *, progress=None):
    return views.evaluate(
      predict_fn,
      variables,
      batches,
      num_classes=self.info.num_classes,
      multi_label=False,
      view_aggregation=self.config.evals.view_aggregation,
      progress=progress,
      return_scores=True,
    )

  def statistics_model(self, model):
    if model.frozen():
      return None  # the pretrained statistics are part of the frozen backbone
    return model.clone(backbone=model.backbone.clone(bn_momentum=0.0, drop_pathway_rate=0.0))
