"""Parameter counts and GFLOPs of our models against the papers' tables (SPEC section 5).

GFLOPs are multiply-adds for one 256x256 view (audio 128x80), counted from the model's own
jaxpr. Tolerances: 3% for the SlowFast family, 5% for AVSlowFast rows. Rows whose published
figure our architecture cannot match are asserted at the value our derivation predicts,
with the reason; docs/models.md explains each of them.
"""

import pytest

from avsf_jax.tools import model_stats
from tests.helpers import load_config

R50 = 'configs/kinetics_r50.py'
R101 = 'configs/kinetics_r101.py'
ALL4 = ('pool1', 'res2', 'res3', 'res4')

# (row, config spec, model overrides, paper GFLOPs, paper params in M or None, tolerance)
SLOWFAST_ROWS = [
  ('Slow-only 4x16 R50', f'{R50}:slow_only_4x16', {}, 27.3, 32.4, 0.03),
  ('SlowFast 4x16 R50', f'{R50}:slowfast_4x16', {}, 36.1, 34.5, 0.03),
  ('SlowFast 8x8 R50', f'{R50}:slowfast_8x8', {}, 65.7, None, 0.03),
  ('SlowFast 8x8 R101', f'{R101}:slowfast_8x8', {}, 106.0, None, 0.03),
  ('SlowFast 16x8 R101', f'{R101}:slowfast_16x8', {}, 213.0, None, 0.03),
  # The paper's 234 is reached with a 2x2x2 key/value pool; the preset's PySlowFast 1x2x2
  # pool is asserted at its own derivation in test_r101_lateral_kernel_and_nonlocal_figures.
  (
    'SlowFast 16x8 R101+NL (2x2x2 pool)',
    f'{R101}:slowfast_16x8_nl',
    {'nonlocal_pool': (2, 2, 2)},
    234.0,
    None,
    0.03,
  ),
  # Paper 003 Table 5a: lateral connections.
  ('SlowFast, no lateral', f'{R50}:slowfast_4x16', {'lateral_junctions': ()}, 34.2, None, 0.03),
  (
    'SlowFast, TtoC sum',
    f'{R50}:slowfast_4x16',
    {'lateral': 'time_to_channel_sum'},
    34.2,
    None,
    0.03,
  ),
  (
    'SlowFast, TtoC concat',
    f'{R50}:slowfast_4x16',
    {'lateral': 'time_to_channel_concat'},
    39.8,
    None,
    0.03,
  ),
  (
    'SlowFast, T-sample',
    f'{R50}:slowfast_4x16',
    {'lateral': 'time_strided_sample'},
    34.9,
    None,
    0.03,
  ),
  # Paper 003 Table 5b: beta values for which 64 * beta is an integer.
  ('SlowFast beta=1/4', f'{R50}:slowfast_4x16', {'beta_inv': 4}, 54.5, None, 0.03),
  ('SlowFast beta=1/16', f'{R50}:slowfast_4x16', {'beta_inv': 16}, 30.6, None, 0.03),
  ('SlowFast beta=1/32', f'{R50}:slowfast_4x16', {'beta_inv': 32}, 28.6, None, 0.03),
]

AVSLOWFAST_ROWS = [
  ('AVSlowFast 4x16 R50', R50, {}, 39.8, None, 0.05),
  ('AVSlowFast 8x8 R101', R101, {}, 129.0, None, 0.05),
  ('beta_A=1/8', R50, {'audio_width_ratio': 0.125}, 36.0, None, 0.05),
  ('beta_A=1/4', R50, {'audio_width_ratio': 0.25}, 36.8, None, 0.05),
  ('beta_A=1/2', R50, {'audio_width_ratio': 0.5}, 39.8, None, 0.05),
  ('beta_A=1', R50, {'audio_width_ratio': 1.0}, 51.9, None, 0.05),
  ('fusion pool5', R50, {'lateral_junctions': (), 'audio_fusion_junctions': ()}, 38.4, None, 0.05),
  (
    'fusion res4+pool5',
    R50,
    {'lateral_junctions': ('res4',), 'audio_fusion_junctions': ('res4',)},
    39.1,
    None,
    0.05,
  ),
  (
    'fusion res3,4+pool5',
    R50,
    {'lateral_junctions': ('res3', 'res4'), 'audio_fusion_junctions': ('res3', 'res4')},
    39.8,
    None,
    0.05,
  ),
  (
    'fusion res2,3,4+pool5',
    R50,
    {
      'lateral_junctions': ('res2', 'res3', 'res4'),
      'audio_fusion_junctions': ('res2', 'res3', 'res4'),
    },
    40.2,
    None,
    0.05,
  ),
  ('AV Nonlocal', R50, {'audio_fusion': 'av_nonlocal'}, 39.9, None, 0.05),
]


def _stats(spec, overrides):
  config = load_config(spec)
  for key, value in overrides.items():
    config.model[key] = value
  return model_stats.compute(config)


