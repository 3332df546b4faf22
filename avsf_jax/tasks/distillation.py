"""IMGAUD2VID losses (paper 004 Eqs. 2-4; spec listen_to_look.md 2.3-2.4), as pure functions.

The student Phi(I, A) learns to hallucinate the frozen teacher's clip descriptor and its class
posterior:

  L_KL = -sum_c Omega_c(V) log Phi_c(I, A)       (Eq. 2, a soft-target cross-entropy: the same
                                                   gradients as KL(Omega || Phi); temperature 1)
  L_1  = || z^V - Psi(z^I, z^A) ||_1              (Eq. 3, summed over the D dimensions)
  L    = L_1 + lambda * L_KL,  lambda = 100       (Eq. 4)

Both terms are averaged over the (valid) clips of the batch [assumption of the spec: with the
L1 summed over D = 512 this keeps the two terms comparable]. The teacher's outputs are
constants (`stop_gradient`): Omega is frozen. Clip-level fine-tuning (section 2.4) is plain
cross-entropy against the clip's video label: `avsf_jax.losses.softmax_cross_entropy`.
"""

import jax
import jax.numpy as jnp

KL_WEIGHT = 100.0  # lambda of Eq. (4), section 4 of the paper.


def soft_target_cross_entropy(student_logits: jax.Array, teacher_logits: jax.Array) -> jax.Array:
  """Per-clip -sum_c softmax(teacher)_c log softmax(student)_c, (N, C) -> (N,) float32."""
  teacher = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32), axis=-1)
  log_student = jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1)
  return -(teacher * log_student).sum(axis=-1)


def descriptor_l1(student_descriptor: jax.Array, teacher_descriptor: jax.Array) -> jax.Array:
  """Per-clip ||z^V - Psi||_1 summed over the descriptor, (N, D) -> (N,) float32."""
  if student_descriptor.shape != teacher_descriptor.shape:
    raise ValueError(
      f'descriptor_l1: student descriptor {student_descriptor.shape} and teacher descriptor '
      f"{teacher_descriptor.shape} differ; Psi's output width (embed_dim) must equal the "
      "teacher's descriptor width D"
    )
  teacher = jax.lax.stop_gradient(teacher_descriptor).astype(jnp.float32)
  return jnp.abs(teacher - student_descriptor.astype(jnp.float32)).sum(axis=-1)


def _masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
  if mask is None:
    return values.mean()
  mask = mask.astype(jnp.float32)
  return (values * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def distillation_loss(
  student_logits: jax.Array,
  student_descriptor: jax.Array,
  teacher_logits: jax.Array,
  teacher_descriptor: jax.Array,
  *,
  kl_weight: float = KL_WEIGHT,
  mask: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L_1 + kl_weight * L_KL over the batch, and both terms for logging.

  Args:
    student_logits: (N, C) logits of Phi's classifier.
    student_descriptor: (N, D) Psi(z^I, z^A) (the student's aux['fused']).
    teacher_logits: (N, C) logits of the frozen teacher (Omega = their softmax).
    teacher_descriptor: (N, D) the teacher's pooled res5 descriptor z^V.
    kl_weight: lambda of Eq. (4).
    mask: optional (N,) 1 for real clips, 0 for padding; means are over real clips.

  Returns:
    (total, {'l1': batch-mean L_1, 'kl': batch-mean L_KL, 'total': total}).
  """
  if student_logits.shape != teacher_logits.shape:
    raise ValueError(
      f'distillation_loss: student logits {student_logits.shape} and teacher logits '
      f"{teacher_logits.shape} differ; the student classifier needs the teacher's classes"
    )
  l1 = _masked_mean(descriptor_l1(student_descriptor, teacher_descriptor), mask)
  kl = _masked_mean(soft_target_cross_entropy(student_logits, teacher_logits), mask)
  total = l1 + kl_weight * kl
  return total, {'l1': l1, 'kl': kl, 'total': total}
