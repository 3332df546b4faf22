r"""Multi-view evaluation of a training checkpoint or of an export.

  python -m avsf_jax.evaluate --config=configs/kinetics_r50.py --workdir=DIR --output=res.json
  python -m avsf_jax.evaluate --config=configs/kinetics_r50.py --export=EXPORT --output=res.json

The protocol comes from the config: `input.num_temporal_views` x `input.num_spatial_views`
views at short side `input.test_short_side` (10 x 3 at 256 for Kinetics), combined by
`evals.view_aggregation` (softmax average; max over clips for Charades); `--single_view`
scores the centre view only. A checkpoint is evaluated with the same precise-BN statistics
as at the end of training, so the numbers match `WORKDIR/eval_results.json`.

Writes FILE.json (metrics, per-class results, class names, what was evaluated),
FILE.scores.npz (per-video scores, labels and video indices) and FILE.per_class.png.
"""

import json
import os

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from avsf_jax import export, train
from avsf_jax import mesh as mesh_lib
from avsf_jax.evaluation import plots
from avsf_jax.evaluation import views as evaluators

FLAGS = flags.FLAGS


def _progress(total_videos: int, batch: int):
  from tqdm import tqdm  # noqa: PLC0415

  def wrap(batches):
    return tqdm(batches, total=-(-total_videos // batch), desc='evaluating', unit='batch')

  return wrap if jax.process_index() == 0 else None


def evaluate_workdir(config, workdir: str, *, multi_view: bool):
  """(results, per-video scores, class names) of the newest checkpoint in `workdir`."""
  from avsf_jax import checkpointing  # noqa: PLC0415

  trainer = train.Trainer(config, workdir)
  checkpointer = checkpointing.Checkpointer(workdir, config.checkpoint)
  try:
    state = trainer.restore_latest(checkpointer)
  finally:
    checkpointer.close()
  results, per_video = trainer.evaluate(
    state,
    multi_view=multi_view,
    progress=_progress(trainer.info.num_eval_examples, config.input.eval_batch_size),
    return_scores=True,
  )
  results['step'] = int(jax.device_get(state.step))
  return results, per_video, trainer.info.class_names


def evaluate_export(config, export_dir: str, *, multi_view: bool):
  """(results, per-video scores, class names) of an export, on this process's devices."""
  if jax.process_count() > 1:
    raise ValueError('--export evaluation runs in one process; use --workdir on a pod')
  loaded = export.load(export_dir)
  data = train.data_source(config)
  info = data.dataset_info(config)
  heads = dict(info.num_classes) if hasattr(info.num_classes, 'items') else None

  def predict(variables, batch):
    del variables
    inputs = {k: np.asarray(batch[k]) for k in loaded.input_spec}
    b, views = next(iter(inputs.values())).shape[:2]
    flat = {k: v.reshape((b * views,) + v.shape[2:]) for k, v in inputs.items()}
    logits = loaded.predict(flat)
    if heads is None:
      return {'label': np.asarray(logits).reshape(b, views, -1)}
    return {f'label_{h}': np.asarray(logits[h]).reshape(b, views, -1) for h in heads}

  results, per_video = evaluators.evaluate(
    predict,
    None,
    data.make_eval_iterator(config, multi_view=multi_view),
    num_classes=info.num_classes,
    multi_label=info.multi_label,
    view_aggregation=config.evals.view_aggregation,
    progress=_progress(info.num_eval_examples, config.input.eval_batch_size),
    return_scores=True,
  )
  return results, per_video, info.class_names


def write_outputs(output: str, results: dict, per_video: dict, class_names) -> list[str]:
  """Writes the JSON, the per-video scores and the per-class plot; returns their paths."""
  output = os.path.abspath(output)
  os.makedirs(os.path.dirname(output), exist_ok=True)
  base = output.removesuffix('.json')
  names = class_names if isinstance(class_names, list | tuple) else None
  payload = {**results, 'class_names': list(names) if names else class_names}
  tmp = output + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=2, default=_json_default)
  os.replace(tmp, output)
  written = [output]
  np.savez(base + '.scores.npz', **{k.replace('/', '_'): v for k, v in per_video.items()})
  written.append(base + '.scores.npz')
  for key, metric in (('per_class_top1', 'top-1 accuracy (%)'), ('per_class_ap', 'AP (%)')):
    if key in results and names:
      path = plots.plot_per_class(
        np.asarray(results[key], float),
        names,
        base + '.per_class.png',
        title=key,
        metric_name=metric,
      )
      written.append(path)
  return written


def _json_default(value):
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f'not JSON serializable: {type(value).__name__}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  if (FLAGS.workdir is None) == (FLAGS.export is None):
    raise app.UsageError('give exactly one of --workdir and --export')
  mesh_lib.prepare_process()
  multi_view = not FLAGS.single_view
  if FLAGS.workdir:
    results, per_video, names = evaluate_workdir(FLAGS.config, FLAGS.workdir, multi_view=multi_view)
    results['evaluated'] = {'workdir': os.path.abspath(FLAGS.workdir)}
  else:
    results, per_video, names = evaluate_export(FLAGS.config, FLAGS.export, multi_view=multi_view)
    results['evaluated'] = {'export': os.path.abspath(FLAGS.export)}
  results['views'] = 'multi' if multi_view else 'single'
  if jax.process_index() == 0:
    for path in write_outputs(FLAGS.output, results, per_video, names):
      print(f'wrote {path}')
    headline = {k: round(v, 2) for k, v in results.items() if k.startswith(('top1', 'top5', 'mAP'))}
    logging.info('%s', headline)
    print(json.dumps(headline))


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, because this module is
  also imported as a library (absl flags are process-global)."""
  config_flags.DEFINE_config_file('config', None, 'Config file, optionally with :variant.')
  flags.DEFINE_string('workdir', None, 'Training workdir: evaluate its newest checkpoint.')
  flags.DEFINE_string('export', None, 'Export directory (avsf_jax.export) to evaluate instead.')
  flags.DEFINE_string('output', None, 'Results JSON file to write.')
  flags.DEFINE_bool('single_view', False, 'Score only the centre view of each video.')
  flags.mark_flags_as_required(['config', 'output'])


if __name__ == '__main__':
  define_flags()
  app.run(main)
