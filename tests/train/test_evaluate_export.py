"""Evaluate and export a trained workdir: same numbers from the checkpoint and the export."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from avsf_jax import evaluate, export, train
from avsf_jax.input import fake as fake_data
from tests import helpers
from tests.helpers import REPO as ROOT
from tests.helpers import TINY_CONFIG, subprocess_env


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A tiny AVSlowFast trained for 6 steps on fake data; (config, workdir, final results)."""
  config = helpers.tiny_config()
  workdir = tmp_path_factory.mktemp('trained')
  results = train.train_and_evaluate(config, str(workdir))
  return config, workdir, results


@pytest.mark.slow
def test_evaluate_reproduces_the_final_evaluation_of_training(trained):
  config, workdir, final = trained
  results, per_video, names = evaluate.evaluate_workdir(config, str(workdir), multi_view=True)
  assert results['top1'] == final['top1'] and results['top5'] == final['top5']
  assert results['per_class_top1'] == pytest.approx(final['per_class_top1'], nan_ok=True)
  assert results['num_examples'] == config.fake_data.num_eval_examples
  np.testing.assert_array_equal(np.sort(per_video['video_index']), np.arange(12))
  assert list(names) == [f'class_{i}' for i in range(4)]


@pytest.mark.slow
def test_export_and_evaluation_read_no_training_data(trained, tmp_path, monkeypatch):
  """The final checkpoint carries its precise-BN statistics: exporting it and evaluating the
  export reproduce the final numbers without reading a single training example."""
  config, workdir, final = trained

  def no_training_data(*args, **kwargs):
    raise AssertionError('the training split was read')

  monkeypatch.setattr(fake_data, 'make_train_iterator', no_training_data)
  out = tmp_path / 'export'
  export.export_workdir(config, str(workdir), str(out))
  results, _, _ = evaluate.evaluate_export(config, str(out), multi_view=True)
  assert results['top1'] == final['top1'] and results['per_class_top1'] == pytest.approx(
    final['per_class_top1'], nan_ok=True
  )
  workdir_results, _, _ = evaluate.evaluate_workdir(config, str(workdir), multi_view=True)
  assert workdir_results['top1'] == final['top1']


@pytest.mark.slow
def test_export_predicts_like_the_checkpoint_and_evaluates_identically(trained, tmp_path):
  config, workdir, final = trained
  out = tmp_path / 'export'
  export.export_workdir(config, str(workdir), str(out))
  loaded = export.load(out)
  assert loaded.input_spec == {
    'slow': [2, 32, 32, 3],
    'fast': [8, 32, 32, 3],
    'audio': [32, 16, 1],
  }
  # Same batch through the training code and through the serialized function.
  trainer = train.Trainer(config)
  batch = next(fake_data.make_eval_iterator(config, multi_view=False))
  inputs = {k: batch[k][:, 0] for k in loaded.input_spec}
  variables = jax.tree.map(np.asarray, loaded.variables)
  ours = trainer.experiment.model.apply(variables, inputs, train=False)[0]
  np.testing.assert_allclose(loaded.predict(inputs), ours, rtol=1e-5, atol=1e-5)
  # The export's numbers are the workdir's (it holds the final evaluation's BN statistics).
  results, _, _ = evaluate.evaluate_export(config, str(out), multi_view=True)
  assert results['top1'] == final['top1'] and results['top5'] == final['top5']


