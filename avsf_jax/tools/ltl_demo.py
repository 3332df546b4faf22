r"""Listen to Look end to end on `synthetic_untrimmed`, on CPU (spec §8.2; `make demo-ltl`).

  python -m avsf_jax.tools.ltl_demo --out=demo_run/ltl [--scale=1.0]

Stages, each a job of the shared loop (`train.train_and_evaluate`) with a variant of
`configs/listen_to_look.py`, each skipped when its output exists (the command resumes):

  1. teacher       clip_finetune of a tiny R(2+1)D on the trimmed clips -> teacher export
  2. distillation  IMGAUD2VID image+audio, image-only, audio-only (L1 + 100 KL, frozen teacher)
                   -> student exports (`write_student_export`)
  3. finetune      the image-audio student fine-tuned on the clips (init_from its export)
  4. banks         `tools.extract_preview_features` on the untrimmed videos
  5. skimming      Ours, NON-RECURRENT and LSTM on the banks (Psi + FC_cls from step 3);
                   Ours also at s = 5 and every early stop; the §4 selections
                   (`evaluation.skimming_baselines`) on the same student
Writes OUT/ltl_results.json (clip accuracies, costs, video top-1/mAP, hit rates, GFLOPs) and
OUT/accuracy_vs_gflops.png, and prints a table. `--scale` multiplies every epoch count (a
quick smoke run: 0.1).
"""

import argparse
import importlib.util
import json
import os
import time

import jax
import numpy as np

from avsf_jax import console, export, train
from avsf_jax import experiment as experiment_lib
from avsf_jax.evaluation import skimming_baselines as sb
from avsf_jax.evaluation import skimming_cost, skimming_plots
from avsf_jax.input import feature_banks
from avsf_jax.models import ltl_models, skimming, stats
from avsf_jax.tasks import clip_finetune, distillation
from avsf_jax.tools import extract_preview_features

CONFIG = os.path.join(os.path.dirname(__file__), '..', '..', 'configs', 'listen_to_look.py')


def _config(variant: str, scale: float, **overrides):
  spec = importlib.util.spec_from_file_location('listen_to_look', CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant)
  config.optim.num_epochs = max(config.optim.num_epochs * scale, 1.0)
  if config.optim.get('decay_epochs'):
    config.optim.decay_epochs = tuple(e * scale for e in config.optim.decay_epochs)
  for key, value in overrides.items():
    section, _, field = key.rpartition('.')
    (config if not section else config[section])[field] = value
  return config


def _train(config, workdir: str) -> tuple[dict, experiment_lib.Experiment, dict]:
  """Trains (or reuses) a job; returns (eval results, experiment, eval variables)."""
  results_path = os.path.join(workdir, 'eval_results.json')
  if not os.path.exists(results_path):
    train.train_and_evaluate(config, workdir)
  with open(results_path) as f:
    results = json.load(f)
  ex = experiment_lib.Experiment(config)
  variables, _ = ex.restore(workdir)
  return results, ex, variables


def write_student_export(output_dir, experiment, variables, *, overwrite: bool = False):
  """Exports the distilled student alone (inputs image/audio, logits out; no teacher)."""
  config = experiment.config
  student = experiment.model.student
  spec = clip_finetune.clip_inputs(config)

  def apply(v, inputs):
    return student.apply(v, inputs, train=False)[0]

  return export.write(
    output_dir,
    apply_fn=apply,
    variables=distillation.student_variables(variables),
    model_config=config.model.to_dict(),
    class_names=list(experiment.info.class_names),
    input_spec={k: list(s) for k, s in spec.items()},
    preprocessing=distillation.preprocessing(config),
    extra_metadata={'task': 'clip_finetune', 'distilled_from': config.distill.teacher_export},
    overwrite=overwrite,
  )


def _export(path: str, ex, variables) -> None:
  """An export of a clip_finetune job (params at the root; the log-mel statistics with it)."""
  if os.path.exists(path):
    return
  spec = ex.task.input_spec(train=False)
  export.write(
    path,
    apply_fn=ex.task.export_function(ex.model),
    variables={'params': variables['params'], 'batch_stats': variables['batch_stats']},
    model_config=ex.config.model.to_dict(),
    class_names=list(ex.info.class_names),
    input_spec={k: list(v.shape) for k, v in spec.items()},
    preprocessing=distillation.preprocessing(ex.config),
    extra_metadata={'task': ex.task.name},
  )


def clip_stage(out: str, scale: float) -> dict:
  res = {}
  config = _config('demo_teacher', scale)
  r, ex, v = _train(config, f'{out}/teacher')
  teacher_export = f'{out}/teacher_export'
  _export(teacher_export, ex, v)
  res['teacher_top1'] = r['top1']
  video = {'video': np.zeros((1, 16, 48, 48, 3), np.float32)}
  res['teacher_gmacs_per_clip'] = stats.model_stats(ex.model, video)['gflops']
  for job in ('distillation', 'distillation_image', 'distillation_audio'):
    config = _config(f'demo_{job}', scale, **{'distill.teacher_export': teacher_export})
    r, ex, v = _train(config, f'{out}/{job}')
    path = f'{out}/{job}_student'
    if not os.path.exists(path):
      write_student_export(path, ex, v)
    res[f'{job}_top1'] = r['top1']
    res[f'{job}_teacher_agreement'] = r['teacher_agreement']
    res[f'{job}_l1'] = r['l1']
  student = ltl_models.build(config.model.to_dict() | {'modalities': ('image', 'audio')})
  pair = {
    'image': np.zeros((1, 48, 48, 3), np.float32),
    'audio': np.zeros((1, 101, 40, 1), np.float32),
  }
  res['student_gmacs_per_pair'] = stats.model_stats(student, pair)['gflops']
  res['teacher_over_student'] = res['teacher_gmacs_per_clip'] / res['student_gmacs_per_pair']
  config = _config('demo_finetune', scale, init_from=f'{out}/distillation_student')
  r, ex, v = _train(config, f'{out}/finetune')
  _export(f'{out}/finetune_export', ex, v)
  res['finetune_top1'] = r['top1']
  return res


