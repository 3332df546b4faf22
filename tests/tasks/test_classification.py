"""The classification task's AVS wiring: DropPathway gating and the authors' pair filter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avsf_jax import experiment, tasks
from avsf_jax.input import fake
from avsf_jax.tasks import classification
from tests import helpers


def test_pair_mask_filter_duplicates_drops_silent_constant_and_identical_pairs():
  config = helpers.tiny_config()
  rng = np.random.default_rng(0)
  audio = rng.standard_normal((4, 8, 4, 1)).astype(np.float32)
  negative = rng.standard_normal((4, 8, 4, 1)).astype(np.float32)
  audio[1] = 0.0  # silent positive: no variance
  negative[2] = audio[2]  # the negative is the same sound
  batch = {'audio': jnp.asarray(audio), 'has_audio': jnp.array([1.0, 1.0, 1.0, 0.0])}
  mask = classification.avs_pair_mask(batch, jnp.asarray(negative), jnp.ones(4), config.loss)
  np.testing.assert_array_equal(mask, [1.0, 0.0, 0.0, 0.0])  # clip 3 has no audio track
  config.loss.avs_pair_filter = 'energy'
  energy = classification.avs_pair_mask(batch, jnp.asarray(negative), jnp.ones(4), config.loss)
  assert energy[2] == 1.0  # the earlier rule keeps an identical negative (its hinge goes later)
  config.loss.avs_pair_filter = 'nope'
  with pytest.raises(ValueError, match='avs_pair_filter'):
    classification.avs_pair_mask(batch, jnp.asarray(negative), jnp.ones(4), config.loss)


@pytest.fixture(scope='module')
def tiny_task():
  config = helpers.tiny_config()
  info = fake.dataset_info(config)
  task = tasks.create(config, info)
  model = task.build_model()
  variables = jax.jit(task.init_variables, static_argnums=0)(model, jax.random.key(0))
  batch = {k: jnp.asarray(v) for k, v in next(fake.make_train_iterator(config, seed=0)).items()}
  return config, task, model, variables, batch


@pytest.mark.slow
@pytest.mark.parametrize('rate', [0.0, 1.0])
def test_avs_loss_counts_later_junctions_only_when_drop_pathway_dropped_audio(tiny_task, rate):
  """Fusion at res3+res4: res3's loss always counts; res4's and pool5's only on steps whose
  audio laterals were dropped (rate 1), never when audio was fused (rate 0)."""
  config, task, model, variables, batch = tiny_task
  model = model.clone(drop_pathway_rate=rate)
  _, (_, metrics) = jax.jit(task.loss, static_argnums=0)(
    model, variables['params'], variables['batch_stats'], batch, jax.random.key(1), jnp.int32(0)
  )
  assert tuple(model.audio_fusion_junctions) == ('res3', 'res4')
  assert float(metrics['avs_loss_res3']) > 0
  later = float(metrics['avs_loss_res4']) + float(metrics['avs_loss_pool5'])
  assert (later > 0) == (rate == 1.0)
  total = sum(float(metrics[f'avs_loss_{j}']) for j in ('res3', 'res4', 'pool5'))
  assert float(metrics['avs_loss']) == pytest.approx(total, rel=1e-6)


def test_experiment_builds_the_task_named_by_the_config():
  config = helpers.tiny_config()
  ex = experiment.Experiment(config)
  assert isinstance(ex.task, classification.Classification)
  config.task = 'nope'
  with pytest.raises(ValueError, match="config.task='nope'"):
    tasks.create(config, ex.info)


def test_precise_bn_with_drop_pathway_is_an_option():
  """With `evals.precise_bn_drop_pathway` (the default, the authors' train-mode
  recomputation) the statistics pass keeps the model's DropPathway rate and draws it from a
  key that depends on the batch; without it, DropPathway is off (audio always fused)."""
  config = helpers.tiny_config()
  config.evals.precise_bn_drop_pathway = False
  task = tasks.create(config, fake.dataset_info(config))
  model = task.build_model()
  assert model.drop_pathway_rate > 0
  off = task.statistics_model(model)
  assert off.drop_pathway_rate == 0.0 and off.bn_momentum == 0.0

  class Recorder:
    drop_pathway_rate = model.drop_pathway_rate

    def clone(self, **kwargs):
      assert kwargs == {'bn_momentum': 0.0}  # the rate is kept
      return self

    def apply(self, variables, inputs, *, train, rngs, mutable):
      self.key = rngs['drop_pathway']
      return None, {}

  config.evals.precise_bn_drop_pathway = True
  recorder = Recorder()
  on = task.statistics_model(recorder)
  keys = []
  for value in (1.0, 2.0, 1.0):
    on.apply({}, {'slow': jnp.full((2, 3), value)}, train=True, rngs={}, mutable=['batch_stats'])
    keys.append(jax.random.key_data(recorder.key))
  assert not np.array_equal(keys[0], keys[1]) and np.array_equal(keys[0], keys[2])
