"""What the in-memory data sources share (`fake`, `sync_arrays`, `ava_pipeline`, `ltl_data`).

Each builds its batches in numpy from arrays it holds, keyed so that a batch depends only on
(seed, step) and the process: `example_rng` draws a generator from such keys, `process_share`
is one process's slice of a global batch, `stack` turns a list of examples into a batch.
"""

import ml_collections
import numpy as np


def process_share(config: ml_collections.ConfigDict, field: str, process_count: int) -> int:
  """`config.input.<field>` (a global batch size) divided over `process_count` processes."""
  global_batch = config.input[field]
  if global_batch % process_count:
    raise ValueError(f'input.{field}={global_batch} is not divisible by {process_count} processes')
  return global_batch // process_count


def example_rng(*keys: int) -> np.random.Generator:
  """A generator that depends only on `keys` (non-negative integers)."""
  return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def stack(examples: list[dict]) -> dict[str, np.ndarray]:
  """{key: the examples' values stacked on a new leading axis}."""
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}
