"""The demo's spec §8.3 checks (`tools.ltl_demo.acceptance`) on hand-made results: every
threshold passes at its boundary and fails one step past it."""

import copy

import pytest

from avsf_jax.tools import ltl_demo


def _row(top1, mean_ap, gflops, hit_rate=None):
  row = {'top1': top1, 'mAP': mean_ap, 'gflops': gflops}
  if hit_rate is not None:
    row['hit_rate'] = hit_rate
  return row


# Every figure sits on its threshold (exact in binary floating point).
BOUNDARY = {
  'banks': {'segment_fraction': 0.075},
  'clips': {
    'teacher_top1': 97.0,
    'distillation_top1': 90.0,  # >= 90 and >= 97 - 7
    'distillation_image_top1': 60.0,
    'distillation_audio_top1': 40.0,
    'student_gmacs_per_pair': 0.01,
    'teacher_gmacs_per_clip': 0.06,
    'teacher_over_student': 6.0,
  },
  'skimming': {
    # t' = 3 at 83 = 88 - 5 (A5)
    'ours': {**_row(90.0, 95.0, 0.8, 0.5), 'early_stop_top1': [50.0, 70.0, 83.0] + [88.0] * 7},
    'ours_s5': _row(87.0, 92.0, 0.2, 0.5),  # s=1 - 3; 25 % of DENSE's and SCSAMPLER's 0.8
    'dense': _row(85.0, 90.0, 0.8, 0.075),  # Ours = DENSE + 5 (top-1 and mAP)
    'scsampler': _row(89.0, 90.0, 0.8, 0.3),  # Ours s=5 = SCSAMPLER - 2
    'uniform': _row(75.0, 50.0, 0.1, 0.07),  # Ours = UNIFORM + 15
    'random': _row(35.0, 45.0, 0.1, 0.09),
    'front': _row(75.0, 30.0, 0.1, 0.05),
    'end': _row(75.0, 30.0, 0.1, 0.05),
    'center': _row(20.0, 30.0, 0.1, 0.05),
    'non_recurrent': _row(90.0, 95.0, 0.8, 0.6),
    'lstm': _row(30.0, 40.0, 0.8),
  },
}
A1_TEACHER = ('A1', 'teacher clip top-1 >= 95')
A1_STUDENT = ('A1', 'image+audio student >= 90 and >= teacher - 7')
A2_TOP1 = ('A2', 'Ours top-1 >= UNIFORM + 15 and >= DENSE + 5')
A4_ACCURACY = ('A4', 'Ours s=5 within 3 points of s=1 (top-1 and mAP)')
A4_COST = ('A4', "Ours s=5 <= 25 % of DENSE's GFLOPs")
A6_SCSAMPLER = ('A6', 'Ours s=5 >= SCSAMPLER - 2 at <= 25 % of its GFLOPs')


def _failing(results):
  return [(r['check'], r['what']) for r in ltl_demo.acceptance(results) if not r['pass']]


def test_every_check_passes_on_its_boundary():
  rows = ltl_demo.acceptance(BOUNDARY)
  names = [r['check'] for r in rows]
  assert names == ['A1'] * 5 + ['A2'] * 2 + ['A3'] * 2 + ['A4'] * 2 + ['A5'] + ['A6'] * 3
  assert _failing(BOUNDARY) == []


@pytest.mark.parametrize(
  'path, value, expected',
  [
    (('clips', 'teacher_top1'), 94.9, [A1_TEACHER]),
    (('clips', 'teacher_top1'), 97.1, [A1_STUDENT]),  # the student 7.1 points under
    (('clips', 'distillation_top1'), 89.9, [A1_STUDENT]),
    (('clips', 'distillation_image_top1'), 60.1, [('A1', 'image-only student <= 60')]),
    (('clips', 'distillation_audio_top1'), 40.1, [('A1', 'audio-only student <= 40')]),
    (
      ('clips', 'student_gmacs_per_pair'),
      0.0121,
      [('A1', 'student pair cost <= teacher clip cost / 5')],
    ),
    (('skimming', 'dense', 'top1'), 85.1, [A2_TOP1]),
    (('skimming', 'uniform', 'top1'), 75.1, [A2_TOP1]),
    (('skimming', 'ours', 'mAP'), 94.9, [('A2', 'Ours mAP >= DENSE mAP + 5')]),
    (('skimming', 'ours', 'hit_rate'), 0.49, [('A3', '>= 50 % of Ours picks inside the segment')]),
    (
      ('skimming', 'random', 'hit_rate'),
      0.106,
      [('A3', 'UNIFORM and RANDOM hit rates ~ segment fraction (3 points)')],
    ),
    (('skimming', 'ours_s5', 'top1'), 86.9, [A4_ACCURACY, A6_SCSAMPLER]),
    (('skimming', 'ours_s5', 'mAP'), 91.9, [A4_ACCURACY]),
    (('skimming', 'ours_s5', 'gflops'), 0.201, [A4_COST, A6_SCSAMPLER]),
    (
      ('skimming', 'ours', 'early_stop_top1'),
      [50.0, 70.0, 82.9] + [88.0] * 7,
      [('A5', "early stop t'=3 within 5 points of t'=10")],
    ),
    (('skimming', 'non_recurrent', 'top1'), 90.1, [('A6', 'NON-RECURRENT <= Ours (s=1)')]),
    (('skimming', 'end', 'top1'), 75.1, [('A6', 'FRONT and END <= UNIFORM')]),
    (('skimming', 'front', 'top1'), 75.1, [('A6', 'FRONT and END <= UNIFORM')]),
  ],
)
def test_each_check_fails_one_step_past_its_threshold(path, value, expected):
  results = copy.deepcopy(BOUNDARY)
  node = results
  for key in path[:-1]:
    node = node[key]
  node[path[-1]] = value
  assert _failing(results) == expected
