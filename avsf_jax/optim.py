"""The optimizer of the papers as optax: SGD + momentum, masked weight decay, warm-up + cosine.

Durations in the config are epochs; `epochs_to_steps` is the one place where they become
steps. Weight decay is an optax transformation (`add_decayed_weights`) applied to the
gradients before momentum, as PyTorch's SGD does; it never appears in the loss.
"""

import math

import jax
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


def learning_rate_schedule(
  config: ml_collections.ConfigDict, *, steps_per_epoch: float, total_steps: int, peak: float
) -> optax.Schedule:
  """Linear warm-up from `warmup_start_factor * peak`, then cosine or step decay."""
  warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total_steps)
  if config.schedule == 'cosine':
    main = optax.cosine_decay_schedule(
      peak, decay_steps=max(total_steps - warmup, 1), alpha=config.end_factor
    )
  elif config.schedule == 'steps':
    boundaries = {
      int(round(e * steps_per_epoch)) - warmup: config.decay_factor for e in config.decay_epochs
    }
    main = optax.piecewise_constant_schedule(peak, {b: f for b, f in boundaries.items() if b > 0})
  else:
    raise ValueError(f'optim.schedule={config.schedule!r}; one of cosine, steps')
  if warmup == 0:
    return main
  ramp = optax.linear_schedule(config.warmup_start_factor * peak, peak, warmup)
  return optax.join_schedules([ramp, main], [warmup])


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
