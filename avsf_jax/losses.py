"""Losses: classification (softmax, per-class sigmoid, several heads) and the AVS contrastive loss.

Everything is computed in float32 and returns per-batch means. Weight decay is not a loss
term (see `optim`).
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

from avsf_jax.input import info as info_lib


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


# The batch key of a head's labels ('label', or 'label_<head>' for EPIC's named heads) has
# one home, beside the dataset info; kept reachable here for the losses' callers.
label_key = info_lib.label_key


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
  weight: jax.Array | None = None,
) -> jax.Array:
  """AVS loss of paper 000 (SPEC 3): mean(d(v, a+)^2 + max(0, margin - d(v, a-))^2) / 2.

  Embeddings are (N, D), already L2-normalised and scaled by 0.5 by the model, so distances
  lie in [0, 1]. `pair_mask` (N,) drops pairs (their positive and negative terms both go;
  see `filter_duplicates`); a negative whose embedding lies within `duplicate_distance` of
  the positive audio embedding is a near-duplicate, and only its hinge term is dropped (the
  first recipe's rule, 0 = off). The mean is over the pairs that remain (zero when none
  does). `weight` (scalar or (N,), from `avs_junction_weights`) scales each pair's term but
  not the count: a BN group whose junction loss does not count this step contributes zero,
  as a replica that skips a loss does to the gradient all-reduce of the authors' code.
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
  if weight is not None:
    per_example = per_example * jnp.asarray(weight, jnp.float32)
  return 0.5 * jnp.sum(per_example) / jnp.maximum(jnp.sum(mask), 1.0)


def avs_total(
  avs: Mapping[str, Mapping[str, jax.Array]],
  *,
  margin: float,
  pair_mask: jax.Array | None,
  duplicate_distance: float,
  junction_weights: Mapping[str, jax.Array] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The AVS loss summed over junctions, and each junction's value.

  `junction_weights` ({junction: scalar or (N,)}, see `avs_junction_weights`) gates each
  junction's pairs; None counts every junction every step (the first recipe).
  """
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
      weight=None if junction_weights is None else junction_weights[junction],
    )
    metrics[f'avs_loss_{junction}'] = loss
    total = total + loss
  return total, metrics


def filter_duplicates(
  audio: jax.Array,
  audio_negative: jax.Array,
  *,
  min_variance: float = 0.01,
  max_cosine: float = 0.99999,
) -> jax.Array:
  """(N,) float mask of the AVS pairs worth a loss: the authors' `filter_duplicates` rule.

  A pair is kept (1.0) only when both input log-mels vary (variance over all their entries
  > `min_variance`: silent or constant audio says nothing about synchrony) and they are not
  the same sound (cosine similarity of the flattened log-mels < `max_cosine`: a hard
  negative cut from a looped or static track can equal the positive). Otherwise the whole
  pair, positive and negative term, is dropped. The decision uses the model inputs, not the
  embeddings, so it does not depend on the weights.
  """
  a = audio.astype(jnp.float32).reshape(audio.shape[0], -1)
  b = audio_negative.astype(jnp.float32).reshape(audio_negative.shape[0], -1)
  if a.shape != b.shape:
    raise ValueError(f'filter_duplicates: audio {audio.shape} vs negative {audio_negative.shape}')
  cosine = jnp.sum(a * b, axis=-1) / jnp.maximum(
    jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1), 1e-12
  )
  keep = (jnp.var(a, axis=-1) > min_variance) & (jnp.var(b, axis=-1) > min_variance)
  return (keep & (cosine < max_cosine)).astype(jnp.float32)


# Where an AVS loss may sit, in the order the network reaches them.
AVS_JUNCTION_ORDER = ('pool1', 'res2', 'res3', 'res4', 'pool5')


def avs_junction_weights(junctions, keep: jax.Array, fusion_junctions) -> dict[str, jax.Array]:
  """Per-junction AVS loss weights gated by DropPathway, as in the authors' code.

  Once audio has been added to the visual features (at the earliest of `fusion_junctions`),
  the visual side of every later junction already contains the audio it is to be matched
  with, and synchrony becomes trivial. So junctions up to and including the earliest fusion
  junction always count (weight 1); later ones (and pool5) count only where DropPathway
  dropped the audio->visual laterals this step. `keep` is the model's
  `aux['drop_pathway_keep']` (1 = audio fused): a scalar (one draw for the batch) or (N,)
  (per example or per BN group), and each weight has its shape. With no audio fusion at all,
  every junction counts.
  """
  order = {j: i for i, j in enumerate(AVS_JUNCTION_ORDER)}
  unknown = sorted(set(junctions) - set(order)) + sorted(set(fusion_junctions) - set(order))
  if unknown:
    raise ValueError(f'avs_junction_weights: unknown junctions {unknown}; expected {order}')
  keep = jnp.asarray(keep, jnp.float32)
  earliest = min((order[j] for j in fusion_junctions), default=len(order))
  return {j: jnp.ones_like(keep) if order[j] <= earliest else 1.0 - keep for j in junctions}
