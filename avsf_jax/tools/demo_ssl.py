r"""The CPU-scale self-supervised check (self-supervised spec 5.3 / 5.4): `make demo-ssl`.

  python -m avsf_jax.tools.demo_ssl --output=demo_run/ssl

On `synthetic_av_sync` (in memory, `input/sync_arrays.py`; built on first use):
1. pretraining on the 'pretrain' split (no labels reach the loss) with ROT + AVS (AVSlowFast),
   AVS only (AVSlowFast) and ROT only (SlowFast), each through the training loop's jitted step
   (`train.Trainer`), then the held-out pretext metrics on 'test' (the pretraining task's
   evaluator); the ROT + AVS backbone is written as an export (`export.write_experiment`);
2. the linear probe in `features` mode (4 augmented copies of every 'train' clip through the
   frozen backbone, multinomial logistic regression; test: 3 x 3 views, mean of softmaxes) on
   each pretrained backbone and on the random-init one (the ROT + AVS model's initial state,
   the same seed);
3. the supervised upper bound: every layer fine-tuned (task classification) with
   `init_from` = the ROT + AVS export.

Writes OUTPUT/table_a1.json (Table A.1-shaped, with the acceptance checks of spec 5.4; no
timings, so two runs give identical files), OUTPUT/table_a1.png (a bar plot) and
OUTPUT/timings.json.
"""

import importlib.util
import json
import os
import time

import jax
import numpy as np
from absl import app, flags

from avsf_jax import console, export, storage, train
from avsf_jax.input import sync_arrays
from avsf_jax.input.prepare import synthetic_av_sync as sync
from avsf_jax.models import probe as probe_lib
from avsf_jax.tasks import linear_probe

FLAGS = flags.FLAGS
PRETEXTS = {  # variant -> (Table A.1 pretext, model)
  'demo_rot': ('ROT', 'SlowFast'),
  'demo_avs': ('AVS', 'AVSlowFast'),
  'demo_avs_rot': ('ROT + AVS', 'AVSlowFast'),
}
THRESHOLDS = {  # spec 5.4, never loosened
  'rotation_accuracy': 0.90,
  'sync_hard_accuracy': 0.80,
  'sync_easy_accuracy': 0.90,
  'probe_top1_margin': 15.0,
  'probe_rate_margin': 20.0,
}
NUM_COPIES = 4
DIGITS = 4


CONFIG_FILE = os.path.join(os.path.dirname(__file__), '..', '..', 'configs', 'self_supervised.py')


def _config(variant: str):
  """`configs/self_supervised.py:<variant>`, loaded as `--config=FILE:variant` loads it."""
  spec = importlib.util.spec_from_file_location('self_supervised', CONFIG_FILE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def _train(trainer: train.Trainer, state, log: str):
  ex = trainer.experiment
  batches = ex.train_batches(seed=trainer.config.seed)
  metrics = {}
  for step in range(trainer.total_steps):
    state, metrics = trainer.train_step(state, next(batches), trainer.train_rng)
    if (step + 1) % 50 == 0 or step + 1 == trainer.total_steps:
      m = jax.device_get(metrics)
      print(f'{log} step {step + 1}/{trainer.total_steps} loss {float(m["loss"]):.4f}', flush=True)
  return state


def pretrain(variant: str, output: str) -> dict:
  """Trains one pretext variant; returns its held-out metrics and variables (and, for ROT +
  AVS, the random initial variables and the export path)."""
  config = _config(variant)
  trainer = train.Trainer(config)
  state = trainer.initial_state()
  initial = jax.device_get(state.variables())  # before the donated step consumes the state
  state = _train(trainer, state, variant)
  variables = jax.device_get(state.variables())
  ex = trainer.experiment
  results, _ = ex.evaluate(variables, multi_view=False)
  print(f'{variant} held-out pretext metrics: {results}', flush=True)
  out = {'config': config, 'variables': variables, 'initial': initial, 'pretext': results}
  if variant == 'demo_avs_rot':
    path = os.path.join(output, 'avs_rot_export')
    export.write_experiment(path, ex, variables, overwrite=True)
    out['export'] = path
  return out


def _probe_config(pretext_config):
  config = pretext_config.copy_and_resolve_references()
  config.task = 'linear_probe'
  config.input.train_split, config.input.eval_split = 'train', 'test'
  config.sync_data = {**dict(config.get('sync_data') or {}), 'rotation': 'none'}
  return config


class FeatureProbe:
  """The `features`-mode probe for one backbone architecture (one compiled feature function)."""

  def __init__(self, config):
    self.config = config
    model = probe_lib.ProbeModel(
      backbone=_backbone(config), num_classes=len(sync.CLASS_NAMES), mode='linear'
    )
    self.model = model
    jitted = linear_probe.feature_function(model)
    pathways = model.backbone.pathways

    def features(variables, batch):
      # Only the model inputs, so that training copies and test views share one compilation.
      return jitted(variables, {p: batch[p] for p in pathways})

    self.features = features
    self.chunk = config.input.eval_batch_size

  def variables(self, backbone_variables: dict) -> dict:
    """Probe variables around a backbone's (the FC, unused for features, is zero)."""
    params = backbone_variables['params']
    params = params.get('backbone', params)
    stats = backbone_variables['batch_stats']
    stats = stats.get('backbone', stats)
    spec = {k: v for k, v in _spec(self.config).items()}
    shapes = jax.eval_shape(
      lambda: self.model.init(jax.random.key(0), spec, train=False)  # shapes only
    )
    fc = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes['params']['probe_fc'])
    return {'params': {'backbone': params, 'probe_fc': fc}, 'batch_stats': {'backbone': stats}}

  def run(self, backbone_variables: dict) -> dict:
    """12-way top-1 and rate-attribute accuracy (percent) of the logistic-regression probe."""
    config = self.config
    variables = self.variables(backbone_variables)
    split = sync_arrays.settings(config)['features_split']
    x, y = linear_probe.extract_features(
      self.model,
      variables,
      lambda k: sync_arrays.augmented_copies(config, split, k),
      NUM_COPIES,
    )
    classifier = linear_probe.fit_logistic_regression(x, y, len(sync.CLASS_NAMES))
    logits, labels = [], []
    for batch in sync_arrays.make_eval_iterator(config, multi_view=True):
      keep = batch['_mask'] > 0
      b, v = batch['slow'].shape[:2]
      flat = {k: batch[k].reshape((b * v,) + batch[k].shape[2:]) for k in ('slow', 'fast', 'audio')}
      feats = np.concatenate(
        [
          np.asarray(self.features(variables, {k: x[i : i + self.chunk] for k, x in flat.items()}))
          for i in range(0, b * v, self.chunk)
        ]
      )
      logits.append(classifier.logits(feats).reshape(b, v, -1)[keep])
      labels.append(batch['label'][keep])
    return _scores(np.concatenate(logits), np.concatenate(labels))


