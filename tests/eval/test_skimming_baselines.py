"""Listen to Look §4/§7: the selection baselines, video metrics, early stopping, cost, plot."""

import jax
import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from avsf_jax.evaluation import skimming_baselines as sb
from avsf_jax.evaluation import skimming_cost as cost
from avsf_jax.evaluation import skimming_plots
from avsf_jax.models import skimming, stats
from tests.eval.test_plots import png_size


def test_position_selections_by_hand():
  np.testing.assert_array_equal(sb.uniform(80), [4, 12, 20, 28, 36, 44, 52, 60, 68, 76])
  np.testing.assert_array_equal(sb.uniform(25), [1, 3, 6, 8, 11, 13, 16, 18, 21, 23])
  np.testing.assert_array_equal(sb.uniform(7), np.arange(7))
  np.testing.assert_array_equal(sb.front(80), np.arange(10))
  np.testing.assert_array_equal(sb.center(80), np.arange(35, 45))
  np.testing.assert_array_equal(sb.center(12), np.arange(1, 11))
  np.testing.assert_array_equal(sb.end(80), np.arange(70, 80))
  np.testing.assert_array_equal(sb.dense(4), [0, 1, 2, 3])


def test_random_selection_is_distinct_and_seeded():
  a = sb.random(50, np.random.default_rng(3))
  b = sb.random(50, np.random.default_rng(3))
  np.testing.assert_array_equal(a, b)
  assert len(set(a.tolist())) == 10 and a.max() < 50
  assert len(sb.random(6, np.random.default_rng(0))) == 6


def test_scsampler_keeps_the_most_confident_pairs():
  logits = np.zeros((6, 3))
  logits[[1, 4], 0] = [5.0, 2.0]  # confident pairs 1 then 4
  logits[2, 2] = 3.0
  np.testing.assert_array_equal(sb.scsampler(logits, k=2), [1, 2])
  np.testing.assert_array_equal(sb.scsampler(logits, k=3), [1, 2, 4])


def test_evaluator_averages_softmax_of_the_selected_pairs():
  """Video 0: a confident correct pair among 9 mildly wrong ones; DENSE is misled, SCSampler is not."""
  wrong = np.tile([0.0, 1.0], (9, 1))
  video0 = np.vstack([[[8.0, 0.0]], wrong])
  video1 = np.tile([0.0, 1.0], (10, 1))
  results = sb.evaluate_selections(
    [video0, video1],
    [0, 1],
    {'dense': lambda p: sb.dense(len(p)), 'sc1': lambda p: sb.scsampler(p, 1)},
    num_classes=2,
  )
  assert results['dense']['top1'] == 50.0 and results['sc1']['top1'] == 100.0
  assert results['dense']['pairs'] == 10.0 and results['sc1']['pairs'] == 1.0
  expect = (sb.softmax([8.0, 0.0]) + 9 * sb.softmax([0.0, 1.0])) / 10
  np.testing.assert_allclose(sb.video_scores(video0, np.arange(10)), expect)
  with pytest.raises(ValueError, match='10 pairs'):
    sb.video_scores(video0, [10])


def test_video_map_is_sklearn_macro_average_precision():
  rng = np.random.default_rng(0)
  scores = sb.softmax(rng.standard_normal((40, 5)))
  labels = np.arange(40) % 5
  ours = sb.video_metrics(scores, labels, 5)
  ref = sk_metrics.average_precision_score(np.eye(5)[labels], scores, average='macro')
  np.testing.assert_allclose(ours['mAP'], 100 * ref, rtol=1e-9)
  np.testing.assert_allclose(ours['top1'], 100 * np.mean(scores.argmax(1) == labels))


def test_segment_hit_rate():
  assert sb.segment_hit_rate([np.array([1, 5, 6, 9])], [(5, 9)]) == 0.5


def test_early_stop_by_confidence_and_budget():
  running = np.array(
    [
      [[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]],  # confident (0.95) at t' = 2
      [[0.0, 0.5], [0.0, 1.0], [0.0, 2.0]],  # never reaches 0.9
    ]
  )
  logits, steps = sb.early_stop(running, threshold=0.9)
  np.testing.assert_array_equal(steps, [2, 3])
  np.testing.assert_array_equal(logits, [[3.0, 0.0], [0.0, 2.0]])
  logits, steps = sb.early_stop(running, max_steps=1)
  np.testing.assert_array_equal(steps, [1, 1])
  per_step = sb.step_metrics(running, [0, 1], 2)
  assert [m['top1'] for m in per_step] == [100.0, 100.0, 50.0]  # a tie goes to class 0


def test_learned_stop_stops_confident_videos_early():
  rng = np.random.default_rng(0)
  final = rng.integers(0, 4, 200)
  running = rng.standard_normal((200, 6, 4)) * 0.3
  settle = rng.integers(1, 6, 200)  # the step from which the final class dominates
  for v in range(200):
    running[v, settle[v] :, final[v]] += 3.0 + np.arange(6 - settle[v])
  stop = sb.LearnedStop(threshold=0.9).fit(running)
  _, steps = stop(running)
  assert steps.mean() < 5.0
  agree = np.mean(running[np.arange(200), steps - 1].argmax(-1) == final)
  assert agree >= 0.95


