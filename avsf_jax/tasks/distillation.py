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

import functools
from collections.abc import Callable, Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from avsf_jax.models import ltl_models
from avsf_jax.tasks import base, clip_finetune

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


# -- the task on the shared loop --------------------------------------------------------------


class StudentTeacher(nn.Module):
  """The student Phi beside the frozen teacher Omega: params {'student': ..., 'teacher': ...}.

  The teacher always runs in eval mode (running BN statistics, nothing mutated) and its
  outputs pass through `stop_gradient`; `Distillation.trainable` keeps its parameters out of
  the optimizer, so they are carried over bit-for-bit.
  """

  student: nn.Module
  teacher: nn.Module

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    logits, aux = self.student(inputs, train=train)
    teacher_logits, teacher_aux = self.teacher({'video': inputs['video']}, train=False)
    aux = dict(
      aux,
      teacher_logits=jax.lax.stop_gradient(teacher_logits),
      teacher_descriptor=jax.lax.stop_gradient(teacher_aux['pooled']),
    )
    return logits, aux


def wrap_slowfast_export(teacher_config, variables: dict[str, Any]) -> dict[str, Any]:
  """A `slowfast_clip` teacher keeps its SlowFast under 'net'; an export of a project
  SlowFast / Slow-only classifier (`python -m avsf_jax.main` + `evaluate --export`) has the
  same variables at its root. Those are moved under 'net'; anything else is returned as is
  (and checked against the teacher's shapes by `init_variables`)."""
  if teacher_config.get('name') != 'slowfast_clip' or 'net' in variables['params']:
    return variables
  return {collection: {'net': tree} for collection, tree in variables.items()}


