"""`python -m avsf_jax.main` for the GCS-emulator test, with one substitution.

TensorBoard event files are written by TensorFlow's own GCS client (`tf.summary`), which has
no endpoint setting and so cannot be pointed at a local emulator (it always calls
www.googleapis.com). This driver replaces only clu's TensorBoard writer with its logging
writer; everything else (checkpoints through orbax/tensorstore, config.json, results, plots
through `avsf_jax.storage`) runs unchanged against the emulator.
"""

import runpy

from clu import metric_writers


def _logging_only(logdir, *, just_logging=False, **kwargs):
  del just_logging
  return _create(logdir, just_logging=True, **kwargs)


_create = metric_writers.create_default_writer
metric_writers.create_default_writer = _logging_only

if __name__ == '__main__':
  runpy.run_module('avsf_jax.main', run_name='__main__', alter_sys=True)