def _softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  e = np.exp(x)
  return e / e.sum(axis=-1, keepdims=True)


def _scores(per_view_logits: np.ndarray, labels: np.ndarray) -> dict:
  """Top-1 and rate-attribute accuracy (percent) of the mean of softmaxes over views."""
  predicted = np.argmax(_softmax(per_view_logits.astype(np.float64)).mean(axis=1), axis=-1)
  rates = len(sync.RATES)
  return {
    'top1': 100.0 * float(np.mean(predicted == labels)),
    'rate_top1': 100.0 * float(np.mean(predicted % rates == labels % rates)),
    'num_test_clips': int(len(labels)),
  }


def _backbone(config):
  from avsf_jax import models  # noqa: PLC0415

  return models.build_model(config.model)


def _spec(config):
  from avsf_jax.tasks import pretraining  # noqa: PLC0415

  spec = pretraining.clip_input_spec(config, train=False)
  return {k: np.zeros((1, *s.shape), s.dtype) for k, s in spec.items()}


def fine_tune(export_path: str) -> dict:
  """The supervised upper bound: classification of every layer from the ROT + AVS export."""
  config = _config('demo_finetune')
  config.init_from = export_path
  trainer = train.Trainer(config)
  state = _train(trainer, trainer.initial_state(), 'demo_finetune')
  _, per_video = trainer.experiment.evaluate(jax.device_get(state.variables()), multi_view=True)
  scores, labels = per_video['scores/label'], per_video['label']
  predicted = np.argmax(scores, axis=-1)
  rates = len(sync.RATES)
  return {
    'top1': 100.0 * float(np.mean(predicted == labels)),
    'rate_top1': 100.0 * float(np.mean(predicted % rates == labels % rates)),
    'num_test_clips': int(len(labels)),
  }