@pytest.mark.slow
def test_export_reloads_in_a_fresh_process_without_training_code(
  trained, tmp_path, compilation_cache
):
  config, workdir, _ = trained
  out = tmp_path / 'export'
  export.export_workdir(config, str(workdir), str(out))
  code = (
    'import sys, numpy as np; from avsf_jax import export; m = export.load(sys.argv[1]); '
    'b = {k: np.zeros((3, *s), np.float32) for k, s in m.input_spec.items()}; '
    'print(m.predict(b).shape, len(m.class_names), '
    'any(k.startswith(("avsf_jax.models", "avsf_jax.train", "tensorflow")) for k in sys.modules))'
  )
  result = subprocess.run(
    [sys.executable, '-c', code, str(out)],
    cwd=ROOT,
    env=subprocess_env(compilation_cache, devices=1),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().splitlines()[-1] == '(3, 4) 4 False'


@pytest.mark.slow
def test_interrupted_export_leaves_nothing_behind(trained, tmp_path, monkeypatch):
  config, workdir, _ = trained
  out = tmp_path / 'export'

  def fail(*args, **kwargs):
    raise KeyboardInterrupt('interrupted while writing')

  monkeypatch.setattr(ocp.StandardCheckpointer, 'wait_until_finished', fail)
  with pytest.raises(KeyboardInterrupt):
    export.export_workdir(config, str(workdir), str(out))
  assert list(tmp_path.iterdir()) == []
  monkeypatch.undo()
  export.export_workdir(config, str(workdir), str(out))
  with pytest.raises(export.ExportError, match='exists'):
    export.export_workdir(config, str(workdir), str(out))
  before = json.loads((out / 'metadata.json').read_text())
  export.export_workdir(config, str(workdir), str(out), overwrite=True)
  after = json.loads((out / 'metadata.json').read_text())
  # The same export again (the recorded sha256 differ: orbax's metadata files carry
  # timestamps and serialized functions are not byte-stable; what they describe does not).
  assert 'predict.jaxexport' in after['sha256'] and 'predict.jaxexport' in before['sha256']
  assert {k: v for k, v in after.items() if k != 'sha256'} == {
    k: v for k, v in before.items() if k != 'sha256'
  }


@pytest.mark.slow
def test_command_lines_write_results_scores_plot_and_export(trained, tmp_path, compilation_cache):
  _, workdir, final = trained
  env = subprocess_env(compilation_cache, devices=1)
  output = tmp_path / 'results.json'
  evaluation = subprocess.run(
    [
      sys.executable,
      '-m',
      'avsf_jax.evaluate',
      f'--config={TINY_CONFIG}',
      f'--workdir={workdir}',
      f'--output={output}',
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert evaluation.returncode == 0, evaluation.stderr[-3000:]
  results = json.loads(output.read_text())
  assert results['top1'] == final['top1'] and results['views'] == 'multi'
  scores = np.load(tmp_path / 'results.scores.npz')
  assert scores['scores_label'].shape == (12, 4)
  assert (tmp_path / 'results.per_class.png').read_bytes()[:4] == b'\x89PNG'
  # `export` without --config uses the config.json that training saved.
  exported = subprocess.run(
    [sys.executable, '-m', 'avsf_jax.export', f'--workdir={workdir}', f'--output={tmp_path / "e"}'],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert exported.returncode == 0, exported.stderr[-3000:]
  assert pathlib.Path(tmp_path / 'e' / 'predict.jaxexport').is_file()


@pytest.mark.slow
def test_extract_features_per_video_and_view(trained, tmp_path):
  config, workdir, _ = trained
  from avsf_jax.tools import extract_features  # noqa: PLC0415

  out = tmp_path / 'export'
  export.export_workdir(config, str(workdir), str(out))
  variables = export.load(out).variables
  feats = extract_features.extract(config, variables, multi_view=True, stage='slow_res4')
  views = config.input.num_temporal_views * config.input.num_spatial_views
  assert feats['slow'].shape == (12, views, 256)  # slow_width 8 -> res5 has 8 * 32 channels
  assert feats['fast'].shape == (12, views, 64)
  assert feats['audio'].shape == (12, views, 128)
  assert feats['slow_res4'].shape == (12, views, 128)
  np.testing.assert_array_equal(np.sort(feats['video_index']), np.arange(12))
  # The classifier applied to the pooled features gives the logits: they are what it sees.
  fc = variables['params']['head']['fc']
  pooled = np.concatenate([feats['slow'], feats['fast'], feats['audio']], axis=-1)
  np.testing.assert_allclose(pooled @ fc['kernel'] + fc['bias'], feats['logits'], atol=1e-4)


@pytest.mark.slow
def test_fine_tuning_from_an_export_loads_matching_tensors(trained, tmp_path):
  config, workdir, _ = trained
  out = tmp_path / 'export'
  export.export_workdir(config, str(workdir), str(out))
  pretrained = export.load(out).variables
  fine_tune = config.copy_and_resolve_references()
  fine_tune.init_from = str(out)
  fine_tune.model.num_classes = 3
  trainer = train.Trainer(fine_tune)
  state = trainer.initial_state()
  np.testing.assert_array_equal(
    state.params['slow_res3']['block0']['conv_b']['conv']['kernel'],
    pretrained['params']['slow_res3']['block0']['conv_b']['conv']['kernel'],
  )
  np.testing.assert_array_equal(
    state.batch_stats['audio_stem_bn']['var'], pretrained['batch_stats']['audio_stem_bn']['var']
  )
  assert state.params['head']['fc']['kernel'].shape[-1] == 3
  assert (
    'params/head/fc/kernel' in trainer.init_report and 'freshly initialised' in trainer.init_report
  )