def skim_stage(out: str, scale: float, c_pair: float) -> dict:
  banks = f'{out}/banks'
  for split in ('train', 'val'):
    if not os.path.exists(f'{banks}/{split}.npz'):
      extract_preview_features.main(
        [f'--student_export={out}/finetune_export', f'--out={banks}', f'--splits={split}']
      )
  res = {}
  common = {'skim.banks_dir': banks, 'skim.student_export': f'{out}/finetune_export'}
  val = feature_banks.load_banks(f'{banks}/val.npz')
  labels, segments = val['labels'], val['segments']
  lengths = [len(x) for x in val['image']]
  for kind in ('skimming', 'non_recurrent', 'lstm'):
    config = _config(f'demo_{kind}', scale, **common)
    r, ex, v = _train(config, f'{out}/{kind}')
    name = 'ours' if kind == 'skimming' else kind
    res[name] = {'top1': r['avgpool_top1'], 'mAP': r['avgpool_mAP']}
    if 'hit_rate' in r:
      res[name]['hit_rate'] = r['hit_rate']
    if kind == 'skimming':
      res[name]['early_stop_top1'] = [r[f'early_stop_{t}_top1'] for t in range(1, 11)]
      res['ours_s5'] = _sparse(ex, v, 5, labels, segments)
  size = skimming_cost.SkimmingSize(
    hidden=256, key_dim=128, bank_dim=128, fusion_hidden=128, feature_dim=64, num_steps=10
  )
  res['ours']['gflops'] = skimming_cost.mean_over_videos(
    lambda n: skimming_cost.skimming_gmacs(n, c_pair, 1, size), lengths
  )
  res['ours_s5']['gflops'] = skimming_cost.mean_over_videos(
    lambda n: skimming_cost.skimming_gmacs(n, c_pair, 5, size), lengths
  )
  for name in ('non_recurrent', 'lstm'):
    res[name]['gflops'] = skimming_cost.mean_over_videos(
      lambda n, m=name: skimming_cost.baseline_gmacs(m, n, c_pair, size=size), lengths
    )
  # The §4 selections with the fine-tuned student's Psi + FC_cls on each pair.
  params = export.load(f'{out}/finetune_export').variables['params']
  fusion = skimming.Fusion(128, 64)
  pair_logits = [
    np.asarray(
      fusion.apply({'params': params['fusion']}, i, a) @ params['classifier']['kernel']
      + params['classifier']['bias']
    )
    for i, a in zip(val['image'], val['audio'])
  ]
  scored = sb.evaluate_selections(pair_logits, labels, sb.position_selections(0, k=10), 8)
  for name, r in scored.items():
    res[name] = {
      'top1': r['top1'],
      'mAP': r['mAP'],
      'hit_rate': sb.segment_hit_rate(r['indices'], segments),
      'gflops': skimming_cost.mean_over_videos(
        lambda n, m=name: skimming_cost.baseline_gmacs(m, n, c_pair, num_picks=10), lengths
      ),
    }
  return res


def _sparse(ex, variables, factor, labels, segments) -> dict:
  """Ours with banks rebuilt from every `factor`-th pair (spec §3.4)."""
  outs, idx = [], []
  for batch in ex.eval_batches(multi_view=False):
    keep = np.asarray(batch['_mask']) > 0
    image, audio = skimming.sparse_banks(batch['image'], batch['audio'], batch['mask'], factor)
    o = jax.device_get(ex.predict(variables, {**batch, 'image': image, 'audio': audio}))
    outs.append(np.asarray(o['logits'])[keep])
    idx.append(np.asarray(o['indices'])[keep])
  logits, indices = np.concatenate(outs), np.concatenate(idx)
  return {
    **sb.video_metrics(sb.softmax(logits), labels, 8),
    'hit_rate': sb.segment_hit_rate(list(indices), segments),
  }


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', required=True)
  parser.add_argument('--scale', type=float, default=1.0)
  console.add_verbose_argument(parser)
  args = parser.parse_args(argv)
  start = time.time()
  os.makedirs(args.out, exist_ok=True)
  results = {'clips': clip_stage(args.out, args.scale)}
  c_pair = results['clips']['student_gmacs_per_pair']
  results['skimming'] = skim_stage(args.out, args.scale, c_pair)
  with open(os.path.join(args.out, 'ltl_results.json'), 'w') as f:
    json.dump(results, f, indent=1, sort_keys=True)
  points = {k: (v['gflops'], v['mAP']) for k, v in results['skimming'].items()}
  skimming_plots.plot_accuracy_vs_gflops(
    points, os.path.join(args.out, 'accuracy_vs_gflops.png'), ours=('ours_s5', 'ours')
  )
  print(json.dumps(results['clips'], indent=1, sort_keys=True))
  print(f'{"method":16s} {"top-1":>6s} {"mAP":>6s} {"hits":>6s} {"GFLOPs":>8s}')
  for name, r in results['skimming'].items():
    print(
      f'{name:16s} {r["top1"]:6.1f} {r["mAP"]:6.1f} {r.get("hit_rate", float("nan")):6.2f} '
      f'{r["gflops"]:8.3f}'
    )
  print(f'{time.time() - start:.0f} s')
  return results


if __name__ == '__main__':
  console.guard('ltl_demo', main)()
