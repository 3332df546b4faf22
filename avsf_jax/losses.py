"""Losses: classification (softmax, per-class sigmoid, several heads) and the AVS contrastive loss.

Everything is computed in float32 and returns per-batch means. Weight decay is not a loss
term (see `optim`).
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax


def softmax_cross_entropy(
  logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0
) -> jax.Array:
  """Mean cross-entropy of (N, K) logits against (N,) integer labels."""
  logits = logits.astype(jnp.float32)
  targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets).mean()


def sigmoid_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Multi-label loss: binary cross-entropy per class against (N, K) multi-hot targets.

  Averaged over examples and classes, as PySlowFast's `bce_logit` loss.
  """
  return optax.sigmoid_binary_cross_entropy(
    logits.astype(jnp.float32), targets.astype(jnp.float32)
  ).mean()


def label_key(head: str | None) -> str:
  """Batch key of a head's labels: 'label', or 'label_<head>' for named heads (EPIC)."""
  return 'label' if head is None else f'label_{head}'


def classification(
  logits: jax.Array | Mapping[str, jax.Array],
  batch: Mapping[str, jax.Array],
  *,
  multi_label: bool,
  label_smoothing: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Classification loss summed over heads, and per-head top-1 accuracy (single-label)."""
  heads = logits if isinstance(logits, Mapping) else {None: logits}
  total = jnp.zeros((), jnp.float32)
  metrics = {}
  for head, head_logits in heads.items():
    labels = batch[label_key(head)]
    suffix = '' if head is None else f'_{head}'
    if multi_label:
      loss = sigmoid_cross_entropy(head_logits, labels)
    else:
      loss = softmax_cross_entropy(head_logits, labels, label_smoothing)
      hits = jnp.argmax(head_logits, axis=-1) == labels
      metrics[f'accuracy{suffix}'] = hits.astype(jnp.float32).mean()
    metrics[f'classification_loss{suffix}'] = loss
    total = total + loss
  return total, metrics


def avs_contrastive(
  visual: jax.Array,
  audio: jax.Array,
  audio_negative: jax.Array,
  *,
  margin: float,
  pair_mask: jax.Array | None = None,
  duplicate_distance: float = 0.0,
) -> jax.Array:
  """AVS loss of paper 000 (SPEC 3): mean(d(v, a+)^2 + max(0, margin - d(v, a-))^2) / 2.

  Embeddings are (N, D), already L2-normalised and scaled by 0.5 by the model, so distances
  lie in [0, 1]. `pair_mask` (N,) drops examples whose audio is silent (their positive and
  negative terms both go); a negative whose embedding lies within `duplicate_distance` of
  the positive audio embedding is a near-duplicate, and only its hinge term is dropped.
  The mean is over the examples that remain (zero when none does).
  """
  v = visual.astype(jnp.float32)
  a_pos = audio.astype(jnp.float32)
  a_neg = audio_negative.astype(jnp.float32)

  def distance(x, y):
    return jnp.sqrt(jnp.sum(jnp.square(x - y), axis=-1) + 1e-12)

  mask = jnp.ones(v.shape[:1], jnp.float32) if pair_mask is None else pair_mask
  mask = mask.astype(jnp.float32)
  negative_mask = mask
  if duplicate_distance > 0:
    duplicate = distance(a_neg, a_pos) < duplicate_distance
    negative_mask = mask * (1.0 - duplicate.astype(jnp.float32))
  positive = jnp.square(distance(v, a_pos))
  negative = jnp.square(jnp.maximum(0.0, margin - distance(v, a_neg)))
  per_example = mask * positive + negative_mask * negative
  return 0.5 * jnp.sum(per_example) / jnp.maximum(jnp.sum(mask), 1.0)


def avs_total(
  avs: Mapping[str, Mapping[str, jax.Array]],
  *,
  margin: float,
  pair_mask: jax.Array | None,
  duplicate_distance: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The AVS loss summed over junctions (each with weight 1), and each junction's value."""
  total = jnp.zeros((), jnp.float32)
  metrics = {}
  for junction, e in sorted(avs.items()):
    loss = avs_contrastive(
      e['visual'],
      e['audio'],
      e['audio_negative'],
      margin=margin,
      pair_mask=pair_mask,
      duplicate_distance=duplicate_distance,
    )
    metrics[f'avs_loss_{junction}'] = loss
    total = total + loss
  return total, metrics
