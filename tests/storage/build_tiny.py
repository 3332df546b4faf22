"""Builds a tiny synthetic_av (1 train + 1 validation clip per class) into DATA_DIR.

  python tests/storage/build_tiny.py DATA_DIR [CLIPS_TRAIN CLIPS_VALIDATE]

Used by test_shared_builds.py to race two independent processes on one empty cache.
"""

import os
import sys

from avsf_jax.input.prepare import builders

if __name__ == '__main__':
  data_dir = sys.argv[1]
  train, validate = (int(x) for x in sys.argv[2:4]) if len(sys.argv) > 2 else (1, 1)
  builder = builders.get_builder('synthetic_av', data_dir, num_workers=1)
  builder.clips_per_class = {'train': train, 'validate': validate}
  builders.build(builder, os.path.join(data_dir, 'synthetic_av_raw'))
  # Opened again: a builder made before the data existed does not see its splits.
  splits = builders.get_builder('synthetic_av', data_dir).info.splits
  print(f'complete={builders.is_complete(builder)} train={splits["train"].num_examples}')
