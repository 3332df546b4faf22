r"""Scale on paper: XLA's own analyses of the compiled training step at a target's mesh shape.

  python -m avsf_jax.tools.scaling --config=configs/kinetics_r50.py:avslowfast_4x16 \
      --target=8xH100 --param_sharding=fsdp [--json]

The real `train.Trainer.train_step` (the config's model, optimizer and loss, with XLA's own
convolutions as on GPU/TPU) is lowered for abstract arguments (no parameter or batch is ever
materialised) and compiled ahead of time for the target's number of chips, simulated by as
many fake CPU devices (`--xla_force_host_platform_device_count`, set by this tool). From the
compiled executable it reads:

- compute per chip: `cost_analysis()['flops']` of the per-chip SPMD program, next to the
  model's own count (2 FLOPs per multiply-add, a training step = 3 forward passes);
- communication per chip: the bytes of every all-reduce, all-gather, reduce-scatter,
  all-to-all and collective-permute in the optimized HLO (each instruction's result shape,
  the way `tests/benchmarks/test_communication.py` reads it);
- memory per chip: `memory_analysis()` (arguments + outputs + temporaries - aliased).

and estimates the step time and the input cores a chip needs (see `estimate`; every
assumption is a named field of `TARGETS` or a flag). The CPU backend's fusion and layout
decisions differ from a GPU's or TPU's, so temporaries are indicative; arguments (state and
batch per chip) and collective bytes do not depend on the backend.
"""

import json
import os
import re
import sys
from typing import Any

from avsf_jax import console

# Target: chips, dense bf16 peak per chip, HBM bandwidth, per-chip interconnect bandwidth for
# collectives (one direction), HBM per chip, the recipe's per-chip batch (global 1024 where it divides).
TARGETS = {
  '8xH100': dict(
    chips=8, peak_tflops=989.0, hbm_tb_s=3.35, link_gb_s=450.0, hbm_gb=80.0, batch_per_chip=32,
    link='NVLink 4: 900 GB/s per GPU both directions, 450 each way',
  ),
  'v5p-128': dict(
    chips=64, peak_tflops=459.0, hbm_tb_s=2.76, link_gb_s=600.0, hbm_gb=95.0, batch_per_chip=16,
    link='ICI 4800 Gbps per chip (600 GB/s), 3-D torus',
  ),
  'v4-512': dict(
    chips=256, peak_tflops=275.0, hbm_tb_s=1.2, link_gb_s=300.0, hbm_gb=32.0, batch_per_chip=4,
    link='ICI 2400 Gbps per chip (300 GB/s), 3-D torus',
  ),
}  # fmt: skip
# Training clips/s one CPU core feeds through the tf.data pipeline at the 4x16 geometry, 224
# crops (docs/data.md, input suite: 18.0-18.8 measured on an AMD EPYC core).
CLIPS_PER_CORE = 18.0
# The fraction of the roofline (peak FLOP/s and HBM bandwidth) the step reaches: an assumption
# until a GPU/TPU run measures it (1.0 gives the roofline's lower bound on the step time).
ASSUMED_EFFICIENCY = 0.5

_DTYPE_BYTES = {
  'f32': 4, 'bf16': 2, 'f16': 2, 's32': 4, 'u32': 4, 'pred': 1, 'f64': 8, 's64': 8, 'u8': 1,
  's8': 1,
}  # fmt: skip
COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all', 'collective-permute')


def shape_bytes(text: str) -> int:
  """Bytes of the HLO shapes in `text` (a result type: one shape or a tuple of shapes)."""
  import numpy as np  # noqa: PLC0415

  total = 0
  for dtype, dims in re.findall(r'\b(f32|bf16|f16|s32|u32|pred|f64|s64|u8|s8)\[([\d,]*)\]', text):
    total += _DTYPE_BYTES[dtype] * int(np.prod([int(d) for d in dims.split(',') if d] or [1]))
  return total


