"""Precise BN: population statistics recomputed over a number of training batches.

Running averages lag behind the weights; before evaluation PySlowFast replaces them with
the average, over N batches, of each batch's mean and variance, computed with the current
weights. The task supplies the model to run (`Task.statistics_model`: for classification,
`bn_momentum = 0` so one train-mode pass writes exactly that batch's statistics, and
DropPathway off, since evaluation keeps audio).
"""

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def make_statistics_fn(
  stats_model: nn.Module,
  model_inputs: Callable[[Mapping[str, jax.Array]], Mapping[str, jax.Array]],
  variable_shardings,
  batch_sharding,
) -> Callable:
  """A jitted `(variables, batch) -> batch_stats` of one batch.

  `stats_model` is the task's model with `bn_momentum = 0` (and DropPathway off), so one
  train-mode forward pass writes exactly that batch's statistics.
  """

  def statistics(variables, batch):
    _, updates = stats_model.apply(
      variables,
      model_inputs(batch),
      train=True,
      rngs={'dropout': jax.random.PRNGKey(0)},
      mutable=['batch_stats'],
    )
    return updates['batch_stats']

  return jax.jit(
    statistics,
    in_shardings=(variable_shardings, batch_sharding),
    out_shardings=variable_shardings['batch_stats'],
  )


def recompute(
  statistics_fn: Callable,
  variables: Mapping[str, Any],
  batches: Iterator[Mapping[str, jax.Array]],
  num_batches: int,
) -> Any:
  """Average of the per-batch statistics over `num_batches` batches."""
  total = None
  for _ in range(num_batches):
    stats = statistics_fn(variables, next(batches))
    total = stats if total is None else jax.tree.map(jnp.add, total, stats)
  return jax.tree.map(lambda s: s / num_batches, total)
