"""The benchmark suites derive their figures from what they measure; no timing is asserted.

The model suite's GFLOPs and parameters are the model's own counts and its MFU follows from the
timed step; the reference suite builds PyTorchVideo's network at the config's geometry (its
AVSlowFast builder hard-codes 8x8 fusion strides) and reports ours / theirs.
"""

import jax
import numpy as np
import pytest

from avsf_jax import models
from avsf_jax.benchmarks import suites as benchmarking
from avsf_jax.models import stats
from tests import helpers
from tests.helpers import load_config


@pytest.mark.slow
def test_model_suite_reports_the_models_own_size_and_a_consistent_mfu():
  config = helpers.tiny_config()
  result = benchmarking.model_suite(
    config, batch_per_device=1, crop=32, dtypes=('float32',), steps=1, warmup=0, peak_tflops=2.0
  )
  model = models.build_model(config.model)
  expected = stats.model_stats(model, models.inputs_for(model, config, crop_size=32))
  assert result['gflops_per_clip'] == pytest.approx(expected['gflops'], rel=1e-9)
  assert result['params'] == expected['params']
  batch = jax.device_count()
  assert result['global_batch'] == batch
  (row,) = result['rows']
  assert row['train_clips_per_s'] == pytest.approx(batch / row['train_step_s'])
  assert row['infer_clips_per_s'] == pytest.approx(batch / row['infer_batch_s'])
  flops = 2e9 * expected['gflops'] * batch
  assert row['train_mfu'] == pytest.approx(3 * flops / row['train_step_s'] / (2e12 * batch))
  assert row['infer_mfu'] == pytest.approx(flops / row['infer_batch_s'] / (2e12 * batch))
  assert row['compiled_temp_bytes'] > 0


@pytest.mark.slow
@pytest.mark.parametrize('variant', ['avslowfast_4x16', 'avslowfast_8x8', 'slowfast_4x16'])
def test_reference_network_runs_at_the_configs_geometry(variant):
  import torch  # noqa: PLC0415

  config = load_config(f'configs/kinetics_r50.py:{variant}')
  _, reference = benchmarking.pytorchvideo_model(config, crop=64)
  t, alpha = config.input.num_frames, config.model.alpha
  clips = [torch.randn(1, 3, t, 64, 64), torch.randn(1, 3, alpha * t, 64, 64)]
  if 'audio' in config.model.pathways:
    clips.append(torch.randn(1, 1, config.audio.num_frames, 1, config.audio.num_mel_bins))
  with torch.no_grad():
    logits = reference.eval()(clips)
  assert logits.shape == (1, 400)
  # The same network up to layout details (PyTorchVideo fuses at all four junctions; ours
  # where the config says) and without the AVS heads, which PyTorchVideo does not have.
  counts = stats.count_params(
    stats.abstract_variables(
      model := models.build_model(config.model), models.inputs_for(model, config, crop_size=64)
    )
  )
  ours = counts['total'] - counts.get('avs', 0)
  theirs = sum(p.numel() for p in reference.parameters())
  assert abs(theirs - ours) / ours < 0.01


def test_reference_suite_ratios_are_ours_over_theirs():
  config = load_config('configs/kinetics_r50.py:slowfast_4x16')
  ours = {'rows': [{'dtype': 'float32', 'infer_clips_per_s': 3.0, 'train_clips_per_s': 0.5}]}
  result = benchmarking.reference_suite(config, batch=1, crop=32, steps=1, warmup=0, ours=ours)
  assert result['infer_speed_ratio'] == pytest.approx(3.0 / result['infer_clips_per_s'])
  assert result['train_speed_ratio'] == pytest.approx(0.5 / result['train_clips_per_s'])
  assert np.isfinite(result['params']) and result['params'] > 30e6