def collective_bytes(hlo: str) -> dict[str, int]:
  """Result bytes of each collective kind in an optimized HLO module's text.

  Async pairs count once (the `-start` instruction; its tuple result holds the operand and
  the result buffers, so its bytes are halved for all-reduce/all-gather/permute starts).
  """
  totals = dict.fromkeys(COLLECTIVES, 0)
  for line in hlo.splitlines():
    if '=' not in line:
      continue
    lhs, rhs = line.split('=', 1)
    for op in COLLECTIVES:
      if f' {op}(' in f' {rhs.strip()}':
        totals[op] += shape_bytes(rhs.split(f'{op}(', 1)[0])
      elif f' {op}-start(' in f' {rhs.strip()}':
        totals[op] += shape_bytes(rhs.split(f'{op}-start(', 1)[0]) // 2
  del lhs
  return totals


def moved_bytes_per_chip(collectives: dict[str, int], chips: int) -> float:
  """Bytes each chip sends for the collectives, with bandwidth-optimal (ring) algorithms.

  All-reduce of B bytes: 2 (n-1)/n B; all-gather with result B: (n-1)/n B; reduce-scatter
  with result B (a 1/n share): (n-1) B; all-to-all of B: (n-1)/n B; a permute: B.
  """
  n = chips
  if n <= 1:
    return 0.0
  return (
    2 * (n - 1) / n * collectives['all-reduce']
    + (n - 1) / n * collectives['all-gather']
    + (n - 1) * collectives['reduce-scatter']
    + (n - 1) / n * collectives['all-to-all']
    + collectives['collective-permute']
  )


def estimate(
  analysis: dict[str, Any], target: dict[str, Any], *, efficiency: float, clips_per_core: float
) -> dict[str, Any]:
  """Step time and input cores per chip from the analysis and the named assumptions.

  Roofline of the per-chip program: its arithmetic at the peak (XLA's FLOP count) and its
  memory traffic at the HBM bandwidth (XLA's bytes accessed); the larger, over `efficiency`,
  is the compute time. comm_s = moved bytes / link bandwidth; the step takes max(compute,
  comm) when the gradient collectives overlap the backward pass and their sum when they do
  not; input cores = clips/s per chip (overlapped) / clips per core.
  """
  flops_s = analysis['xla_flops_per_chip'] / (target['peak_tflops'] * 1e12)
  memory_s = analysis['xla_bytes_accessed_per_chip'] / (target['hbm_tb_s'] * 1e12)
  compute_s = max(flops_s, memory_s) / efficiency
  comm_s = analysis['moved_bytes_per_chip'] / (target['link_gb_s'] * 1e9)
  overlapped = max(compute_s, comm_s)
  serial = compute_s + comm_s
  batch = analysis['batch_per_chip']
  clips = batch / overlapped
  return {
    'assumed_efficiency': efficiency,
    'roofline_flops_s': flops_s,
    'roofline_memory_s': memory_s,
    'bound': 'memory' if memory_s > flops_s else 'compute',
    'compute_s': compute_s,
    'comm_s': comm_s,
    'step_s_overlapped': overlapped,
    'step_s_serial': serial,
    'clips_per_s_per_chip': clips,
    'mfu': analysis['model_flops_per_chip'] / overlapped / (target['peak_tflops'] * 1e12),
    'input_cores_per_chip': clips / clips_per_core,
    'global_clips_per_s': clips * analysis['chips'],
    'fits_hbm': analysis['planned_peak_bytes'] <= target['hbm_gb'] * 1e9,
  }


