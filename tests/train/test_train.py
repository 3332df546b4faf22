"""The training job end to end on 8 fake CPU devices: results, checkpoints, resume, failures."""

import json
import signal

import jax
import numpy as np
import pytest

from avsf_jax import mesh as mesh_lib
from avsf_jax import train
from avsf_jax.input import fake as fake_data
from tests import helpers
from tests.helpers import (
  finished_checkpoints,
  load_checkpoint,
  start_main,
  subprocess_env,
  wait_for,
)


@pytest.fixture(scope='module')
def reference_run(tmp_path_factory):
  """The tiny config trained uninterrupted: 6 steps, checkpoints every 2."""
  workdir = tmp_path_factory.mktemp('reference')
  results = train.train_and_evaluate(helpers.tiny_config(), str(workdir))
  return workdir, results


@pytest.mark.slow
def test_end_to_end_on_eight_devices(reference_run):
  workdir, results = reference_run
  assert jax.device_count() == 8
  saved = json.loads((workdir / 'eval_results.json').read_text())
  assert saved['num_examples'] == 12 and saved['step'] == 6
  assert 0.0 <= saved['top1'] <= saved['top5'] <= 100.0
  assert saved['top1'] > 25.0  # above chance on the 4 learnable fake classes
  assert len(saved['per_class_top1']) == 4
  assert saved['top1'] == results['top1']
  assert finished_checkpoints(workdir) == [2, 4, 6]
  config = json.loads((workdir / 'config.json').read_text())
  assert config['input']['dataset'] == 'fake'
  assert list(workdir.glob('events.out.tfevents.*'))
  assert (workdir / 'per_class_top1.png').stat().st_size > 1000


@pytest.mark.slow
def test_checkpoint_holds_a_finite_state_at_its_step(reference_run):
  workdir, _ = reference_run
  state = load_checkpoint(workdir, 4)
  assert int(state['step']) == 4
  leaves = jax.tree.leaves(state['params'])
  assert leaves and all(np.isfinite(x).all() for x in leaves)
  assert not np.array_equal(
    jax.tree.leaves(state['params'])[0], jax.tree.leaves(load_checkpoint(workdir, 2)['params'])[0]
  )


@pytest.mark.slow
def test_resume_after_sigkill_is_bitwise_exact(reference_run, tmp_path, compilation_cache):
  reference, _ = reference_run
  workdir = tmp_path / 'killed'
  env = subprocess_env(compilation_cache)
  process = start_main(workdir, tmp_path / 'killed.log', env, '--config.fake_data.delay_s=1.5')
  try:
    wait_for(lambda: 2 in finished_checkpoints(workdir), timeout=240, process=process)
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait()
  assert 6 not in finished_checkpoints(workdir)  # it really was cut short
  # --verbose: library logs (the resume line) on the console too, not only in WORKDIR/log.txt.
  resumed = start_main(workdir, tmp_path / 'resumed.log', env, '--verbose')
  assert resumed.wait(timeout=240) == 0, (tmp_path / 'resumed.log').read_text()[-3000:]
  log = (tmp_path / 'resumed.log').read_text()
  assert 'Resuming from checkpoint' in log
  got, want = load_checkpoint(workdir, 6), load_checkpoint(reference, 6)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(a, b)
  assert jax.tree.structure(got) == jax.tree.structure(want)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, compilation_cache):
  workdir = tmp_path / 'preempted'
  log_path = tmp_path / 'preempted.log'
  env = subprocess_env(compilation_cache)
  process = start_main(
    workdir,
    log_path,
    env,
    '--config.fake_data.delay_s=1.5',
    '--config.checkpoint.every_steps=1000',
    '--verbose',  # the metric lines (library logs) on the console too
  )
  try:
    wait_for(lambda: '] train/accuracy' in log_path.read_text(), timeout=240, process=process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0, log_path.read_text()[-3000:]
  finally:
    if process.poll() is None:
      process.kill()
  saved = finished_checkpoints(workdir)
  assert len(saved) == 1 and 1 <= saved[0] < 6
  assert int(load_checkpoint(workdir, saved[0])['step']) == saved[0]
  assert 'Preemption notice: saved checkpoint' in log_path.read_text()
  assert not (workdir / 'eval_results.json').exists()


@pytest.mark.slow
def test_nan_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(
  tiny_config, tmp_path
):
  tiny_config.fake_data.nan_at_step = 3  # the batch of the 4th step
  tiny_config.logging.every_steps = 3
  with pytest.raises(train.NonFiniteError, match='training step 4'):
    train.train_and_evaluate(tiny_config, str(tmp_path))
  assert finished_checkpoints(tmp_path) == [2]
  assert not (tmp_path / 'eval_results.json').exists()


def test_fsdp_shards_large_leaves_over_data(tiny_config):
  tiny_config.mesh.param_sharding = 'fsdp'
  tiny_config.mesh.fsdp_min_size = 1024
  trainer = train.Trainer(tiny_config)
  specs = [s.spec for s in jax.tree.leaves(trainer.state_sharding.params)]
  shapes = [x.shape for x in jax.tree.leaves(trainer.abstract_state.params)]
  assert any(mesh_lib.DATA in spec for spec in specs)
  for spec, shape in zip(specs, shapes):
    if mesh_lib.DATA in spec:
      assert shape[list(spec).index(mesh_lib.DATA)] % 8 == 0
    elif np.prod(shape) >= 1024:
      assert all(d % 8 for d in shape)


def _abstract_step(config):
  """Traces (without compiling) one train step of `config` on a fake batch."""
  trainer = train.Trainer(config)
  batch = next(fake_data.make_train_iterator(config, seed=0))
  abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
  return jax.eval_shape(
    trainer.train_step, trainer.abstract_state, abstract_batch, trainer.train_rng
  )


@pytest.mark.slow
def test_train_step_handles_several_heads(tiny_config):
  with tiny_config.ignore_type():
    tiny_config.model.num_classes = {'verb': 3, 'noun': 5}
  state, step_metrics = _abstract_step(tiny_config)
  assert {'accuracy_verb', 'accuracy_noun', 'classification_loss_noun', 'avs_loss'} <= set(
    step_metrics
  )
  assert state.params['head']['fc_noun']['kernel'].shape[-1] == 5


def test_train_step_handles_multi_label(tiny_config):
  tiny_config.fake_data.multi_label = True
  _, step_metrics = _abstract_step(tiny_config)
  assert 'classification_loss' in step_metrics and 'accuracy' not in step_metrics
