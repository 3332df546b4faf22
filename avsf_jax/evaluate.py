r"""Multi-view evaluation of a training checkpoint or of an export.

  python -m avsf_jax.evaluate --config=configs/kinetics_r50.py --workdir=DIR --output=res.json
  python -m avsf_jax.evaluate --config=configs/kinetics_r50.py --export=EXPORT --output=res.json

The protocol comes from the config: `input.num_temporal_views` x `input.num_spatial_views`
views at short side `input.test_short_side` (10 x 3 at 256 for Kinetics), combined by
`evals.view_aggregation` (softmax average; max over clips for Charades); `--single_view`
scores the centre view only. A checkpoint is evaluated with the same precise-BN statistics
as at the end of training, so the numbers match `WORKDIR/eval_results.json`.

The evaluation is the config's task's (`Task.evaluate`): an AVA detector (`configs/ava.py`)
gives the frame mAP@0.5 of its boxes' scores (`frame_map`, per-class APs), with the boxes of
`detection.eval_boxes` at `detection.score_threshold`, exactly as at the end of training; an
export is run through `Task.export_predict`, which knows the task's batch layout.

Writes FILE.json (metrics, per-class results, class names, what was evaluated),
FILE.scores.npz (per-video scores, labels and video indices) and FILE.per_class.png.
"""

import io
import os

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from avsf_jax import checkpointing, console, export, storage, tasks
from avsf_jax import experiment as experiment_lib
from avsf_jax import mesh as mesh_lib
from avsf_jax.evaluation import plots

FLAGS = flags.FLAGS


