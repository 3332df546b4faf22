"""`python -m avsf_jax.main` on a small `synthetic_av`: AVSF_SYNTHETIC_CLIPS clips per class in
each split (`TRAIN,VALIDATE`, default `1,1`) instead of the demo's 20 and 5.

Used by the tests of first runs on an empty dataset cache (test_shared_builds.py), so that a
build takes seconds; everything else (the build, its lock and markers, the wait of processes
other than 0, training) runs unchanged.
"""

import os
import runpy

from avsf_jax.input.prepare import builders

if __name__ == '__main__':
  train, validate = (int(x) for x in os.environ.get('AVSF_SYNTHETIC_CLIPS', '1,1').split(','))
  builders.SyntheticAv.clips_per_class = {'train': train, 'validate': validate}
  runpy.run_module('avsf_jax.main', run_name='__main__', alter_sys=True)
