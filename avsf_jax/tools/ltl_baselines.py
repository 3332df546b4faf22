r"""The Listen to Look §4 selection baselines on a split's feature banks (Table 1's rows).

  python -m avsf_jax.tools.ltl_baselines --banks=BANKS/val.npz --student_export=STUDENT \
      [--num_picks=10] [--seed=0] [--pair_gmacs=0] [--out=baselines.json]

UNIFORM, RANDOM, FRONT, CENTER, END, DENSE and SCSAMPLER (`evaluation.skimming_baselines`)
average the softmax of the student's Psi + FC_cls over the pairs they pick, on the banks that
`tools.extract_preview_features` wrote with the same student export. Prints and writes per
method top-1 and mAP (ActivityNet's video-level protocol), GFLOPs per video (§7: the mean over
the videos; the pair cost is `model_stats` of the student at its export's input shapes unless
`--pair_gmacs` is given) and, when the banks hold segments, the picks' hit rate. The learned
methods (IMGAUD-SKIMMING, NON-RECURRENT, LSTM) are jobs of `avsf_jax.main` on the same banks.
"""

import argparse
import json
import os

import numpy as np

from avsf_jax import console, export
from avsf_jax.evaluation import skimming_baselines
from avsf_jax.input import feature_banks
from avsf_jax.models import ltl_models, stats


def pair_gmacs(exported) -> float:
  """`model_stats` GFLOPs (the paper's multiply-adds) of one image-audio pair of the student."""
  model = ltl_models.build(dict(exported.metadata['model_config']))
  pair = {k: np.zeros((1, *v), np.float32) for k, v in exported.input_spec.items()}
  return float(stats.model_stats(model, pair)['gflops'])


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--banks', required=True, help='a split of the banks (BANKS/val.npz)')
  parser.add_argument('--student_export', required=True, help='the export the banks came from')
  parser.add_argument('--num_picks', type=int, default=skimming_baselines.NUM_PICKS)
  parser.add_argument('--seed', type=int, default=0, help="RANDOM's picks")
  parser.add_argument('--pair_gmacs', type=float, default=0.0, help='0: from model_stats')
  parser.add_argument('--out', default='', help='a JSON file for the results')
  console.add_verbose_argument(parser)
  args = parser.parse_args(argv)
  if not os.path.exists(args.banks):
    raise FileNotFoundError(f'{args.banks}: no banks there (tools.extract_preview_features)')
  exported = export.load(args.student_export)
  config = exported.metadata['model_config']
  if config.get('name') != 'imgaud':
    raise ValueError(
      f'{args.student_export}: model_config.name={config.get("name")!r}; expected an imgaud '
      'student export'
    )
  banks = feature_banks.load_banks(args.banks)
  results = skimming_baselines.evaluate_banks(
    banks,
    exported.variables['params'],
    fusion_hidden=int(config.get('fusion_hidden', 1024)),
    feature_dim=int(config.get('embed_dim', 512)),
    num_classes=len(exported.metadata['class_names']),
    pair_gmacs=args.pair_gmacs or pair_gmacs(exported),
    num_picks=args.num_picks,
    seed=args.seed,
  )
  print(f'{"method":10s} {"top-1":>6s} {"mAP":>6s} {"GFLOPs":>9s}')
  for name, r in results.items():
    print(f'{name:10s} {r["top1"]:6.1f} {r["mAP"]:6.1f} {r["gflops"]:9.3f}')
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(results, f, indent=1, sort_keys=True)
  return results


if __name__ == '__main__':
  console.guard('ltl_baselines', main)()