def _progress(total_videos: int, batch: int):
  return console.progress_wrap(-(-total_videos // batch), desc='evaluating')


def evaluate_workdir(
  config,
  workdir: str,
  *,
  multi_view: bool,
  step: int | None = None,
  recompute_precise_bn: bool = False,
):
  """(results, per-video scores, class names) of a checkpoint in `workdir` (the newest valid
  one by default), with the precise-BN statistics saved with it."""
  experiment = experiment_lib.Experiment(config)
  variables, step = experiment.restore(
    workdir, step=step, recompute_precise_bn=recompute_precise_bn
  )
  results, per_video = experiment.evaluate(
    variables,
    multi_view=multi_view,
    progress=_progress(experiment.info.num_eval_examples, config.input.eval_batch_size),
  )
  results['step'] = step
  return results, per_video, experiment.info.class_names


def evaluate_export(config, export_dir: str, *, multi_view: bool):
  """(results, per-video scores, class names) of an export, on this process's devices.

  Reads only the eval split: the export carries the evaluation's BN statistics.
  """
  if jax.process_count() > 1:
    raise ValueError('--export evaluation runs in one process; use --workdir on a pod')
  loaded = export.load(export_dir)
  data = experiment_lib.data_source(config)
  info = data.dataset_info(config)
  task = tasks.create(config, info)
  # The task knows its batches' layout: classification's (batch, views) inputs, detection's
  # clips with padded boxes (whose evaluation is the frame mAP of the boxes' scores).
  results, per_video = task.evaluate(
    task.export_predict(loaded),
    None,
    data.make_eval_iterator(config, multi_view=multi_view),
    progress=_progress(info.num_eval_examples, config.input.eval_batch_size),
  )
  return results, per_video, info.class_names


def write_outputs(output: str, results: dict, per_video: dict, class_names) -> list[str]:
  """Writes the JSON, the per-video scores and the per-class plot; returns their paths."""
  output = str(storage.path(output))
  base = output.removesuffix('.json')
  names = class_names if isinstance(class_names, list | tuple) else None
  payload = {**results, 'class_names': list(names) if names else class_names}
  storage.write_json(output, payload, default=_json_default)
  written = [output]
  scores = io.BytesIO()
  np.savez(scores, **{k.replace('/', '_'): v for k, v in per_video.items()})
  written.append(str(storage.write_bytes(base + '.scores.npz', scores.getvalue())))
  # Detection's per-class APs (beside its `frame_map`) are fractions, classification's percent.
  ap_unit = 'AP' if 'frame_map' in results else 'AP (%)'
  for key, metric in (('per_class_top1', 'top-1 accuracy (%)'), ('per_class_ap', ap_unit)):
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


def headline(results: dict) -> list[str]:
  """The figures printed at the end: classification's top-1/top-5/mAP (percent) and
  detection's frame mAP@0.5 (a fraction, as the AVA evaluator reports it)."""
  lines = [f'{k} {v:.1f}%' for k, v in results.items() if k.startswith(('top1', 'top5', 'mAP'))]
  if 'frame_map' in results:
    lines.append(f'frame_map {results["frame_map"]:.4f}')
  return lines


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
  # console: library logs to WORKDIR/log.txt (with --export: log.txt beside --output).
  log_dir = FLAGS.workdir or os.path.dirname(os.path.abspath(FLAGS.output))
  if FLAGS.workdir and '://' not in FLAGS.workdir and not os.path.isdir(FLAGS.workdir):
    raise FileNotFoundError(f'{FLAGS.workdir}: no such training workdir')
  console.setup(storage.path(log_dir) / 'log.txt', verbose=FLAGS.verbose)
  mesh_lib.prepare_process()
  multi_view = not FLAGS.single_view
  what = f'export {FLAGS.export}' if FLAGS.export else f'workdir {FLAGS.workdir}'
  config = FLAGS.config
  if config.get('task') == 'detection':
    protocol = f'one clip per keyframe, {config.detection.eval_boxes} boxes'
  else:
    views = config.input.num_temporal_views * config.input.num_spatial_views if multi_view else 1
    protocol = f'{views} view(s) per video'
  console.stage('evaluation', f'{what}, {protocol}')
  try:
    if FLAGS.workdir:
      results, per_video, names = evaluate_workdir(
        FLAGS.config,
        FLAGS.workdir,
        multi_view=multi_view,
        step=FLAGS.step,
        recompute_precise_bn=FLAGS.recompute_precise_bn,
      )
      results['evaluated'] = {'workdir': str(storage.path(FLAGS.workdir))}
    else:
      results, per_video, names = evaluate_export(FLAGS.config, FLAGS.export, multi_view=multi_view)
      results['evaluated'] = {'export': str(storage.path(FLAGS.export))}
  except (storage.FileFault, FileNotFoundError, checkpointing.CheckpointError) as e:
    raise console.fail('evaluate', e) from None
  results['views'] = 'multi' if multi_view else 'single'
  if jax.process_index() == 0:
    written = write_outputs(FLAGS.output, results, per_video, names)
    logging.info('%s', headline(results))
    console.stage('results', ', '.join(headline(results)))
    console.summary([('wrote', path) for path in written])


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, because this module is
  also imported as a library (absl flags are process-global)."""
  config_flags.DEFINE_config_file('config', None, 'Config file, optionally with :variant.')
  flags.DEFINE_string('workdir', None, 'Training workdir: evaluate its newest checkpoint.')
  flags.DEFINE_string('export', None, 'Export directory (avsf_jax.export) to evaluate instead.')
  flags.DEFINE_integer('step', None, 'With --workdir: this checkpoint (default: the newest valid).')
  flags.DEFINE_string('output', None, 'Results JSON file to write.')
  flags.DEFINE_bool('single_view', False, 'Score only the centre view of each video.')
  flags.DEFINE_bool(
    'recompute_precise_bn',
    False,
    'With --workdir: recompute the BN statistics from the training split (evals.*) instead of '
    'using those saved with the checkpoint.',
  )
  console.define_flags()
  flags.mark_flags_as_required(['config', 'output'])


if __name__ == '__main__':
  console.quiet_native_logs()
  define_flags()
  app.run(console.guard('evaluate', main), flags_parser=console.parse_flags)
