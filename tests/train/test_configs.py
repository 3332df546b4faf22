"""Every config file and variant loads, has the training sections, and builds (shapes only)."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import pytest

from avsf_jax import config_lib, models, optim

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / 'configs'
VARIANTS = (
  [
    ('kinetics_r50.py', v)
    for v in (
      'avslowfast_4x16',
      'avslowfast_8x8',
      'slowfast_4x16',
      'slowfast_8x8',
      'slow_only_4x16',
      'fast_only_4x16',
      'audio_only',
    )
  ]
  + [
    ('kinetics_r101.py', v)
    for v in ('avslowfast_8x8', 'slowfast_8x8', 'slowfast_16x8', 'slowfast_16x8_nl')
  ]
  + [('demo.py', 'avslowfast'), ('demo.py', 'slowfast')]
)


def _load(name: str, variant: str):
  spec = importlib.util.spec_from_file_location(name[:-3], CONFIGS / name)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


@pytest.mark.slow
@pytest.mark.parametrize('name,variant', VARIANTS, ids=[f'{n}:{v}' for n, v in VARIANTS])
def test_config_loads_and_builds(name, variant):
  config = _load(name, variant)
  for section in ('model', 'input', 'audio', 'optim', 'loss', 'evals', 'mesh', 'checkpoint'):
    assert section in config
  model = models.build_model(config.model)
  inputs = models.example_inputs(
    model,
    batch=2,
    num_frames=config.input.num_frames,
    crop_size=config.input.crop_size,
    audio_frames=config.audio.num_frames,
    mel_bins=config.audio.num_mel_bins,
  )
  init = lambda rng: model.init({'params': rng, 'dropout': rng}, inputs, train=False)
  variables = jax.eval_shape(init, jax.random.PRNGKey(0))
  (logits, _) = jax.eval_shape(lambda v: model.apply(v, inputs, train=False), variables)
  assert logits.shape == (2, config.model.num_classes)
  assert logits.dtype == jnp.float32
  schedule = optim.learning_rate_schedule(
    config.optim, steps_per_epoch=10.0, total_steps=100, peak=1.0
  )
  tx = optim.make_optimizer(config.optim, schedule)
  jax.eval_shape(tx.init, variables['params'])


def test_full_size_configs_follow_the_paper_recipe():
  config = _load('kinetics_r50.py', 'avslowfast_4x16')
  assert config.optim.num_epochs == 256 and config.optim.momentum == 0.9
  assert optim.peak_learning_rate(config.optim, config.input.batch_size) == pytest.approx(1.6)
  assert config.loss.avs_margin == 0.99 and config.loss.avs_weight == 1.0
  assert _load('kinetics_r50.py', 'avslowfast_8x8').optim.num_epochs == 196


def test_paper_configs_follow_the_reference_recipe():
  """Issue 12's items as defaults of the paper configs (docs/models.md, reference recipe)."""
  av = _load('kinetics_r50.py', 'avslowfast_4x16')
  assert av.optim.schedule == 'cosine' and av.optim.warmup_start_factor == 0.1
  assert av.optim.nesterov
  assert av.loss.avs_gate == 'drop_pathway' and av.loss.avs_pair_filter == 'filter_duplicates'
  assert av.model.drop_pathway_mode == 'per_group' and av.model.avs_inputs == 'fusion'
  assert av.model.head_pooling == 'window' and av.model.head_position_average == 'softmax'
  assert av.input.view_starts == 'pyslowfast'
  assert not av.input.keep_no_audio  # item 5: audio-visual training skips silent videos
  assert _load('kinetics_r50.py', 'slowfast_4x16').input.keep_no_audio
  assert av.evals.precise_bn_drop_pathway  # item 9: train-mode statistics, DropPathway on
  for variant, parent in (('slowfast_16x8', 'slowfast_8x8'), ('slowfast_16x8_nl', 'slowfast_16x8')):
    config = _load('kinetics_r101.py', variant)
    assert config.init_from_variant.endswith(f':{parent}') and config.optim.num_epochs == 98
    with pytest.raises(config_lib.ConfigError, match='init_from=EXPORT_DIR is required'):
      config_lib.validate(config)
    config.init_from = '/some/export'
    config_lib.validate(config)


def test_contradictory_overrides_name_both_fields():
  config = _load('kinetics_r50.py', 'avslowfast_4x16')
  config.input.crop_size = 256
  with pytest.raises(
    config_lib.ConfigError, match=r'model.head_window=\(7, 7\).*input.crop_size=256'
  ):
    config_lib.validate(config)
  config = _load('kinetics_r50.py', 'avslowfast_4x16')
  config.audio.num_frames = 126
  with pytest.raises(config_lib.ConfigError, match='audio.num_frames=126.*input.num_frames=4'):
    config_lib.validate(config)
  config = _load('demo.py', 'avslowfast')
  config.model.bn_group_size = 3
  with pytest.raises(config_lib.ConfigError, match='model.bn_group_size=3.*input.batch_size=16'):
    config_lib.validate(config, devices=2)


def test_unknown_variant_is_an_error():
  with pytest.raises(ValueError, match='unknown variant'):
    _load('demo.py', 'nope')