class Distillation(base.Task):
  """IMGAUD2VID (paper §3.2): the student learns the frozen teacher's descriptor and posterior.

  Config: `config.model` is the student (`name='imgaud'`), `config.distill.teacher` the
  teacher (`name='r2plus1d'` or `'slowfast_clip'`), `config.distill.teacher_export` the export whose variables the
  teacher takes (a `clip_finetune` teacher, or a converted torchvision R(2+1)D-18 written with
  `export.write_from_config`; empty: the teacher's fresh init, for tests), and
  `config.distill.kl_weight` lambda. Batches: the student's inputs, 'video' (the teacher's
  clip) and 'label' (used for logging and evaluation only).
  """

  name = 'distillation'

  def check_dataset(self) -> None:
    teacher_classes = self.config.distill.teacher.num_classes
    if self.config.model.num_classes != teacher_classes:
      raise ValueError(
        f'config.model.num_classes={self.config.model.num_classes} but '
        f'config.distill.teacher.num_classes={teacher_classes}: the student hallucinates the '
        "teacher's posterior, so both need the teacher's classes"
      )

  def build_model(self) -> StudentTeacher:
    if self.config.model.get('name') != 'imgaud':
      raise ValueError(
        f'distillation: config.model.name={self.config.model.get("name")!r}; '
        "expected 'imgaud' (the student)"
      )
    if self.config.distill.teacher.get('name') not in clip_finetune.VIDEO_MODELS:
      raise ValueError(
        f'distillation: config.distill.teacher.name={self.config.distill.teacher.get("name")!r};'
        f' expected one of {clip_finetune.VIDEO_MODELS}'
      )
    return StudentTeacher(
      student=ltl_models.build(self.config.model),
      teacher=ltl_models.build(self.config.distill.teacher, 'config.distill.teacher'),
    )

  def input_spec(self, *, train: bool) -> dict[str, jax.ShapeDtypeStruct]:
    del train
    shapes = {
      **clip_finetune.clip_inputs(self.config),
      **clip_finetune.clip_inputs(self.config, self.config.distill.teacher),
    }
    return {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in shapes.items()}

  @functools.cached_property
  def teacher_variables(self) -> dict[str, Any] | None:
    """The teacher export's {'params', 'batch_stats'} (numpy), or None without an export."""
    source = self.config.distill.get('teacher_export', '')
    if not source:
      return None
    variables = clip_finetune.export_variables(source, 'config.distill.teacher_export')
    return wrap_slowfast_export(self.config.distill.teacher, variables)

  def init_variables(self, model, rng):
    variables = super().init_variables(model, rng)
    loaded = self.teacher_variables
    if loaded is None:
      return variables
    out = {}
    for collection in ('params', 'batch_stats'):
      fresh = variables[collection]['teacher']
      theirs = loaded[collection]
      want = jax.tree_util.tree_structure(fresh)
      if jax.tree_util.tree_structure(theirs) != want or any(
        np.shape(a) != np.shape(b)
        for a, b in zip(jax.tree.leaves(fresh), jax.tree.leaves(theirs), strict=True)
      ):
        raise ValueError(
          f'config.distill.teacher_export={self.config.distill.teacher_export!r}: its '
          f'{collection} do not fit config.distill.teacher (different tree or shapes)'
        )
      teacher = jax.tree.map(lambda a, b: jnp.asarray(b, a.dtype), fresh, theirs)
      out[collection] = {**variables[collection], 'teacher': teacher}
    return out

  def trainable(self, params):
    if params is None:
      return True
    return {
      name: jax.tree.map(lambda _, t=(name != 'teacher'): t, sub) for name, sub in params.items()
    }

  def loss(self, model, params, batch_stats, batch, rng, step):
    del rng, step
    (logits, aux), updates = model.apply(
      {'params': params, 'batch_stats': batch_stats},
      self.model_inputs(batch),
      train=True,
      mutable=['batch_stats'],
    )
    loss, terms = distillation_loss(
      logits,
      aux['fused'],
      aux['teacher_logits'],
      aux['teacher_descriptor'],
      kl_weight=self.config.distill.kl_weight,
    )
    labels = batch['label']
    metrics = {
      **terms,
      'student_top1': jnp.mean(jnp.argmax(logits, -1) == labels),
      'teacher_top1': jnp.mean(jnp.argmax(aux['teacher_logits'], -1) == labels),
    }
    return loss, (updates['batch_stats'], metrics)

  def predict(self, model, variables, batch):
    logits, aux = model.apply(variables, self.model_inputs(batch), train=False)
    return {
      'logits': logits,
      'teacher_logits': aux['teacher_logits'],
      'l1': descriptor_l1(aux['fused'], aux['teacher_descriptor']),
    }

  def evaluate(
    self,
    predict_fn: Callable,
    variables: Any,
    batches: Iterable,
    *,
    progress: Callable[[Iterable], Iterable] | None = None,
  ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    out = clip_finetune.gather(
      predict_fn, variables, batches, progress, ('logits', 'teacher_logits', 'l1')
    )
    agreement = np.mean(out['logits'].argmax(-1) == out['teacher_logits'].argmax(-1))
    results = {
      'top1': clip_finetune.clip_top1(out['logits'], out['label']),
      'teacher_top1': clip_finetune.clip_top1(out['teacher_logits'], out['label']),
      'teacher_agreement': float(100.0 * agreement),
      'l1': float(out['l1'].mean()),
      'clips': len(out['label']),
    }
    return results, out

  # The export is the student alone (variables at the root, as `clip_finetune`'s `imgaud`
  # names them; the preview preprocessing), so `python -m avsf_jax.export` of a distillation
  # workdir gives what fine-tuning's `init_from` and the bank extractor read.

  def export_input_spec(self):
    shapes = clip_finetune.clip_inputs(self.config)  # the student's: no teacher clip
    return {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in shapes.items()}

  def export_variables(self, variables):
    return student_variables(variables)

  def export_preprocessing(self):
    return clip_finetune.preview_preprocessing(self.config)

  def export_function(self, model):
    student = model.student

    def apply(variables, inputs):
      return student.apply(variables, inputs, train=False)[0]

    return apply


def student_variables(variables: dict[str, Any]) -> dict[str, Any]:
  """The student's share of a distillation run's variables, at the root (as `clip_finetune`'s
  `imgaud` model names them), so that an export of it initialises fine-tuning."""
  return {
    'params': variables['params']['student'],
    'batch_stats': variables.get('batch_stats', {}).get('student', {}),
  }
