"""`checkpointing.Checkpointer` saves and restores the evaluation's BN statistics beside the
train state, and a model without BatchNorm (empty statistics) saves without them."""

import jax
import numpy as np

from avsf_jax import checkpointing


def _abstract(tree):
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _save_and_restore(workdir, batch_stats, eval_batch_stats):
  params = {'dense': {'kernel': np.arange(6, dtype=np.float32).reshape(2, 3)}}
  state = {'params': params, 'batch_stats': batch_stats, 'step': np.int32(7)}
  checkpointer = checkpointing.Checkpointer(str(workdir))
  checkpointer.save(7, state, eval_batch_stats=eval_batch_stats)
  checkpointer.close()
  checkpointer = checkpointing.Checkpointer(str(workdir))
  abstract = _abstract({'params': params, 'batch_stats': batch_stats})
  variables, has_stats = checkpointer.restore_variables(7, abstract)
  checkpointer.close()
  return variables, has_stats


def test_empty_eval_batch_stats_are_not_saved(tmp_path):
  """A model without BatchNorm: orbax refuses an empty tree, so the item is left out."""
  variables, has_stats = _save_and_restore(tmp_path / 'run', {}, {})
  assert not has_stats
  assert not (tmp_path / 'run' / 'checkpoints' / '7' / checkpointing.EVAL_STATS).exists()
  np.testing.assert_array_equal(
    variables['params']['dense']['kernel'], np.arange(6, dtype=np.float32).reshape(2, 3)
  )
  assert jax.tree.leaves(variables['batch_stats']) == []


def test_eval_batch_stats_replace_the_train_state_ones(tmp_path):
  train_stats = {'bn': {'mean': np.zeros(3, np.float32)}}
  eval_stats = {'bn': {'mean': np.asarray([1.0, 2.0, 3.0], np.float32)}}
  variables, has_stats = _save_and_restore(tmp_path / 'run', train_stats, eval_stats)
  assert has_stats
  np.testing.assert_array_equal(variables['batch_stats']['bn']['mean'], [1.0, 2.0, 3.0])
