"""Precise BN: population statistics recomputed over a number of training batches.

Running averages lag behind the weights; before evaluation PySlowFast replaces them with
the average, over N batches, of each batch's mean and variance, computed with the current
weights. Here the model is cloned with `bn_momentum = 0` (so one forward pass in training
mode writes exactly that batch's statistics) and DropPathway off (evaluation keeps audio).
"""

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from avsf_jax.models import AVSlowFast


def make_statistics_fn(model: AVSlowFast, variable_shardings, batch_sharding) -> Callable:
  """A jitted `(variables, batch) -> batch_stats` of one batch."""
  stats_model = model.clone(bn_momentum=0.0, drop_pathway_rate=0.0)

  def statistics(variables, batch):
    inputs = {p: batch[p] for p in model.pathways}
    _, updates = stats_model.apply(
      variables,
      inputs,
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