def analyse(config, *, param_sharding: str, batch_per_chip: int, conv_lowering: str = 'xla'):
  """Compiles the train step for every local (fake) device and reads XLA's analyses."""
  import copy  # noqa: PLC0415

  import jax  # noqa: PLC0415

  from avsf_jax import models, train  # noqa: PLC0415
  from avsf_jax.input import fake as fake_data  # noqa: PLC0415
  from avsf_jax.models import stats  # noqa: PLC0415

  chips = jax.device_count()
  config = copy.deepcopy(config)
  config.model.conv_lowering = conv_lowering
  config.mesh.param_sharding = param_sharding
  config.model.bn_group_size = min(config.model.bn_group_size, batch_per_chip)
  config.input.dataset = 'fake'
  # The eval batch plays no part in the train step, but must still divide over the chips.
  config.input.eval_batch_size = chips * max(1, config.input.eval_batch_size // chips)
  config.fake_data = {'num_train_examples': 4 * batch_per_chip * chips}
  # The batch's keys, per-clip shapes and dtypes from one fake clip, then global shapes.
  one = copy.deepcopy(config)
  one.input.batch_size = 1
  example = next(fake_data.make_train_iterator(one, seed=0))
  config.input.batch_size = batch_per_chip * chips
  trainer = train.Trainer(config)
  sharding = trainer.experiment.batch_sharding
  batch = {
    k: jax.ShapeDtypeStruct((config.input.batch_size, *v.shape[1:]), v.dtype, sharding=sharding)
    for k, v in example.items()
    if v.dtype.kind in 'biuf'
  }
  rng = jax.ShapeDtypeStruct(trainer.train_rng.shape, trainer.train_rng.dtype)
  compiled = trainer.train_step.lower(trainer.abstract_state, batch, rng).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list | tuple) else cost
  memory = compiled.memory_analysis()
  collectives = collective_bytes(compiled.as_text())
  model = models.build_model(config.model)
  size = stats.model_stats(model, models.inputs_for(model, config))
  params = trainer.abstract_state.params
  param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
  return {
    'chips': chips,
    'param_sharding': param_sharding,
    'conv_lowering': conv_lowering,
    'dtype': config.model.dtype,
    'batch_per_chip': batch_per_chip,
    'crop': config.input.crop_size,
    'params': size['params'],
    'param_bytes': param_bytes,
    'gflops_per_clip': size['gflops'],
    'model_flops_per_chip': 3 * 2 * size['gflops'] * 1e9 * batch_per_chip,
    'xla_flops_per_chip': float(cost.get('flops', 0.0)),
    'xla_bytes_accessed_per_chip': float(cost.get('bytes accessed', 0.0)),
    'argument_bytes': int(memory.argument_size_in_bytes),
    'output_bytes': int(memory.output_size_in_bytes),
    'temp_bytes': int(memory.temp_size_in_bytes),
    'alias_bytes': int(memory.alias_size_in_bytes),
    'planned_peak_bytes': int(
      memory.argument_size_in_bytes
      + memory.output_size_in_bytes
      + memory.temp_size_in_bytes
      - memory.alias_size_in_bytes
    ),
    'collective_bytes': collectives,
    'moved_bytes_per_chip': moved_bytes_per_chip(collectives, chips),
  }


def main(argv=None) -> None:
  import argparse  # noqa: PLC0415

  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', required=True, help='configs/FILE.py[:variant]')
  parser.add_argument('--target', choices=sorted(TARGETS), default='8xH100')
  parser.add_argument('--param_sharding', choices=['replicated', 'fsdp'], default='replicated')
  parser.add_argument('--batch_per_chip', type=int, default=None, help="Default: the target's.")
  parser.add_argument('--dtype', default='bfloat16')
  parser.add_argument('--efficiency', type=float, default=ASSUMED_EFFICIENCY)
  parser.add_argument('--clips_per_core', type=float, default=CLIPS_PER_CORE)
  parser.add_argument('--json', action='store_true')
  console.add_verbose_argument(parser)
  args = parser.parse_args(argv)
  target = TARGETS[args.target]
  # The target's chips as fake CPU devices; must be set before JAX starts.
  os.environ['JAX_PLATFORMS'] = 'cpu'
  flags = re.sub(r'--xla_force_host_platform_device_count=\d+', '', os.environ.get('XLA_FLAGS', ''))
  os.environ['XLA_FLAGS'] = f'{flags} --xla_force_host_platform_device_count={target["chips"]}'
  from avsf_jax.benchmarks import gpu  # noqa: PLC0415 - after XLA_FLAGS

  config = gpu.load_config(args.config)
  config.model.dtype = args.dtype
  analysis = analyse(
    config,
    param_sharding=args.param_sharding,
    batch_per_chip=args.batch_per_chip or target['batch_per_chip'],
  )
  result = {
    'config': args.config,
    'target': args.target,
    'target_assumptions': target,
    'clips_per_core': args.clips_per_core,
    **analysis,
    'estimate': estimate(
      analysis, target, efficiency=args.efficiency, clips_per_core=args.clips_per_core
    ),
  }
  if args.json:
    print(json.dumps(result))
  else:
    for key, value in result.items():
      print(f'{key}: {value}', file=sys.stdout)


if __name__ == '__main__':
  console.guard('scaling', main)()
