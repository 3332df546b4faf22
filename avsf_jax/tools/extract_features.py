r"""Per-video features for downstream users (linear probes, retrieval, Listen to Look).

  python -m avsf_jax.tools.extract_features --config=configs/kinetics_r50.py \
      (--workdir=DIR | --export=DIR) --output=features.npz [--split=validation] \
      [--single_view] [--stage=slow_res4 --stage_pooling=mean]

Writes one `.npz` with, for every video of the split (each exactly once) and every view
(10 x 3 by default; `--single_view` for the centre view): the pool5 features of each pathway
(`slow` (N, V, 2048), `fast` (N, V, 256), `audio` (N, V, 1024) for R50), the logits, the
labels and `video_index`. `--stage=<pathway>_<res2..res5>` adds that stage's output, averaged
over time and space (`--stage_pooling=mean`) or whole (`none`; large).
"""

import io

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from avsf_jax import console, export, models, storage
from avsf_jax import experiment as experiment_lib
from avsf_jax import mesh as mesh_lib

FLAGS = flags.FLAGS


def feature_fn(model: models.AVSlowFast, stage: str | None, stage_pooling: str):
  """Jitted `(variables, batch (b, V, ...)) -> {name: (b, V, ...)}` of features and logits."""

  def features(variables, batch):
    b, views = batch[model.pathways[0]].shape[:2]
    inputs = {p: batch[p].reshape((-1,) + batch[p].shape[2:]) for p in model.pathways}
    (logits, aux), state = model.apply(variables, inputs, train=False, mutable=['intermediates'])
    out = {p: f for p, f in aux['pooled'].items()}
    out['logits'] = logits
    if stage is not None:
      value = state['intermediates'][f'{stage}_out'][0].astype(jnp.float32)
      if stage_pooling == 'mean':
        value = value.mean(axis=tuple(range(1, value.ndim - 1)))
      out[stage] = value
    return jax.tree.map(lambda x: x.reshape((b, views) + x.shape[1:]), out)

  return jax.jit(features)


def extract(config, variables, *, split=None, multi_view=True, stage=None, stage_pooling='mean'):
  """{name: array over all videos of the split} (single process)."""
  model = models.build_model(config.model)
  if stage is not None and f'{stage.split("_")[0]}' not in model.pathways:
    raise ValueError(f'--stage={stage}: the model has pathways {model.pathways}')
  fn = feature_fn(model, stage, stage_pooling)
  data = experiment_lib.data_source(config)
  if split is not None:
    config = config.copy_and_resolve_references()
    config.input.eval_split = split
  chunks: dict[str, list[np.ndarray]] = {}
  for batch in data.make_eval_iterator(config, multi_view=multi_view):
    keep = np.asarray(batch['_mask']) > 0
    inputs = {p: jnp.asarray(batch[p]) for p in model.pathways}
    feats = jax.device_get(fn(variables, inputs))
    for name, value in jax.tree_util.tree_leaves_with_path(feats):
      key = '/'.join(str(getattr(k, 'key', k)) for k in name)
      chunks.setdefault(key, []).append(np.asarray(value)[keep])
    for key in batch:
      if key.startswith('label') or key == 'video_index':
        chunks.setdefault(key, []).append(np.asarray(batch[key])[keep])
  return {k: np.concatenate(v) for k, v in chunks.items()}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  if (FLAGS.workdir is None) == (FLAGS.export is None):
    raise app.UsageError('give exactly one of --workdir and --export')
  if jax.process_count() > 1:
    raise app.UsageError('extract_features runs in one process')
  config = FLAGS.config
  mesh_lib.prepare_process()
  if FLAGS.export:
    variables = export.load(FLAGS.export).variables
  else:
    variables, _ = experiment_lib.Experiment(config).restore(FLAGS.workdir, step=FLAGS.step)
  features = extract(
    config,
    jax.device_get(variables),
    split=FLAGS.split,
    multi_view=not FLAGS.single_view,
    stage=FLAGS.stage,
    stage_pooling=FLAGS.stage_pooling,
  )
  buffer = io.BytesIO()
  np.savez(buffer, **features)
  output = storage.write_bytes(FLAGS.output, buffer.getvalue())
  shapes = ', '.join(f'{k} {v.shape}' for k, v in sorted(features.items()))
  print(f'wrote {output}: {shapes}')


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, because this module is
  also imported as a library (absl flags are process-global)."""
  config_flags.DEFINE_config_file('config', None, 'Config file, optionally with :variant.')
  flags.DEFINE_string('workdir', None, 'Training workdir: use its newest checkpoint.')
  flags.DEFINE_string('export', None, 'Export directory: use its variables.')
  flags.DEFINE_integer('step', None, 'With --workdir: this checkpoint (default: the newest valid).')
  flags.DEFINE_string('output', None, 'The .npz file to write.')
  flags.DEFINE_string('split', None, 'Split to read (default: config.input.eval_split).')
  flags.DEFINE_bool('single_view', False, 'Only the centre view of each video.')
  flags.DEFINE_string('stage', None, 'Also write this stage, e.g. slow_res4 or audio_res3.')
  flags.DEFINE_enum('stage_pooling', 'mean', ['mean', 'none'], 'How to reduce --stage.')
  console.define_flags()
  flags.mark_flags_as_required(['config', 'output'])


if __name__ == '__main__':
  define_flags()
  app.run(console.guard('extract_features', main), flags_parser=console.parse_flags)