@pytest.mark.slow
@pytest.mark.parametrize('row,spec,overrides,gflops,params,tol', SLOWFAST_ROWS + AVSLOWFAST_ROWS)
def test_matches_paper(row, spec, overrides, gflops, params, tol):
  result = _stats(spec, overrides)
  assert result['gflops'] == pytest.approx(gflops, rel=tol), row
  if params is not None:
    assert result['params'] / 1e6 == pytest.approx(params, rel=tol), row


@pytest.mark.slow
def test_fusion_junctions_cost_what_table6_says_they_cost():
  """Each added fusion junction costs what Table 6's differences say (0.7, 0.7, 0.4)."""
  totals = [
    _stats(R50, {'lateral_junctions': j, 'audio_fusion_junctions': j})['gflops']
    for j in [(), ('res4',), ('res3', 'res4'), ('res2', 'res3', 'res4')]
  ]
  steps = [b - a for a, b in zip(totals, totals[1:])]
  assert steps == pytest.approx([0.7, 0.7, 0.4], abs=0.06)


@pytest.mark.slow
def test_avslowfast_params_without_classifier_match_table8():
  """Paper 000 Table 8 (38.5M) counts a linear-probe model: no Kinetics classifier.

  The same table gives SlowFast 4x16 33.0M where our backbone has 33.56M (and our 34.48M
  with head matches PyTorchVideo's 34.5M exactly), i.e. the paper counts ~1.7% lower; after
  that offset the AVSlowFast backbone (without classifier and AVS projections) is within 5%.
  """
  av = _stats(R50, {})
  sf = _stats(f'{R50}:slowfast_4x16', {})
  sf_backbone = sf['params'] - sf['params_by_group']['head']
  av_backbone = av['params'] - av['params_by_group']['head'] - av['params_by_group']['avs']
  assert sf_backbone / 1e6 == pytest.approx(33.0, rel=0.02)
  assert av_backbone * (33.0e6 / sf_backbone) / 1e6 == pytest.approx(38.5, rel=0.05)


def test_fast_only_is_what_slowfast_without_laterals_implies():
  """Fast-only: the paper's 6.4 contradicts its own Table 5a (no-lateral SlowFast 34.2 =
  Slow-only 27.3 + Fast 6.9); we assert the Fast pathway at that 6.9 and its 0.53M (w/o head).
  """
  fast = _stats(f'{R50}:fast_only_4x16', {})
  assert fast['gflops'] == pytest.approx(34.2 - 27.3, rel=0.01)
  assert fast['params_by_group']['fast'] / 1e6 == pytest.approx(0.53, rel=0.03)


@pytest.mark.slow
def test_audio_only_full_width_and_a_f_s_figures_documented_gaps():
  """Audio-only (Table A.3: 14.2) and A->F->S (Table 5a: 51.4) cannot be matched.

  Our full-width Audio pathway is the one that reproduces the beta_A=1 AVSlowFast row
  (51.9) within 1%: alone it costs 16.1 GFLOPs. A->F->S as the paper describes it (audio
  summed into Fast) adds no more than A->FS does. Both are asserted at our derivation.
  """
  audio = _stats(f'{R50}:audio_only', {})
  av_full = _stats(R50, {'audio_width_ratio': 1.0})
  assert audio['gflops_by_group']['audio'] == pytest.approx(
    av_full['gflops_by_group']['audio'], rel=1e-9
  )
  assert audio['gflops'] == pytest.approx(16.08, abs=0.01)
  afs = _stats(R50, {'audio_fusion': 'a_f_s'})
  assert afs['gflops'] == pytest.approx(_stats(R50, {})['gflops'], abs=0.01)


@pytest.mark.slow
def test_r101_lateral_kernel_and_nonlocal_figures():
  """Every R101 preset uses the Fast->Slow kernel 5 (PySlowFast, PyTorchVideo, paper 003):
  SlowFast 8x8 / 16x8 R101 cost 106.5 / 213.0 GFLOPs (kernel 7 gave 106.9 / 213.8).
  The NL preset pools keys/values 1x2x2 as PySlowFast does: 1024 instead of 512 key
  positions at res4 of a 256 view cost +6.4 GFLOPs in the affinity products and +1.6 in the
  phi/g convolutions over its three blocks, 242.0 instead of the paper's 234."""
  assert load_config(f'{R101}:slowfast_8x8').model.fusion_kernel == 5
  assert _stats(f'{R101}:slowfast_8x8', {})['gflops'] == pytest.approx(106.51, abs=0.01)
  assert _stats(f'{R101}:slowfast_16x8', {})['gflops'] == pytest.approx(213.02, abs=0.01)
  nl = load_config(f'{R101}:slowfast_16x8_nl').model
  assert tuple(nl.nonlocal_pool) == (1, 2, 2) and nl.nonlocal_instantiation == 'dot_product'
  assert _stats(f'{R101}:slowfast_16x8_nl', {})['gflops'] == pytest.approx(242.02, abs=0.01)
