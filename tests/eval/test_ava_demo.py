"""`tools/ava_demo.acceptance`: the spec 7.3 figures and checks from hand-made per-class APs."""

import math

import pytest

from avsf_jax.tools import ava_demo

IDS = [1, 2, 4, 5, 6]  # walk, jump, wave, carry, sing


def _result(walk, jump, wave, carry, sing):
  return {'class_ids': IDS, 'per_class_ap': [walk, jump, wave, carry, sing]}


def _variant(oracle, detector_08, detector_00, exact=True):
  return {
    'oracle': oracle,
    'detector_0.8': detector_08,
    'detector_0.0': detector_00,
    'export_exact': exact,
  }


def test_figures_and_checks_by_hand():
  sf = _variant(
    _result(1.0, 0.9, 0.7, 0.8, 0.5),  # visual mAP 0.85; sing 0.5
    _result(0.8, 0.7, 0.6, 0.9, 0.1),  # 0.75
    _result(0.7, 0.6, 0.5, 0.8, 0.1),  # 0.65
  )
  av = _variant(_result(0.9, 0.9, 0.9, 0.9, 0.81), _result(*[0.0] * 5), _result(*[0.0] * 5))
  out = ava_demo.acceptance({'demo': sf, 'demo_avslowfast': av})
  figures = out['figures']
  assert figures['oracle_visual_map_slowfast'] == pytest.approx(0.85, abs=1e-12)
  assert figures['detector_0.8_visual_map_slowfast'] == pytest.approx(0.75, abs=1e-12)
  assert figures['detector_0.0_visual_map_slowfast'] == pytest.approx(0.65, abs=1e-12)
  assert figures['ap_sing_slowfast'] == 0.5 and figures['ap_sing_avslowfast'] == 0.81
  assert all(out['checks'].values())
  # Each check fails on its own.
  worse = {
    'oracle_visual_map >= 0.80': _variant(
      _result(0.7, 0.9, 0.7, 0.8, 0.5), *list(sf.values())[1:3]
    ),
    'detector_0.8_visual_map >= 0.70': _variant(
      sf['oracle'], _result(0.6, 0.7, 0.6, 0.7, 0.1), _result(0.5, 0.6, 0.5, 0.6, 0.1)
    ),
    'detector map lower at threshold 0': _variant(
      sf['oracle'], sf['detector_0.8'], sf['detector_0.8']
    ),
    'export exact': _variant(*list(sf.values())[:3], exact=False),
  }
  for name, variant in worse.items():
    checks = ava_demo.acceptance({'demo': variant, 'demo_avslowfast': av})['checks']
    assert [k for k, v in checks.items() if not v] == [name]
  low_gain = {**av, 'oracle': _result(0.9, 0.9, 0.9, 0.9, 0.79)}
  checks = ava_demo.acceptance({'demo': sf, 'demo_avslowfast': low_gain})['checks']
  assert [k for k, v in checks.items() if not v] == ['ap_sing gain >= 0.30']


def test_a_class_without_ground_truth_is_left_out_of_the_mean():
  sf = _variant(_result(1.0, math.nan, 0.6, 0.8, 0.5), _result(*[0.5] * 5), _result(*[0.4] * 5))
  out = ava_demo.acceptance({'demo': sf, 'demo_avslowfast': sf})
  assert out['figures']['oracle_visual_map_slowfast'] == pytest.approx(0.8, abs=1e-12)
