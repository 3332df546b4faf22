"""The training pipeline on the tf.data service: TF ops only, the local pipeline's examples.

An in-process service runs every function of the process, Python ones included, so a test of
delivery alone would pass for a graph that a remote worker cannot run. The tests therefore
check the graph itself (no Python ops; the local ArrayRecord graph has them, so the check can
fail), and that the service delivers exactly the batches of that graph run locally, whose
examples are the local pipeline's, value for value.
"""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from avsf_jax import experiment
from avsf_jax.input import pipeline, service
from tests import helpers
from tests.input import test_pipeline


def _examples(batches):
  """Each example of `batches` as a tuple of its arrays' bytes, sorted (a multiset)."""
  rows = []
  for batch in batches:
    keys = sorted(batch)
    for i in range(len(batch[keys[0]])):
      rows.append(tuple((k, batch[k][i].tobytes()) for k in keys))
  return sorted(rows)


@pytest.fixture(scope='module')
def config(kinetics_prepared):
  # Batch 1 over 11 steps is exactly epoch 0 of the 11 training examples.
  return test_pipeline._config(kinetics_prepared[0], batch_size=1)


def test_service_graph_holds_no_python_ops(config):
  local = pipeline.make_train_dataset(config, seed=0)
  assert service.PYTHON_OPS & service.graph_ops(local)  # ArrayRecord reads: numpy_function
  remote = service.make_train_dataset(config, seed=0)
  assert not service.PYTHON_OPS & service.graph_ops(remote)
  assert {'ReadFile', 'RandomIndexShuffle', 'DecodeAndCropJpeg'} <= service.graph_ops(remote)
  service.check_serializable(remote)
  with pytest.raises(ValueError, match='PyFunc'):
    service.check_serializable(local)


@pytest.mark.slow
def test_one_epoch_holds_the_local_pipelines_examples(config, kinetics_prepared):
  size = pipeline.dataset_info(config).num_train_examples
  local = list(pipeline.make_train_dataset(config, seed=5).take(size).as_numpy_iterator())
  files = list(service.make_train_dataset(config, seed=5, num_steps=size).as_numpy_iterator())
  assert len(files) == size
  assert _examples(files) == _examples(local)  # bit-identical examples, another order
  labels = [int(b['label'][0]) for b in files]
  assert labels != [int(b['label'][0]) for b in local]  # index_shuffle, not numpy's order
  again = service.make_train_dataset(config, seed=5, start_step=4, num_steps=3)
  for a, b in zip(files[4:7], again.as_numpy_iterator()):
    np.testing.assert_array_equal(a['fast'], b['fast'])


@pytest.mark.slow
def test_dispatcher_and_two_workers_in_another_process_deliver_the_local_batches(config):
  """The workers run in a process of their own that imports TensorFlow only, as on a CPU host:
  a graph with Python ops would fail there."""
  config = test_pipeline._config(config.input.data_dir, batch_size=2)
  dispatcher = tf.data.experimental.service.DispatchServer()
  address = dispatcher.target.split('://')[1]
  command = [sys.executable, '-m', 'avsf_jax.input.service_servers', 'worker']
  command += [f'--dispatcher={address}', '--count=2']
  env = helpers.subprocess_env('', TF_CPP_MIN_LOG_LEVEL='2')
  env['PYTHONPATH'] = str(pathlib.Path(__file__).resolve().parents[2])
  workers = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
  try:
    assert 'worker(s) registered' in workers.stdout.readline()
    ds = service.make_train_dataset(config, seed=2, num_steps=6)
    local = list(ds.as_numpy_iterator())
    served = list(service.distribute(ds, address).as_numpy_iterator())
  finally:
    workers.kill()
    workers.wait()
  assert len(served) == 6
  # Each delivered batch is one whole local batch (steps may arrive out of order).
  as_bytes = lambda b: tuple((k, b[k].tobytes()) for k in sorted(b))
  assert sorted(map(as_bytes, served)) == sorted(map(as_bytes, local))


def test_the_address_field_selects_the_service_source(config):
  config = test_pipeline._config(config.input.data_dir)
  assert experiment.data_source(config) is pipeline
  config.input.tf_data_service = 'localhost:5050'
  assert experiment.data_source(config) is service
