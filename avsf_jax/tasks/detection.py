"""AVA detection's pure loss and score functions (the task seam wires them to the trainer).

Batch keys these functions read (boxes padded to a static `max_boxes` M per clip):
- 'box_labels': (N, M, K) multi-hot, class id c in column c - 1; unlabelled boxes are all 0;
- 'box_mask': (N, M) True for real boxes, False for padding.

The loss is PySlowFast's `bce` with `reduction="mean"` over (boxes x classes) of the real
boxes only (spec `ava.md` 4): sum over valid boxes / (n_valid * K). Padded slots are removed
with `jnp.where` before the sum, so they contribute neither loss nor gradient, even if their
logits are inf or NaN.
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax


def masked_box_bce(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean BCE-with-logits over the valid boxes' (box, class) pairs; 0 when no box is valid."""
  logits = logits.astype(jnp.float32)
  if logits.ndim != 3 or labels.shape != logits.shape or mask.shape != logits.shape[:2]:
    raise ValueError(
      'expected logits and box_labels (N, M, K) and box_mask (N, M), got '
      f'{logits.shape}, {labels.shape} and {mask.shape}'
    )
  valid = mask.astype(bool)[..., None]
  # Padded slots are replaced before the loss so that no NaN/inf can reach the gradient.
  safe_logits = jnp.where(valid, logits, 0.0)
  per_class = optax.sigmoid_binary_cross_entropy(safe_logits, labels.astype(jnp.float32))
  total = jnp.where(valid, per_class, 0.0).sum()
  count = mask.astype(jnp.float32).sum() * logits.shape[-1]
  return total / jnp.maximum(count, 1.0)


def scores(logits: jax.Array) -> jax.Array:
  """Per-class sigmoid probabilities (PySlowFast's `HEAD_ACT: sigmoid` at evaluation)."""
  return jax.nn.sigmoid(logits.astype(jnp.float32))


def loss_and_metrics(
  logits: jax.Array, batch: Mapping[str, jax.Array]
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The detection loss of a batch, and the metrics logged beside it."""
  loss = masked_box_bce(logits, batch['box_labels'], batch['box_mask'])
  num_boxes = batch['box_mask'].astype(jnp.float32).sum()
  return loss, {'detection_loss': loss, 'boxes_per_clip': num_boxes / batch['box_mask'].shape[0]}