def test_step_cost_at_paper_size_by_hand():
  """Spec §7 with N = 205: 6,291,456 + 3,145,728 + 1,572,864 + 209,920 + 419,840 + 2,048."""
  assert cost.step_macs(205, cost.SkimmingSize()) == 11_641_856
  assert cost.key_macs(205, cost.SkimmingSize()) == 2 * 205 * 512 * 512


def test_sparse_indexing_cost_matches_table_2b():
  """Table 2b: image-audio indexing adds 1.31 - 1.26 = 0.05 TFLOPs at s = 5 (N ≈ 225)."""
  ours = cost.skimming_gmacs(225, 1.098, subsample=5)
  assert 45 * 1.098 < ours < 45 * 1.098 + 0.3
  assert abs(ours - 50.0) / 50.0 < 0.05
  dense = cost.baseline_gmacs('dense', 205, 1.098)
  np.testing.assert_allclose(dense, 225.09)
  assert cost.baseline_gmacs('uniform', 205, 1.098) == pytest.approx(10.98)
  assert cost.skimming_gmacs(205, 1.098, subsample=5) / dense < 0.25
  assert cost.mean_over_videos(lambda n: cost.baseline_gmacs('dense', n, 1.0), [10, 30]) == 20.0
  with pytest.raises(ValueError, match='method'):
    cost.baseline_gmacs('adaframe', 10, 1.0)


def test_step_cost_agrees_with_the_modules_counted_multiply_adds():
  """count_macs of the eval-mode module = keys + T steps, less the soft sums (hard at test),
  plus what the formula leaves out: the mean start, p_t, and FC_cls on every m_t."""
  n, c = 30, 7
  size = cost.SkimmingSize(
    hidden=32, key_dim=16, bank_dim=24, fusion_hidden=20, feature_dim=12, num_steps=3
  )
  model = skimming.Skimming(
    num_classes=c, num_steps=3, hidden=32, key_dim=16, fusion_hidden=20, feature_dim=12
  )
  inputs = {
    'image': jax.ShapeDtypeStruct((1, n, 24), np.float32),
    'audio': jax.ShapeDtypeStruct((1, n, 24), np.float32),
    'mask': jax.ShapeDtypeStruct((1, n), np.float32),
    'start_index': jax.ShapeDtypeStruct((1,), np.int32),
  }
  counted = stats.count_macs(model, stats.abstract_variables(model, inputs), inputs)['total']
  formula = cost.key_macs(n, size) + 3 * cost.step_macs(n, size)
  soft_sums = 3 * 4 * n * 24
  extra = 2 * n * 24 + 3 * 32 * c + 3 * 12 * c
  assert counted == formula - soft_sums + extra


def test_accuracy_vs_gflops_plot(tmp_path):
  path = skimming_plots.plot_accuracy_vs_gflops(
    {
      'dense': (80.0, 60.0),
      'uniform': (10.0, 50.0),
      'ours s=1': (81.0, 75.0),
      'ours s=5': (17.0, 73.0),
    },
    str(tmp_path / 'fig7.png'),
    ours=('ours s=5', 'ours s=1'),
  )
  assert png_size(path) == (640, 480)
  with pytest.raises(ValueError, match='GFLOPs > 0'):
    skimming_plots.plot_accuracy_vs_gflops({'x': (0.0, 1.0)}, str(tmp_path / 'x.png'))


def test_paper_size_skimming_overhead_is_0_22_gmacs_per_video():
  """At paper scale (N = 205, C = 200) skimming itself costs 0.22 GMACs: ~0.1 % of DENSE's
  225 GMACs, so Ours (sparse) is ⌈N/5⌉ pairs plus a negligible overhead (abstract tracing)."""
  n, c = 205, 200
  model = skimming.Skimming(num_classes=c)
  inputs = {
    'image': jax.ShapeDtypeStruct((1, n, 512), np.float32),
    'audio': jax.ShapeDtypeStruct((1, n, 512), np.float32),
    'mask': jax.ShapeDtypeStruct((1, n), np.float32),
    'start_index': jax.ShapeDtypeStruct((1,), np.int32),
  }
  variables = stats.abstract_variables(model, inputs)
  counted = stats.count_macs(model, variables, inputs)['total']
  size = cost.SkimmingSize()
  formula = cost.key_macs(n, size) + 10 * cost.step_macs(n, size)
  assert formula == 223_897_600
  assert counted == formula - 10 * 4 * n * 512 + 2 * n * 512 + 10 * (1024 + 512) * c
  assert counted == 222_981_120
  assert stats.count_params(variables)['total'] == 11_872_146
