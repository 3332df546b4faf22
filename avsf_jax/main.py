r"""Trains and evaluates a model: `python -m avsf_jax.main --config=CFG --workdir=DIR`.

  python -m avsf_jax.main --config=configs/kinetics_r50.py --workdir=/tmp/avsf_r50
  python -m avsf_jax.main --config=configs/demo.py:slowfast --workdir=demo_run/slowfast \
      --config.optim.num_epochs=2

Runs resume from the newest checkpoint in --workdir. Several processes (a TPU pod, or
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID set) run the same command.
The console shows one line per stage, progress bars and a closing summary; library logs go
to WORKDIR/log.txt (`--verbose` shows them too). A user's mistake (an unprepared dataset, an
unknown config variant, a workdir of another experiment) is one line, without a traceback.
"""

import os
import sys

# Before TensorFlow and XLA load (they are imported below): no C++ INFO/WARNING lines
# (oneDNN notices and the like) unless --verbose or the user set a level.
if '--verbose' not in sys.argv:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from avsf_jax import checkpointing, config_lib, console, storage, train  # noqa: E402
from avsf_jax import mesh as mesh_lib  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and results.')
config_flags.DEFINE_config_file(
  'config', None, 'Config file, optionally with :variant.', lock_config=True
)
console.define_flags()
flags.mark_flags_as_required(['config', 'workdir'])

# The errors a user's mistake raises: reported in one line, the traceback only in log.txt.
USER_ERRORS = (
  train.NonFiniteError,
  train.WorkdirMismatchError,
  config_lib.ConfigError,
  checkpointing.CheckpointError,
  storage.FileFault,  # a damaged or foreign file the user handed over (init_from, class names)
  FileNotFoundError,
  TimeoutError,  # another process's dataset build did not finish in time
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  workdir = storage.path(FLAGS.workdir)
  log_file = console.setup(_log_file(FLAGS.workdir), verbose=FLAGS.verbose)
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
  except USER_ERRORS as e:
    raise console.fail('main', e) from None
  if results is not None and jax.process_index() == 0:
    rows = [(k, f'{results[k]:.1f}%') for k in _headline_keys(results)]
    rows += _count_rows(results)
    rows.append(('results', str(workdir / 'eval_results.json')))
    if (workdir / 'per_class_top1.png').exists():
      rows.append(('per-class plot', str(workdir / 'per_class_top1.png')))
    if log_file:
      rows.append(('log', log_file))
    rows.append(('TensorBoard', f'tensorboard --logdir {workdir}'))
    console.summary(rows)


def _log_file(workdir: str) -> str:
  """WORKDIR/log.txt (WORKDIR/log-<process>.txt on processes other than 0)."""
  process = os.environ.get('JAX_PROCESS_ID', '0')
  name = 'log.txt' if process in ('', '0') else f'log-{process}.txt'
  return str(storage.path(workdir) / name)


def _headline_keys(results) -> list[str]:
  return [k for k in results if k.startswith(('top1', 'top5', 'mAP'))]


def _count_rows(results) -> list[tuple[str, str]]:
  """How many examples the evaluation saw, under the name the task gives them (a video
  classifier's 'num_examples', a clip task's 'clips'), with the step; none if it gives none."""
  for key, name in (('num_examples', 'videos'), ('clips', 'clips')):
    if key in results:
      return [(name, f'{results[key]} (step {results.get("step")})')]
  return []


if __name__ == '__main__':
  app.run(console.guard('main', main), flags_parser=console.parse_flags)
