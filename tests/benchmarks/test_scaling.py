"""`avsf_jax.tools.scaling`: the collective bytes read off HLO text, the bytes a chip moves,
the step-time and input-core estimate, and XLA's analyses of the tiny model's compiled step.
"""

import pytest

from avsf_jax.tools import scaling
from tests import helpers

_HLO = """
  %all-reduce.1 = f32[10,4]{1,0} all-reduce(f32[10,4]{1,0} %p), replica_groups={}
  %ar-start = (bf16[8]{0}, bf16[8]{0}) all-reduce-start(bf16[8]{0} %q), to_apply=%add
  %ar-done = bf16[8]{0} all-reduce-done((bf16[8]{0}, bf16[8]{0}) %ar-start)
  %all-gather.2 = f32[64]{0} all-gather(f32[8]{0} %r), dimensions={0}
  %reduce-scatter.3 = s32[2,3]{1,0} reduce-scatter(s32[16,3]{1,0} %s), dimensions={0}
  %add.4 = f32[10,4]{1,0} add(f32[10,4]{1,0} %a, f32[10,4]{1,0} %b)
"""


def test_collective_bytes_are_the_result_shapes_of_each_kind():
  totals = scaling.collective_bytes(_HLO)
  # 40 f32 + 8 bf16 (the async start's tuple holds operand and result: counted once).
  assert totals['all-reduce'] == 160 + 16
  assert totals['all-gather'] == 256
  assert totals['reduce-scatter'] == 24
  assert totals['all-to-all'] == totals['collective-permute'] == 0


def test_moved_bytes_follow_the_ring_algorithms():
  totals = {'all-reduce': 800, 'all-gather': 400, 'reduce-scatter': 10, 'all-to-all': 0,
            'collective-permute': 5}  # fmt: skip
  # 2 * 3/4 * 800 + 3/4 * 400 + 3 * 10 + 5.
  assert scaling.moved_bytes_per_chip(totals, 4) == pytest.approx(1200 + 300 + 30 + 5)
  assert scaling.moved_bytes_per_chip(totals, 1) == 0.0


def test_estimate_is_the_named_arithmetic():
  analysis = {'xla_flops_per_chip': 4e12, 'xla_bytes_accessed_per_chip': 1e12,
              'model_flops_per_chip': 3e12, 'moved_bytes_per_chip': 1e9, 'batch_per_chip': 8,
              'chips': 16, 'planned_peak_bytes': 50e9}  # fmt: skip
  target = {'peak_tflops': 100.0, 'hbm_tb_s': 20.0, 'link_gb_s': 200.0, 'hbm_gb': 40.0}
  result = scaling.estimate(analysis, target, efficiency=0.5, clips_per_core=4.0)
  assert result['roofline_flops_s'] == pytest.approx(0.04)  # 4e12 / 100e12
  assert result['roofline_memory_s'] == pytest.approx(0.05)  # 1e12 / 20e12
  assert result['bound'] == 'memory'
  assert result['compute_s'] == pytest.approx(0.1)  # 0.05 / 0.5
  assert result['comm_s'] == pytest.approx(0.005)  # 1e9 / 200e9
  assert result['step_s_overlapped'] == pytest.approx(0.1)
  assert result['step_s_serial'] == pytest.approx(0.105)
  assert result['clips_per_s_per_chip'] == pytest.approx(80.0)
  assert result['mfu'] == pytest.approx(3e12 / 0.1 / 100e12)
  assert result['input_cores_per_chip'] == pytest.approx(20.0)
  assert result['global_clips_per_s'] == pytest.approx(1280.0)
  assert result['fits_hbm'] is False


@pytest.mark.slow
def test_analysis_of_the_tiny_replicated_step():
  """One compile (FSDP's analysis runs the same code with `mesh.param_sharding='fsdp'`;
  docs/scaling.md has its figures)."""
  config = helpers.tiny_config('slowfast')
  replicated = scaling.analyse(config, param_sharding='replicated', batch_per_chip=2)
  assert replicated['chips'] == 8
  # Replicated data parallelism: gradient all-reduce of the parameter bytes, plus the
  # per-channel BN moments and scalar metrics; nothing gathered.
  reduced = replicated['collective_bytes']['all-reduce']
  assert replicated['param_bytes'] <= reduced <= 1.1 * replicated['param_bytes']
  assert replicated['collective_bytes']['all-gather'] == 0
  assert replicated['moved_bytes_per_chip'] == pytest.approx(2 * 7 / 8 * reduced)
  assert replicated['model_flops_per_chip'] == pytest.approx(
    6e9 * replicated['gflops_per_clip'] * 2
  )
  # XLA counts the same convolutions (and elementwise work) in the per-chip program.
  assert 0.5 < replicated['xla_flops_per_chip'] / replicated['model_flops_per_chip'] < 2.0
  assert replicated['planned_peak_bytes'] == (
    replicated['argument_bytes'] + replicated['output_bytes'] + replicated['temp_bytes']
    - replicated['alias_bytes']
  )  # fmt: skip
