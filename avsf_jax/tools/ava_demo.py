r"""The AVA detection demo (spec `ava.md` 7.2 / 7.3): SlowFast and AVSlowFast detectors trained
and evaluated on `synthetic_ava`, one results JSON with the acceptance checks.

  python -m avsf_jax.tools.ava_demo --output=demo_run/ava [--steps=600] [--data_dir=DIR]

Per variant (`configs/ava.py:demo`, `:demo_avslowfast`): train (`train.train_and_evaluate`,
GT boxes at evaluation: the oracle), then evaluate the final checkpoint with the detector's
boxes at score >= 0.8 and at 0.0, write an export and evaluate it (its scores must equal the
checkpoint's exactly). The JSON holds every frame mAP, the per-class APs and the checks:
oracle >= 0.80 over the visual classes, detector boxes >= 0.70 and lower at threshold 0,
AP(sing) of AVSlowFast >= SlowFast's + 0.30, export exact. `--steps` shortens the schedule
(the acceptance thresholds are for the full 600 steps).
"""

import importlib.util
import json
import os
import time

import jax
import numpy as np
from absl import app, flags

from avsf_jax import console, export, storage, train
from avsf_jax import experiment as experiment_lib
from avsf_jax.evaluation import ava as ava_eval

VISUAL = (1, 2, 4, 5)  # walk, jump, wave, carry
SING = 6


CONFIG_FILE = os.path.join(os.path.dirname(__file__), '..', '..', 'configs', 'ava.py')


def _config(variant: str, steps: int, data_dir: str | None):
  spec = importlib.util.spec_from_file_location('ava_config', CONFIG_FILE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)  # as --config=configs/ava.py:VARIANT loads it
  config = module.get_config(variant)
  if data_dir:
    config.input.data_dir = data_dir
  config.optim.num_epochs = steps * config.input.batch_size / 296.0
  config.detection.eval_boxes = 'gt'
  return config


def _ap(results: dict, class_ids) -> float:
  aps = dict(zip(results['class_ids'], results['per_class_ap']))
  return float(np.nanmean([aps[c] for c in class_ids]))


def run_variant(variant: str, output: str, steps: int, data_dir: str | None) -> dict:
  config = _config(variant, steps, data_dir)
  workdir = os.path.join(output, variant)
  start = time.time()
  oracle = train.train_and_evaluate(config, workdir)
  seconds = time.time() - start
  out = {'train_and_oracle_eval_s': seconds, 'oracle': oracle}
  for name, threshold in (('detector_0.8', 0.8), ('detector_0.0', 0.0)):
    cfg = _config(variant, steps, data_dir)
    cfg.detection.eval_boxes = 'detector'
    cfg.detection.score_threshold = threshold
    ex = experiment_lib.Experiment(cfg)
    variables, _ = ex.restore(workdir)
    out[name], _ = ex.evaluate(variables, multi_view=False)
  # Export round trip on the oracle split.
  ex = experiment_lib.Experiment(config)
  variables, _ = ex.restore(workdir)
  reference, ref_outputs = ex.evaluate(variables, multi_view=False)
  path = os.path.join(output, f'{variant}_export')
  export.write_experiment(path, ex, jax.device_get(variables), overwrite=True)
  loaded = export.load(path)

  def predict(variables, batch):
    del variables
    inputs = {k: np.asarray(batch[k]) for k in loaded.input_spec}
    return {'scores': np.asarray(loaded.predict(inputs))}

  exported, exp_outputs = ex.task.evaluate(predict, None, ex.eval_batches(multi_view=False))
  out['export'] = exported
  out['export_max_abs_score_diff'] = float(
    np.max(np.abs(exp_outputs['scores'] - ref_outputs['scores']))
  )
  out['export_exact'] = bool(
    exported['frame_map'] == reference['frame_map'] and out['export_max_abs_score_diff'] == 0.0
  )
  plot = ava_eval.FrameMapResult(
    tuple(oracle['class_ids']),
    np.asarray(oracle['per_class_ap']),
    oracle['frame_map'],
    np.asarray(oracle['num_groundtruth']),
  )
  names = dict(zip(oracle['class_ids'], oracle['class_names']))
  ava_eval.plot_per_class_ap(plot, names, os.path.join(output, f'{variant}_per_class_ap.png'))
  return out


def acceptance(results: dict) -> dict:
  sf, av = results['demo'], results['demo_avslowfast']
  figures = {
    'oracle_visual_map_slowfast': _ap(sf['oracle'], VISUAL),
    'detector_0.8_visual_map_slowfast': _ap(sf['detector_0.8'], VISUAL),
    'detector_0.0_visual_map_slowfast': _ap(sf['detector_0.0'], VISUAL),
    'ap_sing_slowfast': _ap(sf['oracle'], (SING,)),
    'ap_sing_avslowfast': _ap(av['oracle'], (SING,)),
  }
  checks = {
    'oracle_visual_map >= 0.80': figures['oracle_visual_map_slowfast'] >= 0.80,
    'detector_0.8_visual_map >= 0.70': figures['detector_0.8_visual_map_slowfast'] >= 0.70,
    'detector map lower at threshold 0': figures['detector_0.0_visual_map_slowfast']
    < figures['detector_0.8_visual_map_slowfast'],
    'ap_sing gain >= 0.30': figures['ap_sing_avslowfast'] - figures['ap_sing_slowfast'] >= 0.30,
    'export exact': sf['export_exact'] and av['export_exact'],
  }
  return {'figures': figures, 'checks': checks}


def main(argv):
  del argv
  f = flags.FLAGS
  results = {}
  for variant in ('demo', 'demo_avslowfast'):
    results[variant] = run_variant(variant, f.output, f.steps, f.data_dir)
  results['acceptance'] = acceptance(results)
  results['steps'] = f.steps
  path = os.path.join(f.output, 'ava_demo_results.json')
  storage.write_json(path, results)
  print(json.dumps(results['acceptance'], indent=2, default=str))


if __name__ == '__main__':
  flags.DEFINE_string('output', 'demo_run/ava', 'Folder for workdirs, exports and the JSON.')
  flags.DEFINE_integer('steps', 600, 'Training steps per variant (spec 7.2: 600).')
  flags.DEFINE_string('data_dir', None, 'Dataset root (default: $AVSF_DATA_DIR or the cache).')
  console.define_flags()
  app.run(console.guard('ava_demo', main))
