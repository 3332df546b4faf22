r"""The AVA detection demo (spec `ava.md` 7.2 / 7.3): SlowFast and AVSlowFast detectors trained
and evaluated on `synthetic_ava`, one results JSON with the acceptance checks.

  python -m avsf_jax.tools.ava_demo --output=demo_run/ava [--steps=N] [--data_dir=DIR]

Per variant (`configs/ava.py:demo`, `:demo_avslowfast`): train (`train.train_and_evaluate`,
GT boxes at evaluation: the oracle), then evaluate the final checkpoint with the detector's
boxes at score >= 0.8 and at 0.0, write an export and evaluate it (its scores must equal the
checkpoint's exactly). The JSON holds every frame mAP, the per-class APs and the checks:
oracle >= 0.80 over the visual classes, detector boxes >= 0.70 and lower at threshold 0,
AP(sing) of AVSlowFast >= SlowFast's + 0.30, export exact. `--steps` changes the schedule
(the acceptance thresholds are for the configs' `DEMO_STEPS`).
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


def _config(variant: str, steps: int | None, data_dir: str | None):
  spec = importlib.util.spec_from_file_location('ava_config', CONFIG_FILE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)  # as --config=configs/ava.py:VARIANT loads it
  config = module.get_config(variant)
  if data_dir:
    config.input.data_dir = data_dir
  if steps:
    config.optim.num_epochs = steps * config.input.batch_size / module.DEMO_TRAIN_KEYFRAMES
  config.detection.eval_boxes = 'gt'
  return config


def _ap(results: dict, class_ids) -> float:
  aps = dict(zip(results['class_ids'], results['per_class_ap']))
  return float(np.nanmean([aps[c] for c in class_ids]))


def _detector_config(config, threshold: float):
  """`config` evaluating the person detector's boxes at `threshold` (same shapes)."""
  config = config.copy_and_resolve_references()
  config.detection.eval_boxes = 'detector'
  config.detection.score_threshold = threshold
  return config


def run_variant(
  variant: str, output: str, steps: int, data_dir: str | None
) -> tuple[dict, dict[str, float]]:
  """(results, stage wall times in s) of one variant: train, oracle, detector boxes, export."""
  config = _config(variant, steps, data_dir)
  workdir = os.path.join(output, variant)
  seconds = {}
  start = time.time()
  oracle = train.train_and_evaluate(config, workdir)
  seconds['train_and_oracle_eval'] = time.time() - start
  start = time.time()
  # One experiment (one compiled predict) for every evaluation: the detector-box splits have
  # the oracle split's shapes, only the boxes differ.
  ex = experiment_lib.Experiment(config)
  variables, _ = ex.restore(workdir)
  out = {'oracle': oracle}
  for name, threshold in (('detector_0.8', 0.8), ('detector_0.0', 0.0)):
    data_config = _detector_config(config, threshold)
    batches = ex.global_batches(ex.data.make_eval_iterator(data_config, multi_view=False))
    out[name], _ = ex.task.evaluate(ex.predict, variables, batches)
  seconds['detector_evals'] = time.time() - start
  start = time.time()
  # Export round trip on the oracle split: the export's scores against the checkpoint's.
  reference, ref_outputs = ex.evaluate(variables, multi_view=False)
  path = os.path.join(output, f'{variant}_export')
  export.write_experiment(path, ex, jax.device_get(variables), overwrite=True)
  predict = ex.task.export_predict(export.load(path))
  exported, exp_outputs = ex.task.evaluate(predict, None, ex.eval_batches(multi_view=False))
  out['export'] = exported
  out['export_max_abs_score_diff'] = float(
    np.max(np.abs(exp_outputs['scores'] - ref_outputs['scores']))
  )
  out['export_exact'] = bool(
    exported['frame_map'] == reference['frame_map'] == oracle['frame_map']
    and out['export_max_abs_score_diff'] == 0.0
  )
  seconds['export'] = time.time() - start
  plot = ava_eval.FrameMapResult(
    tuple(oracle['class_ids']),
    np.asarray(oracle['per_class_ap']),
    oracle['frame_map'],
    np.asarray(oracle['num_groundtruth']),
  )
  names = dict(zip(oracle['class_ids'], oracle['class_names']))
  ava_eval.plot_per_class_ap(plot, names, os.path.join(output, f'{variant}_per_class_ap.png'))
  return out, seconds


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
  start = time.time()
  # Library logs (orbax, absl) and TensorFlow's / XLA's C++ notices go to the log file.
  console.setup(os.path.join(f.output, 'ava_demo.log'), verbose=console.verbose_requested())
  results, seconds = {}, {}
  for variant in ('demo', 'demo_avslowfast'):
    results[variant], seconds[variant] = run_variant(variant, f.output, f.steps, f.data_dir)
  results['acceptance'] = acceptance(results)
  seconds['total'] = time.time() - start
  # Wall times go to their own file: the results JSON is a function of the code and seeds.
  storage.write_json(os.path.join(f.output, 'ava_demo_results.json'), results)
  storage.write_json(os.path.join(f.output, 'ava_demo_seconds.json'), seconds)
  print(json.dumps(results['acceptance'], indent=2, default=str))
  print(f'wall time: {seconds["total"]:.0f} s')


if __name__ == '__main__':
  flags.DEFINE_string('output', 'demo_run/ava', 'Folder for workdirs, exports and the JSON.')
  flags.DEFINE_integer('steps', None, "Training steps per variant (default: the configs').")
  flags.DEFINE_string('data_dir', None, 'Dataset root (default: $AVSF_DATA_DIR or the cache).')
  console.define_flags()
  app.run(console.guard('ava_demo', main))
