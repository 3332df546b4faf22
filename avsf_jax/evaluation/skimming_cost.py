"""Cost of video-level recognition in GFLOPs (= multiply-adds) per video, as Listen to Look counts.

Spec §7. A pair costs `pair_gmacs` (f_I + f_A + Ψ; 1.098 at paper scale, from `model_stats` of
the student). Skimming evaluates ⌈N/s⌉ pairs and adds its own terms: the keys once per video,
and per step the LSTM gates, the query MLPs, Ψ on the indexed features, the attention scores and
weighted sums and the modality FC. The selected recognition features come from the banks, so
they cost nothing more. Figures are averaged over the test videos, as in Fig. 7.
"""

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

# Methods that evaluate every pair, and those that evaluate NUM_PICKS pairs.
ALL_PAIRS = ('dense', 'scsampler', 'lstm')
FEW_PAIRS = ('uniform', 'random', 'front', 'center', 'end')


@dataclasses.dataclass(frozen=True)
class SkimmingSize:
  """The widths that set skimming's own cost (paper: 1024 / 512 / 512 / 1024 / 512, T = 10)."""

  hidden: int = 1024
  key_dim: int = 512
  bank_dim: int = 512
  fusion_hidden: int = 1024
  feature_dim: int = 512
  num_steps: int = 10
  num_modalities: int = 2


def fusion_macs(size: SkimmingSize) -> int:
  """Ψ: Linear(2·bank_dim → fusion_hidden) and Linear(fusion_hidden → feature_dim)."""
  return 2 * size.bank_dim * size.fusion_hidden + size.fusion_hidden * size.feature_dim


def key_macs(num_pairs: int, size: SkimmingSize) -> int:
  """The keys, once per video: one bank_dim → key_dim layer per modality and pair."""
  return size.num_modalities * num_pairs * size.bank_dim * size.key_dim


def step_macs(num_pairs: int, size: SkimmingSize) -> int:
  """One skimming step: LSTM gates, queries, Ψ, attention scores and sums, modality FC.

  With the paper's sizes: 4·1024·(512+1024) + 2·(1024·1024 + 1024·512) + 1.57M
  + 2·N·512 + 4·N·512 + 2·1024 (spec §7).
  """
  m = size.num_modalities
  gates = 4 * size.hidden * (size.feature_dim + size.hidden)
  queries = m * (size.hidden * size.hidden + size.hidden * size.key_dim)
  scores = m * num_pairs * size.key_dim
  sums = 2 * m * num_pairs * size.bank_dim  # each modality's weights over both banks
  modality = 2 * size.hidden if m == 2 else 0
  return gates + queries + fusion_macs(size) + scores + sums + modality


def skimming_gmacs(
  num_pairs: int, pair_gmacs: float, subsample: int = 1, size: SkimmingSize = SkimmingSize()
) -> float:
  """Ours: ⌈N/s⌉ pair evaluations plus the keys and T steps, in GMACs."""
  overhead = key_macs(num_pairs, size) + size.num_steps * step_macs(num_pairs, size)
  return math.ceil(num_pairs / subsample) * pair_gmacs + overhead / 1e9


def baseline_gmacs(
  method: str,
  num_pairs: int,
  pair_gmacs: float,
  *,
  num_picks: int = 10,
  subsample: int = 1,
  size: SkimmingSize = SkimmingSize(),
) -> float:
  """A §4 baseline's GMACs for one video of `num_pairs` pairs.

  DENSE, SCSAMPLER and LSTM evaluate every pair (LSTM adds its N steps over the fused
  features); UNIFORM, RANDOM, FRONT, CENTER and END evaluate `num_picks`; NON-RECURRENT
  evaluates ⌈N/s⌉ for the keys plus one attention per modality.
  """
  if method in FEW_PAIRS:
    return min(num_picks, num_pairs) * pair_gmacs
  if method in ('dense', 'scsampler'):
    return num_pairs * pair_gmacs
  if method == 'lstm':
    lstm = num_pairs * 4 * size.hidden * (size.feature_dim + size.hidden)
    return num_pairs * pair_gmacs + lstm / 1e9
  if method == 'non_recurrent':
    attention = size.num_modalities * num_pairs * size.key_dim
    return (
      math.ceil(num_pairs / subsample) * pair_gmacs + (key_macs(num_pairs, size) + attention) / 1e9
    )
  raise ValueError(
    f'method={method!r}; expected one of {ALL_PAIRS + FEW_PAIRS + ("non_recurrent",)}'
  )


def two_feature_gmacs(
  num_pairs: int, index_gmacs: float, recognition_gmacs: float, subsample: int, num_steps: int
) -> float:
  """'indexing | recognition' settings: ⌈N/s⌉·c_index + T·c_recog."""
  return math.ceil(num_pairs / subsample) * index_gmacs + num_steps * recognition_gmacs


def mean_over_videos(fn, lengths: Sequence[int]) -> float:
  """The average of `fn(N_v)` over the test videos' lengths N_v (Fig. 7's x axis)."""
  return float(np.mean([fn(int(n)) for n in lengths]))
