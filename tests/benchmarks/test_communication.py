"""The compiled data-parallel train step communicates only what it must.

On 8 fake CPU devices, the step's optimized HLO may hold all-reduces and nothing else that
moves data between devices (no all-gather, all-to-all, collective-permute, reduce-scatter):
the gradient all-reduce (the parameter bytes), the per-channel moments that keep the
replicated BatchNorm running statistics identical, scalar metrics, and, only when BN
statistics cover the whole global batch, the BN normalisation reductions.
"""

import re

import jax
import numpy as np
import pytest

from avsf_jax import mesh as mesh_lib
from avsf_jax import train
from avsf_jax.input import fake as fake_data
from tests import helpers

_DTYPE_BYTES = {'f32': 4, 'bf16': 2, 'f16': 2, 's32': 4, 'u32': 4, 'pred': 1, 'f64': 8, 's64': 8}
_SHAPE = re.compile(r'\b(f32|bf16|f16|s32|u32|pred|f64|s64)\[([\d,]*)\]')
_COLLECTIVES = ('all-gather', 'all-to-all', 'collective-permute', 'reduce-scatter')


def _result_bytes(line: str) -> int:
  """Bytes of an HLO instruction's result type (a shape or a tuple of shapes)."""
  lhs = line.split('=', 1)[1].split(' all-reduce', 1)[0]
  return sum(
    _DTYPE_BYTES[dtype] * int(np.prod([int(d) for d in dims.split(',') if d] or [1]))
    for dtype, dims in _SHAPE.findall(lhs)
  )


def _compiled_step(group_size: int):
  config = helpers.tiny_config()
  config.model.bn_group_size = group_size
  trainer = train.Trainer(config)
  state = trainer.initial_state()
  batch = mesh_lib.global_batch(
    next(fake_data.make_train_iterator(config, seed=0)), trainer.experiment.batch_sharding
  )
  compiled = trainer.train_step.lower(state, batch, trainer.train_rng).compile()
  param_bytes = sum(p.size * p.dtype.itemsize for p in jax.tree_util.tree_leaves(state.params))
  stat_bytes = sum(s.size * s.dtype.itemsize for s in jax.tree_util.tree_leaves(state.batch_stats))
  return compiled.as_text(), param_bytes, stat_bytes


def _all_reduced_bytes(hlo: str) -> int:
  for op in _COLLECTIVES:
    assert f' {op}(' not in hlo and f' {op}-start(' not in hlo, f'unexpected {op}'
  reduces = [
    line for line in hlo.splitlines() if re.search(r' all-reduce(-start)?\(', line) and '=' in line
  ]
  return sum(_result_bytes(line) for line in reduces)


@pytest.mark.slow
def test_train_step_all_reduces_about_the_parameter_bytes():
  assert jax.device_count() == 8
  # Grouped BN (2 clips a group, 2 clips a device): gradients, plus the per-channel moments
  # that keep the replicated running statistics identical, plus scalar metrics. In this tiny
  # model BN channels weigh much more against the weights than in an R50.
  grouped_hlo, param_bytes, stat_bytes = _compiled_step(group_size=2)
  grouped = _all_reduced_bytes(grouped_hlo)
  # Gradients, one E[x] and E[x^2] per BN channel (the running statistics: stat_bytes), scalar
  # metrics and loss normalisers. With the authors' AVS wiring (the loss-only pool5 fusion
  # block, DropPathway-gated junction losses) this tiny model all-reduces ~6.7% of its
  # parameter bytes beyond gradients and BN moments; the bound keeps it under 8%.
  assert param_bytes <= grouped <= 1.08 * param_bytes + stat_bytes, (
    grouped,
    param_bytes,
    stat_bytes,
  )
  # Whole-batch BN: the normalisation statistics themselves are reduced too, forward and back.
  global_hlo, _, _ = _compiled_step(group_size=0)
  whole_batch = _all_reduced_bytes(global_hlo)
  assert grouped < whole_batch <= 1.12 * param_bytes + stat_bytes
  assert whole_batch - grouped < 2 * stat_bytes
