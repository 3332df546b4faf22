r"""Trains and evaluates a model: `python -m avsf_jax.main --config=CFG --workdir=DIR`.

  python -m avsf_jax.main --config=configs/kinetics_r50.py --workdir=/tmp/avsf_r50
  python -m avsf_jax.main --config=configs/demo.py:slowfast --workdir=demo_run/slowfast \
      --config.optim.num_epochs=2

Runs resume from the newest checkpoint in --workdir. Several processes (a TPU pod, or
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID set) run the same command.
"""

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from avsf_jax import checkpointing, config_lib, storage, train
from avsf_jax import mesh as mesh_lib

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and results.')
config_flags.DEFINE_config_file(
  'config', None, 'Config file, optionally with :variant.', lock_config=True
)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  mesh_lib.prepare_process()
  logging.info(
    'Process %d of %d; %d local / %d global devices (%s).',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
    jax.default_backend(),
  )
  try:
    results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except train.NonFiniteError as e:
    logging.error('%s', e)
    raise SystemExit(f'Stopped: {e}') from None
  except (config_lib.ConfigError, checkpointing.CheckpointError, FileNotFoundError) as e:
    logging.error('%s', e)
    raise SystemExit(f'Stopped: {e}') from None
  if results is not None and jax.process_index() == 0:
    workdir = storage.path(FLAGS.workdir)
    print(f'Final evaluation ({results["num_examples"]} videos): ' + _headline(results))
    print(f'Results: {workdir / "eval_results.json"}')
    if (workdir / 'per_class_top1.png').exists():
      print(f'Per-class accuracy: {workdir / "per_class_top1.png"}')


def _headline(results) -> str:
  keys = [k for k in results if k.startswith(('top1', 'top5', 'mAP'))]
  return ', '.join(f'{k} {results[k]:.1f}%' for k in keys)


if __name__ == '__main__':
  app.run(main)
