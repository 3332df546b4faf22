"""The optimizer of the papers as optax: SGD + momentum, masked weight decay, warm-up + cosine.

Durations in the config are epochs; `epochs_to_steps` is the one place where they become
steps. Weight decay is an optax transformation (`add_decayed_weights`) applied to the
gradients before momentum, as PyTorch's SGD does; it never appears in the loss.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax


def epochs_to_steps(epochs: float, num_examples: int, global_batch_size: int) -> int:
  """Optimizer steps in `epochs` passes over `num_examples` at `global_batch_size` per step."""
  return int(math.ceil(epochs * num_examples / global_batch_size))


def total_steps(
  config: ml_collections.ConfigDict, num_examples: int, global_batch_size: int
) -> int:
  """Steps of the whole run (`config` is the `optim` section); at least one."""
  return max(1, epochs_to_steps(config.num_epochs, num_examples, global_batch_size))


def peak_learning_rate(config: ml_collections.ConfigDict, global_batch_size: int) -> float:
  """Linear scaling rule: base_lr for base_batch_size clips, proportional to the batch."""
  return config.base_lr * global_batch_size / config.base_batch_size


SCHEDULES = ('cosine', 'cosine_after_warmup', 'steps')


def _cosine(peak: float, end: float, offset: int, length: int) -> optax.Schedule:
  """end + (peak - end) * 0.5 * (cos(pi * (n - offset) / length) + 1), as PySlowFast writes it."""

  def schedule(step):
    progress = (jnp.asarray(step, jnp.float32) - offset) / max(length, 1)
    progress = jnp.clip(progress, 0.0, 1.0)
    return end + (peak - end) * 0.5 * (jnp.cos(jnp.pi * progress) + 1.0)

  return schedule


def learning_rate_schedule(
  config: ml_collections.ConfigDict, *, steps_per_epoch: float, total_steps: int, peak: float
) -> optax.Schedule:
  """Linear warm-up from `warmup_start_factor * peak` into cosine or step decay.

  `schedule` picks the decay:
    - 'cosine': PySlowFast's `lr_policy.lr_func_cosine` (the papers' recipe): one cosine half
      period over the whole run, eta * 0.5 * (cos(pi * n / n_max) + 1) (floored at
      `end_factor * peak`), whose first `warmup` steps are replaced by a linear ramp from
      `warmup_start_factor * peak` to the cosine's own value at the end of warm-up.
    - 'cosine_after_warmup': the ramp goes to the peak and the cosine then runs over the
      remaining steps (PySlowFast's SOLVER.COSINE_AFTER_WARMUP; this project's first recipe).
    - 'steps': piecewise constant, times `decay_factor` at each of `decay_epochs`.
  """
  warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total_steps)
  end = config.end_factor * peak
  if config.schedule == 'cosine':
    main = _cosine(peak, end, 0, total_steps)
    ramp_end = float(main(warmup))
  elif config.schedule == 'cosine_after_warmup':
    main = _cosine(peak, end, warmup, total_steps - warmup)
    ramp_end = peak
  elif config.schedule == 'steps':
    boundaries = {int(round(e * steps_per_epoch)): config.decay_factor for e in config.decay_epochs}
    main = optax.piecewise_constant_schedule(peak, {b: f for b, f in boundaries.items() if b > 0})
    ramp_end = peak
  else:
    raise ValueError(f'optim.schedule={config.schedule!r}; one of {SCHEDULES}')
  if warmup == 0:
    return main
  ramp = optax.linear_schedule(config.warmup_start_factor * peak, ramp_end, warmup)

  def schedule(step):
    return jnp.where(jnp.asarray(step) < warmup, ramp(step), main(step))

  return schedule


def decay_mask(params, decay_norm_and_bias: bool):
  """True for the leaves that get weight decay: kernels (rank >= 2), unless told otherwise.

  Rank-1 leaves are BatchNorm scales/biases and layer biases, which the released AVSlowFast
  code leaves undecayed.
  """
  return jax.tree.map(lambda p: decay_norm_and_bias or p.ndim > 1, params)


def make_optimizer(
  config: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
  """Optional clipping -> masked decoupled-from-loss weight decay -> SGD with momentum."""
  parts = []
  if config.clip_grad_norm > 0:
    parts.append(optax.clip_by_global_norm(config.clip_grad_norm))
  if config.weight_decay > 0:
    parts.append(
      optax.add_decayed_weights(
        config.weight_decay, mask=lambda p: decay_mask(p, config.decay_norm_and_bias)
      )
    )
  parts.append(optax.sgd(schedule, momentum=config.momentum, nesterov=config.nesterov))
  return optax.chain(*parts)