def _round(x):
  if isinstance(x, float):
    return round(x, DIGITS)
  if isinstance(x, dict):
    return {k: _round(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_round(v) for v in x]
  return x


def acceptance(pretext: dict, rows: dict) -> dict:
  """Spec 5.4 T1-T3, each with its measured value, threshold and verdict."""
  out = {}
  # T1 and T2 name no variant ("ROT learnable", "AVS learnable"): each is reported for every
  # model trained with that pretext, ROT + AVS included.
  for variant, metric in (
    ('demo_avs_rot', 'rotation_accuracy'),
    ('demo_rot', 'rotation_accuracy'),
    ('demo_avs_rot', 'sync_hard_accuracy'),
    ('demo_avs_rot', 'sync_easy_accuracy'),
    ('demo_avs', 'sync_hard_accuracy'),
    ('demo_avs', 'sync_easy_accuracy'),
  ):
    if variant not in pretext:
      continue
    value = pretext[variant][metric]
    out[f'{metric} ({PRETEXTS[variant][0]})'] = {
      'value': value,
      'threshold': THRESHOLDS[metric],
      'pass': value >= THRESHOLDS[metric],
    }
  for metric, key in (('top1', 'probe_top1_margin'), ('rate_top1', 'probe_rate_margin')):
    margin = rows['ROT + AVS'][metric] - rows['random init'][metric]
    out[f'{key} (ROT + AVS - random init)'] = {
      'value': margin,
      'threshold': THRESHOLDS[key],
      'pass': margin >= THRESHOLDS[key],
    }
  return out


def plot(table: dict, path: str) -> None:
  import matplotlib  # noqa: PLC0415

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # noqa: PLC0415

  names = list(table['rows'])
  top1 = [table['rows'][n]['top1'] for n in names]
  rate = [table['rows'][n]['rate_top1'] for n in names]
  x = np.arange(len(names))
  fig, ax = plt.subplots(figsize=(8, 4))
  ax.bar(x - 0.2, top1, 0.4, label='12-way top-1')
  ax.bar(x + 0.2, rate, 0.4, label='rate attribute (3-way)')
  ax.axhline(100 / 12, color='grey', linestyle=':', label='12-way chance')
  ax.set_xticks(x, names, rotation=15)
  ax.set_ylabel('accuracy (%)')
  ax.set_ylim(0, 100)
  ax.set_title('synthetic_av_sync: linear probe (features mode) and fine-tuning')
  ax.legend(fontsize=8)
  fig.tight_layout()
  with storage.path(path).open('wb') as f:
    fig.savefig(f, format='png', dpi=100)
  plt.close(fig)


def run(output: str) -> dict:
  os.makedirs(output, exist_ok=True)
  timings, start = {}, time.time()
  sync_arrays.load(_config('demo_avs_rot'))
  timings['data'] = time.time() - start
  pretext, trained = {}, {}
  for variant in ('demo_avs_rot', 'demo_avs', 'demo_rot'):
    t = time.time()
    trained[variant] = pretrain(variant, output)
    pretext[variant] = trained[variant]['pretext']
    timings[f'pretrain {variant}'] = time.time() - t
  rows = {}
  probes = {}
  for name, variant, key in (
    ('random init', 'demo_avs_rot', 'initial'),
    ('ROT', 'demo_rot', 'variables'),
    ('AVS', 'demo_avs', 'variables'),
    ('ROT + AVS', 'demo_avs_rot', 'variables'),
  ):
    t = time.time()
    audio = variant != 'demo_rot'
    if audio not in probes:
      probes[audio] = FeatureProbe(_probe_config(trained[variant]['config']))
    rows[name] = probes[audio].run(trained[variant][key])
    rows[name]['model'] = 'AVSlowFast' if audio else 'SlowFast'
    rows[name]['protocol'] = f'linear probe, features mode ({NUM_COPIES} copies)'
    print(f'probe {name}: {rows[name]}', flush=True)
    timings[f'probe {name}'] = time.time() - t
  t = time.time()
  rows['supervised (fine-tune all from ROT + AVS)'] = {
    **fine_tune(trained['demo_avs_rot']['export']),
    'model': 'AVSlowFast',
    'protocol': 'fine-tune all layers',
  }
  timings['fine-tune'] = time.time() - t
  timings['total'] = time.time() - start
  table = {
    'dataset': 'synthetic_av_sync (in memory)',
    'chance': {'top1': 100 / 12, 'rate_top1': 100 / 3},
    'pretext_held_out': {PRETEXTS[v][0]: pretext[v] for v in PRETEXTS},
    'rows': rows,
    'acceptance': acceptance(pretext, rows),
  }
  table = _round(json.loads(json.dumps(table, default=float)))
  storage.write_json(os.path.join(output, 'table_a1.json'), table)
  storage.write_json(os.path.join(output, 'timings.json'), _round(timings))
  plot(table, os.path.join(output, 'table_a1.png'))
  print(json.dumps(table, indent=2))
  print('timings (s):', json.dumps(_round(timings)))
  return table


def main(argv):
  del argv
  # The 'rbg' generator: XLA's RngBitGenerator compiles in seconds on CPU, where the threefry
  # draws of `init` (one per parameter) take about 30 s per model. Still keyed by the seed.
  jax.config.update('jax_default_prng_impl', FLAGS.prng)
  # Library logs (orbax, absl) and TensorFlow's / XLA's C++ notices go to the log file.
  console.setup(os.path.join(FLAGS.output, 'demo_ssl.log'), verbose=console.verbose_requested())
  if FLAGS.compilation_cache:
    # Compiled programs are cached across runs (results do not depend on it).
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(FLAGS.compilation_cache))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  run(FLAGS.output)


if __name__ == '__main__':
  flags.DEFINE_string('output', 'demo_run/ssl', 'Directory of the table, plot and export.')
  flags.DEFINE_string('prng', 'rbg', "JAX's default PRNG implementation for this run.")
  flags.DEFINE_string(
    'compilation_cache', '~/.cache/avsf_jax/jax_cache', 'JAX compilation cache ("" for none).'
  )
  console.define_flags()
  app.run(console.guard('demo_ssl', main))
