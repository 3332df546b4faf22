"""Runs command lines in one process, each as `python -m MODULE ARGS...` would, and prints
one JSON object per run: module, args, exit status and everything it wrote to stderr.

  python tests/faults/entry_points.py '[["avsf_jax.tools.log_mel", ["--input=x", ...]], ...]'

One process for all of them, because each program alone spends seconds importing JAX and
TensorFlow: the test of every entry point's error handling (test_faults.py) would otherwise
cost minutes. Between runs the flags a program defined are removed (absl flags are global),
and file descriptor 2 and `sys.stderr` point at a fresh file, so each run's stderr (Python's
and the C++ libraries') is its own.
"""

import json
import os
import runpy
import sys
import tempfile
import warnings


def run(module: str, args: list[str]) -> dict:
  # Imported before the flags are listed: the flags they define stay between runs.
  from absl import app, flags  # noqa: F401, PLC0415
  from absl import logging as absl_logging  # noqa: PLC0415
  from ml_collections import config_flags  # noqa: F401, PLC0415

  from avsf_jax import console  # noqa: PLC0415

  defined = set(flags.FLAGS)
  saved_fd, saved_stderr, saved_argv = os.dup(2), sys.stderr, sys.argv
  with tempfile.TemporaryFile('w+') as capture:
    os.dup2(capture.fileno(), 2)
    sys.stderr = open(capture.fileno(), 'w', buffering=1, closefd=False)  # noqa: SIM115
    absl_logging.get_absl_handler().python_handler.stream = sys.stderr
    console._state.update(verbose=False, terminal=None, handler=None, log_path=None)  # noqa: SLF001
    sys.argv = [module, *args]
    code = 0
    try:
      with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # runpy: found in sys.modules
        runpy.run_module(module, run_name='__main__', alter_sys=True)
    except SystemExit as e:
      if isinstance(e.code, str):
        print(e.code, file=sys.stderr)
        code = 1
      else:
        code = e.code or 0
    finally:
      sys.stderr.flush()
      os.dup2(saved_fd, 2)
      os.close(saved_fd)
      sys.stderr, sys.argv = saved_stderr, saved_argv
      for name in set(flags.FLAGS) - defined:
        delattr(flags.FLAGS, name)
      flags.FLAGS.unparse_flags()
    capture.seek(0)
    return {'module': module, 'args': args, 'code': code, 'stderr': capture.read()}


if __name__ == '__main__':
  for module, args in json.loads(sys.argv[1]):
    print(json.dumps(run(module, args)), flush=True)
