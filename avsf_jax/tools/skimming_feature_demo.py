"""IMGAUD-SKIMMING end to end on synthetic feature banks (no video decoding), on CPU.

    python -m avsf_jax.tools.skimming_feature_demo --out /tmp/skim [--steps 300]

Stages: (1) `feature_banks.synthetic_banks` makes train/val banks shaped like the
`synthetic_untrimmed` demo (a short loud segment that shows the class, silent decoys); (2) a
stand-in for the fine-tuned student, Ψ + FC_cls, is trained on the segment pairs (as the
student learns from trimmed clips); (3) skimming trains with the §3.3 recipe (Ψ frozen, the
classifier at 0.1x, Nesterov SGD, multi-step decay); (4) the val videos are scored by Ours
(every `test_index`), the §4 selections on the same Ψ + FC_cls, and every early stop t'.
Writes `results.json` and, with `--plot`, `accuracy_vs_gflops.png`.
"""

import argparse
import dataclasses
import functools
import json
import os
import time

import jax
import numpy as np
import optax

from avsf_jax import console
from avsf_jax.evaluation import skimming_baselines as sb
from avsf_jax.evaluation import skimming_cost, skimming_plots
from avsf_jax.input import feature_banks
from avsf_jax.models import skimming
from avsf_jax.tasks import skimming as task


@dataclasses.dataclass(frozen=True)
class DemoConfig:
  """Sizes and recipe of the feature-bank demo (all small enough for a CPU test)."""

  seed: int = 0
  train_per_class: int = 24
  val_per_class: int = 10
  num_pairs: int = 40
  num_steps: int = 5
  hidden: int = 64
  key_dim: int = 32
  fusion_hidden: int = 32
  feature_dim: int = 16
  batch_size: int = 32
  student_steps: int = 200
  student_lr: float = 1e-2
  steps: int = 300
  base_lr: float = 0.1
  pair_gmacs: float = 1.098  # the paper's pair cost, for the GFLOPs figures


def _batch(data: dict, idx: np.ndarray, cfg: DemoConfig) -> dict:
  videos = [(data['image'][i], data['audio'][i]) for i in idx]
  return task.make_batch(
    videos, data['labels'][idx], num_steps=cfg.num_steps, buckets=(cfg.num_pairs,)
  )


def _student(params: dict, data: dict, cfg: DemoConfig) -> dict:
  """Trains Ψ + FC_cls on the train videos' segment pairs (the fine-tuned student's stand-in)."""
  fusion = skimming.Fusion(cfg.fusion_hidden, cfg.feature_dim)
  segs = list(enumerate(data['segments']))
  image = np.concatenate([data['image'][v][a:b] for v, (a, b) in segs])
  audio = np.concatenate([data['audio'][v][a:b] for v, (a, b) in segs])
  labels = np.repeat(data['labels'], [b - a for _, (a, b) in segs])

  def loss(p):
    logits = fusion.apply({'params': p['fusion']}, image, audio) @ p['classifier']['kernel']
    return optax.softmax_cross_entropy_with_integer_labels(
      logits + p['classifier']['bias'], labels
    ).mean()

  adam = optax.adam(cfg.student_lr)

  @jax.jit
  def train(p):
    def body(carry, _):
      p, s = carry
      g = jax.grad(loss)(p)
      u, s = adam.update(g, s, p)
      return (optax.apply_updates(p, u), s), None

    (p, _), _ = jax.lax.scan(body, (p, adam.init(p)), None, length=cfg.student_steps)
    return p

  return train({k: params[k] for k in ('fusion', 'classifier')})


def _train(model, params, batch_stats, data, cfg: DemoConfig, rng, key):
  """The §3.3 recipe (scaled): Nesterov SGD, Ψ frozen, classifier x0.1, x0.1 at 60 and 80 %."""
  steps_per_epoch = max(len(data['labels']) // cfg.batch_size, 1)
  epochs = cfg.steps / steps_per_epoch
  optimizer = task.make_optimizer(
    base_lr=cfg.base_lr, steps_per_epoch=steps_per_epoch, decay_epochs=(0.6 * epochs, 0.8 * epochs)
  )
  opt_state = optimizer.init(params)
  step = jax.jit(task.make_train_step(model, optimizer))
  fields = ('image', 'audio', 'mask', 'label')
  metrics = {}
  for s in range(cfg.steps):
    idx = rng.choice(len(data['labels']), cfg.batch_size, replace=False)
    batch = {k: v for k, v in _batch(data, idx, cfg).items() if k in fields}
    params, batch_stats, opt_state, metrics = step(
      params, batch_stats, opt_state, batch, jax.random.fold_in(key, s)
    )
  return params, batch_stats, metrics


def pair_logits(params: dict, data: dict, cfg: DemoConfig) -> list[np.ndarray]:
  """FC_cls(Ψ(z^I_j, z^A_j)) of every pair: the image-audio classifier the baselines use."""
  fusion = skimming.Fusion(cfg.fusion_hidden, cfg.feature_dim)
  cls = params['classifier']
  return [
    np.asarray(fusion.apply({'params': params['fusion']}, i, a) @ cls['kernel'] + cls['bias'])
    for i, a in zip(data['image'], data['audio'])
  ]


def run(cfg: DemoConfig = DemoConfig()) -> dict:
  """Every stage; returns the results (top-1 and mAP in %, GFLOPs per video, hit rates)."""
  start_time = time.time()
  train = feature_banks.synthetic_banks(cfg.train_per_class, cfg.seed, num_pairs=cfg.num_pairs)
  val = feature_banks.synthetic_banks(cfg.val_per_class, cfg.seed + 1, num_pairs=cfg.num_pairs)
  model = skimming.Skimming(
    num_classes=8,
    num_steps=cfg.num_steps,
    hidden=cfg.hidden,
    key_dim=cfg.key_dim,
    fusion_hidden=cfg.fusion_hidden,
    feature_dim=cfg.feature_dim,
  )
  rng = np.random.default_rng(cfg.seed)
  first = _batch(train, np.arange(cfg.batch_size), cfg)
  inputs = {k: first[k] for k in ('image', 'audio', 'mask')}
  keys = {'params': jax.random.key(cfg.seed), 'start': jax.random.key(cfg.seed + 1)}
  variables = jax.jit(functools.partial(model.init, train=False))(keys, inputs)
  params = {**variables['params'], **_student(variables['params'], train, cfg)}
  batch_stats = variables['batch_stats']

  params, batch_stats, metrics = _train(model, params, batch_stats, train, cfg, rng, keys['start'])
  vb = _batch(val, np.arange(len(val['labels'])), cfg)
  vin = {k: vb[k] for k in ('image', 'audio', 'mask')}
  vin['start_index'] = np.asarray(rng.integers(0, vb['length']), np.int32)
  variables = {'params': params, 'batch_stats': batch_stats}
  lengths = [len(x) for x in val['image']]
  results = {'train_summary_top1': 100 * float(metrics['summary_top1'])}
  ours_cost = skimming_cost.mean_over_videos(
    lambda n: skimming_cost.skimming_gmacs(n, cfg.pair_gmacs, 1, _size(cfg)), lengths
  )
  for test_index in skimming.TEST_INDEX:
    probe = model.clone(test_index=test_index)
    logits, aux = jax.jit(lambda v, x, m=probe: m.apply(v, x, train=False))(variables, vin)
    per_step = sb.step_metrics(aux['running_logits'], val['labels'], 8)
    results[f'ours_{test_index}'] = {
      **sb.video_metrics(sb.softmax(logits), val['labels'], 8),
      'hit_rate': sb.segment_hit_rate(list(np.asarray(aux['image_indices'])), val['segments']),
      'gflops': ours_cost,
      'early_stop_top1': [m['top1'] for m in per_step],
    }
  # Sparse indexing (§3.4): banks rebuilt from every 5th pair, the official test index choice
  # replaced by 'mixed' (see docs/listen_to_look.md).
  image, audio = skimming.sparse_banks(vin['image'], vin['audio'], vin['mask'], 5)
  probe = model.clone(test_index='mixed')
  logits, aux = jax.jit(lambda v, x: probe.apply(v, x, train=False))(
    variables, {**vin, 'image': image, 'audio': audio}
  )
  results['ours_mixed_s5'] = {
    **sb.video_metrics(sb.softmax(logits), val['labels'], 8),
    'hit_rate': sb.segment_hit_rate(list(np.asarray(aux['image_indices'])), val['segments']),
    'gflops': skimming_cost.mean_over_videos(
      lambda n: skimming_cost.skimming_gmacs(n, cfg.pair_gmacs, 5, _size(cfg)), lengths
    ),
  }
  selections = sb.position_selections(cfg.seed, k=cfg.num_steps)
  scored = sb.evaluate_selections(pair_logits(params, val, cfg), val['labels'], selections, 8)
  for name, r in scored.items():
    results[name] = {
      'top1': r['top1'],
      'mAP': r['mAP'],
      'hit_rate': sb.segment_hit_rate(r['indices'], val['segments']),
      'gflops': skimming_cost.mean_over_videos(
        lambda n, m=name: skimming_cost.baseline_gmacs(
          m, n, cfg.pair_gmacs, num_picks=cfg.num_steps
        ),
        lengths,
      ),
    }
  for name, baseline in (
    (
      'non_recurrent',
      skimming.NonRecurrentSkimming(
        8, cfg.num_steps, cfg.key_dim, cfg.fusion_hidden, cfg.feature_dim
      ),
    ),
    ('lstm', skimming.SequenceLSTM(8, cfg.hidden, cfg.fusion_hidden, cfg.feature_dim)),
  ):
    init = jax.jit(functools.partial(baseline.init, train=False))(keys['params'], inputs)
    # The same fine-tuned Ψ (and FC_cls where the baseline classifies Ψ features).
    student = {k: params[k] for k in ('fusion', 'classifier') if k in init['params']}
    b_params = {**init['params'], **student}
    b_params, b_stats, _ = _train(
      baseline, b_params, init.get('batch_stats', {}), train, cfg, rng, keys['start']
    )
    logits, aux = jax.jit(lambda v, x, m=baseline: m.apply(v, x, train=False))(
      {'params': b_params, 'batch_stats': b_stats}, vin
    )
    results[name] = {
      **sb.video_metrics(sb.softmax(logits), val['labels'], 8),
      'gflops': skimming_cost.mean_over_videos(
        lambda n, m=name: skimming_cost.baseline_gmacs(m, n, cfg.pair_gmacs, size=_size(cfg)),
        lengths,
      ),
    }
    if 'indices' in aux:
      results[name]['hit_rate'] = sb.segment_hit_rate(
        list(np.asarray(aux['indices'])), val['segments']
      )
  results['seconds'] = time.time() - start_time
  return results


def _size(cfg: DemoConfig) -> skimming_cost.SkimmingSize:
  return skimming_cost.SkimmingSize(
    hidden=cfg.hidden,
    key_dim=cfg.key_dim,
    bank_dim=8,
    fusion_hidden=cfg.fusion_hidden,
    feature_dim=cfg.feature_dim,
    num_steps=cfg.num_steps,
  )


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', required=True, help='folder for results.json (and the plot)')
  parser.add_argument('--steps', type=int, default=DemoConfig.steps)
  parser.add_argument('--seed', type=int, default=DemoConfig.seed)
  parser.add_argument('--plot', action='store_true')
  console.add_verbose_argument(parser)
  args = parser.parse_args(argv)
  results = run(DemoConfig(seed=args.seed, steps=args.steps))
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'results.json'), 'w') as f:
    json.dump(results, f, indent=1, sort_keys=True)
  if args.plot:
    points = {
      name: (r['gflops'], r['mAP'])
      for name, r in results.items()
      if isinstance(r, dict) and name != 'ours_per_modality'
    }
    skimming_plots.plot_accuracy_vs_gflops(
      points, os.path.join(args.out, 'accuracy_vs_gflops.png'), ours=('ours_mixed_s5', 'ours_mixed')
    )
  print(json.dumps({k: v for k, v in results.items()}, indent=1, sort_keys=True))


if __name__ == '__main__':
  console.guard('skimming_feature_demo', main)()
