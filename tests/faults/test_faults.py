"""Fault injection: every loader of a damaged file names the file and the fault in one line,
modifies nothing, and fails (or recovers, where recovery is defined).

One table, `CASES`: (entry point, fault) -> expected outcome. Most cases run in-process
against the library functions behind each command line; `test_command_lines_*` run a few as
subprocesses to check the one-line exit. One trained tiny workdir (6 steps, checkpoints 2, 4
and 6) and its export are shared by the module.
"""

import os
import pathlib
import pickle
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch

from avsf_jax import checkpointing, export, storage, train
from avsf_jax.interop import checkpoint_io, convert
from avsf_jax.models import weights
from avsf_jax.tools import convert_checkpoint, log_mel
from tests import helpers
from tests.faults import faults as F

# Fault injection trains and checkpoints small runs in module fixtures (a minute on 2 cores):
# the whole file is in `make test` and `make test-faults`, not in the fast tier.
pytestmark = pytest.mark.slow

# What a message must say for each fault (besides the file's path).
SAYS = {
  'truncated': r'truncat|damaged|corrupt|cannot be restored|not a readable|Data corruption',
  'zero_bytes': r'empty \(zero bytes\)|truncat|damaged|cannot be restored',
  'flipped': r'corrupt|damaged|checksum|cannot be restored|not a readable|not UTF-8|no audio',
  'text': r'not a readable|another format|damaged|not readable JSON|not a jax.export|'
  r'cannot be restored|no audio',
  'png': r'not a readable|another format|damaged|not UTF-8|not a jax.export|cannot be restored|'
  r'no audio',
  'missing': r'missing|no such file|not found|No such file|cannot be restored',
  'permission': r'permission denied|Permission denied',
  'other_model': r'another model|does not match|shape|expected \(N',
  # NaN written into a saved file changes its recorded sha256 first (checkpoints and exports
  # record them): either message names the fault.
  'nan': r'NaN or Inf|sha256 differs',
}


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """(config, workdir, export_dir): the tiny config trained 6 steps, and its export."""
  config = helpers.tiny_config()
  root = tmp_path_factory.mktemp('faults')
  workdir = root / 'run'
  train.train_and_evaluate(config, str(workdir))
  export.export_workdir(config, str(workdir), str(root / 'export'))
  return config, workdir, root / 'export'


@pytest.fixture(scope='module')
def trainer(trained):
  return train.Trainer(trained[0])


def _largest(folder: pathlib.Path) -> pathlib.Path:
  return max((p for p in folder.rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)


def _check_message(message: str, path, fault: str) -> None:
  assert '\n' not in message.strip() or fault == 'all', message
  assert str(path) in message, f'{path} not named in: {message}'
  assert re.search(SAYS[fault], message), f'{fault!r} not said in: {message}'


# -- checkpoints: resume, evaluate --workdir, export -------------------------------------------

CHECKPOINT_FAULTS = ('truncated', 'zero_bytes', 'flipped', 'text', 'png', 'missing', 'permission')


def _damaged_workdir(trained, tmp_path, fault):
  """A copy of the trained workdir whose newest checkpoint (6) has `fault`; (workdir, file)."""
  workdir = tmp_path / 'run'
  shutil.copytree(trained[1], workdir)
  item = workdir / 'checkpoints' / '6' / 'default'
  target = item / '_METADATA' if fault == 'permission' else _largest(item)
  F.inject(target, fault)
  return workdir, target


@pytest.mark.parametrize('fault', CHECKPOINT_FAULTS)
@pytest.mark.parametrize('entry', ['resume', 'evaluate_workdir'])
def test_a_damaged_newest_checkpoint_is_skipped(trained, trainer, tmp_path, capsys, entry, fault):
  workdir, target = _damaged_workdir(trained, tmp_path, fault)
  before = F.hashes(workdir)
  with F.deny(target if fault == 'permission' else None):
    if entry == 'resume':
      checkpointer = checkpointing.Checkpointer(str(workdir))
      step, state = trainer.restore(checkpointer)
      checkpointer.close()
      assert int(state.step) == 4
    else:
      _, step = trainer.experiment.restore(str(workdir))
  assert step == 4  # recovered: the one before it
  message = capsys.readouterr().out
  assert message.count('\n') == 1 and message.startswith('warning: checkpoint 6 (')
  _check_message(message, workdir / 'checkpoints' / '6', fault)
  assert F.hashes(workdir) == before


def test_nan_in_the_newest_checkpoint_is_skipped(trained, trainer, tmp_path, capsys):
  workdir = tmp_path / 'run'
  shutil.copytree(trained[1], workdir)
  item = workdir / 'checkpoints' / '6' / 'default'
  state = ocp.PyTreeCheckpointer().restore(item)
  leaves, treedef = jax.tree.flatten(state['params'])
  leaves[0] = np.full_like(np.asarray(leaves[0]), np.nan)
  state['params'] = jax.tree.unflatten(treedef, leaves)
  shutil.rmtree(item)
  ocp.PyTreeCheckpointer().save(item, state)
  before = F.hashes(workdir)
  _, step = trainer.experiment.restore(str(workdir))
  assert step == 4
  _check_message(capsys.readouterr().out, item, 'nan')
  assert F.hashes(workdir) == before


def test_a_checkpoint_of_another_model_lists_every_checkpoint(trained, tmp_path):
  """Restoring with another model's config: every checkpoint fails on shape; none is used."""
  config = helpers.tiny_config()
  config.model.slow_width = 16
  other = train.Trainer(config).experiment
  before = F.hashes(trained[1])
  with pytest.raises(checkpointing.CheckpointError) as error:
    other.restore(str(trained[1]))
  message = str(error.value)
  for step in (2, 4, 6):
    assert f'checkpoint {step} (' in message
  assert re.search(SAYS['other_model'], message), message
  assert F.hashes(trained[1]) == before


def test_an_explicit_step_that_is_damaged_is_named(trained, trainer, tmp_path):
  workdir, target = _damaged_workdir(trained, tmp_path, 'flipped')
  with pytest.raises(checkpointing.CheckpointError) as error:
    trainer.experiment.restore(str(workdir), step=6)
  _check_message(str(error.value), workdir / 'checkpoints' / '6', 'flipped')
  assert trainer.experiment.restore(str(workdir), step=4)[1] == 4  # --step picks another


def test_export_of_a_workdir_with_a_damaged_newest_checkpoint_uses_the_one_before(
  trained, tmp_path, capsys
):
  workdir, _ = _damaged_workdir(trained, tmp_path, 'flipped')
  before = F.hashes(workdir)
  out = export.export_workdir(trained[0], str(workdir), str(tmp_path / 'export'))
  assert export.load(out).metadata['step'] == 4
  assert 'warning: checkpoint 6 (' in capsys.readouterr().out
  assert F.hashes(workdir) == before


def test_resume_past_a_damaged_checkpoint_ends_like_a_normal_resume(trained, tmp_path, capsys):
  """Damaged 6 -> resumes from 4, trains 4..6, saves 6 again (the damaged one moved aside
  unchanged); the parameters equal a run that resumed from 4 normally, and the original."""
  config = trained[0]
  normal = tmp_path / 'normal'
  shutil.copytree(trained[1], normal)
  shutil.rmtree(normal / 'checkpoints' / '6')
  train.train_and_evaluate(config, str(normal))
  workdir, target = _damaged_workdir(trained, tmp_path, 'flipped')
  damaged_bytes = F.hashes(workdir / 'checkpoints' / '6')
  train.train_and_evaluate(config, str(workdir))
  out = capsys.readouterr().out
  assert 'warning: checkpoint 6 (' in out and 'moved it to' in out
  kept = workdir / 'corrupt_checkpoints' / '6'
  assert {k.split('/', 1)[1]: v for k, v in F.hashes(kept).items()} == {
    k.split('/', 1)[1]: v for k, v in damaged_bytes.items()
  }
  got = helpers.load_checkpoint(workdir, 6)
  for want in (helpers.load_checkpoint(normal, 6), helpers.load_checkpoint(trained[1], 6)):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      np.testing.assert_array_equal(a, b)


# -- exports: export.load + predict, evaluate --export, init_from -------------------------------

EXPORT_FILES = {
  'predict.jaxexport': F.FAULTS,
  'metadata.json': ('zero_bytes', 'text', 'png', 'missing', 'permission', 'truncated'),
  'variables': ('truncated', 'zero_bytes', 'flipped', 'missing', 'permission'),
}
EXPORT_CASES = [(name, fault) for name, fs in EXPORT_FILES.items() for fault in fs]


def _damaged_export(trained, tmp_path, name, fault):
  out = tmp_path / 'export'
  shutil.copytree(trained[2], out)
  if name == 'variables':
    item = out / 'variables'
    target = item / '_METADATA' if fault == 'permission' else _largest(item)
  else:
    target = out / name
  F.inject(target, fault)
  return out, target


@pytest.mark.parametrize('entry', ['load', 'init_from'])
@pytest.mark.parametrize(('name', 'fault'), EXPORT_CASES)
def test_a_damaged_export_is_refused_naming_the_file(
  trained, trainer, tmp_path, entry, name, fault
):
  out, target = _damaged_export(trained, tmp_path, name, fault)
  before = F.hashes(out)
  with F.deny(target if fault == 'permission' else None), pytest.raises(export.ExportError) as e:
    if entry == 'load':
      export.load(out)
    else:
      weights.load(str(out), trainer.experiment.abstract_variables)
  message = str(e.value)
  if fault == 'missing' and name == 'metadata.json':
    assert f'{out}: not an avsf_jax export (no metadata.json)' == message
  else:
    named = out / 'variables' if name == 'variables' else target
    _check_message(
      message, named, fault if name != 'metadata.json' or fault != 'truncated' else 'text'
    )
  assert F.hashes(out) == before


def _nan_export(trained, tmp_path):
  out = tmp_path / 'export'
  shutil.copytree(trained[2], out)
  variables = ocp.StandardCheckpointer().restore(out / 'variables')
  leaves, treedef = jax.tree.flatten(variables['params'])
  leaves[0] = np.full_like(np.asarray(leaves[0]), np.inf)
  variables['params'] = jax.tree.unflatten(treedef, leaves)
  shutil.rmtree(out / 'variables')
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(out / 'variables', variables)
  checkpointer.wait_until_finished()
  return out


@pytest.mark.parametrize('entry', ['load', 'init_from'])
def test_nan_or_inf_in_an_export_is_refused(trained, trainer, tmp_path, entry):
  out = _nan_export(trained, tmp_path)
  before = F.hashes(out)
  with pytest.raises(export.ExportError) as e:
    if entry == 'load':
      export.load(out)
    else:
      weights.load(str(out), trainer.experiment.abstract_variables)
  _check_message(str(e.value), out / 'variables', 'nan')
  assert F.hashes(out) == before


def test_init_from_an_export_of_another_model_is_refused(trainer, tmp_path):
  out = export.write(
    tmp_path / 'other',
    apply_fn=lambda variables, batch: batch['x'] @ variables['params']['w'],
    variables={'params': {'w': np.ones((3, 2), np.float32)}, 'batch_stats': {}},
    model_config={},
    class_names=['a', 'b'],
    input_spec={'x': [3]},
    preprocessing={},
    platforms=('cpu',),
  )
  with pytest.raises(export.ExportError) as e:
    weights.load(str(out), trainer.experiment.abstract_variables)
  _check_message(str(e.value), out, 'other_model')


@pytest.mark.parametrize('name', ['predict.jaxexport', 'variables'])
def test_flipped_bytes_in_an_export_fail_its_checksum(tmp_path, name):
  """Flipped bytes can leave a file that still parses (a flatbuffer, an uncompressed
  tensorstore chunk): the sha256 recorded in metadata.json catches them."""
  out = export.write(
    tmp_path / 'small',
    apply_fn=lambda variables, batch: batch['x'] @ variables['params']['w'],
    variables={'params': {'w': np.ones((3, 2), np.float32)}, 'batch_stats': {}},
    model_config={},
    class_names=['a', 'b'],
    input_spec={'x': [3]},
    preprocessing={},
    platforms=('cpu',),
  )
  assert export.load(out).predict({'x': np.ones((1, 3))}).shape == (1, 2)
  out = pathlib.Path(out)
  target = out / name if name != 'variables' else _largest(out / 'variables')
  F.inject(target, 'flipped')
  before = F.hashes(out)
  with pytest.raises(export.ExportError) as e:
    export.load(out)
  _check_message(str(e.value), target, 'flipped')
  assert F.hashes(out) == before


def test_evaluate_an_export_of_another_model_is_refused(trained, tmp_path):
  from avsf_jax import evaluate  # noqa: PLC0415

  config = helpers.tiny_config()
  config.input.crop_size = config.input.test_crop_size = 48
  with pytest.raises(export.ExportError) as e:
    evaluate.evaluate_export(config, str(trained[2]), multi_view=False)
  assert re.search(SAYS['other_model'], str(e.value)), str(e.value)


# -- predict: defined results and clear errors ------------------------------------------------


def test_predict_on_bad_batches(trained):
  """NaN in -> NaN out (a defined result: the export computes, it does not validate values);
  integer input -> cast to float32 (defined); wrong rank, wrong shape, a missing key -> an
  ExportError naming the input; a zero batch -> an ExportError (jax.export's symbolic batch
  size is at least 1)."""
  model = export.load(trained[2])
  batch = {k: np.zeros((2, *s), np.float32) for k, s in model.input_spec.items()}
  good = np.asarray(model.predict(batch))
  assert good.shape == (2, 4) and np.isfinite(good).all()
  nan = dict(batch, audio=np.full_like(batch['audio'], np.nan))
  assert np.isnan(np.asarray(model.predict(nan))).all()
  ints = {k: v.astype(np.int32) for k, v in batch.items()}
  np.testing.assert_array_equal(np.asarray(model.predict(ints)), good)
  with pytest.raises(export.ExportError, match=r"batch\['slow'\] has shape \(2, 32, 32, 3\)"):
    model.predict(dict(batch, slow=batch['slow'][:, 0]))
  with pytest.raises(export.ExportError, match=r"lacks \['audio'\]"):
    model.predict({k: v for k, v in batch.items() if k != 'audio'})
  empty = {k: v[:0] for k, v in batch.items()}
  with pytest.raises(export.ExportError, match='empty batch'):
    model.predict(empty)


# -- foreign checkpoints (convert_checkpoint) and class-name files -----------------------------


def _state_dict() -> dict[str, np.ndarray]:
  return {'blocks.0.conv.weight': np.arange(24, dtype=np.float32).reshape(2, 3, 4)}


def _foreign(tmp_path, suffix: str, state=None) -> pathlib.Path:
  state = _state_dict() if state is None else state
  path = tmp_path / f'model{suffix}'
  if suffix == '.pkl':
    path.write_bytes(pickle.dumps({'blobs': state}))
  else:
    torch.save({'model_state': {k: torch.from_numpy(v) for k, v in state.items()}}, path)
  return path


@pytest.mark.parametrize('fault', F.FAULTS)
@pytest.mark.parametrize('suffix', ['.pyth', '.pkl'])
def test_a_damaged_foreign_checkpoint_is_refused(tmp_path, record_property, suffix, fault):
  path = _foreign(tmp_path, suffix)
  F.inject(path, fault)
  before = F.hashes(tmp_path)
  with F.deny(path if fault == 'permission' else None):
    try:
      loaded = checkpoint_io.load_checkpoint(str(path))
    except (storage.FileFault, checkpoint_io.UnsafeCheckpointError) as e:
      _check_message(str(e), path, fault)
    else:
      # Flipped bytes inside raw tensor data of a format without checksums (pickle) load as
      # other numbers: nothing can tell. Anywhere else they must be caught.
      assert fault == 'flipped', loaded
      record_property('outcome', 'defined: loads (no checksum)')
      assert set(loaded) == set(_state_dict())
  assert F.hashes(tmp_path) == before


@pytest.mark.parametrize('suffix', ['.pyth', '.pkl'])
def test_nan_in_a_foreign_checkpoint_is_refused(tmp_path, suffix):
  state = _state_dict()
  state['blocks.0.conv.weight'][0, 0, 0] = np.nan
  path = _foreign(tmp_path, suffix, state)
  with pytest.raises(storage.FileFault) as e:
    checkpoint_io.load_checkpoint(str(path))
  _check_message(str(e.value), path, 'nan')
  assert 'blocks.0.conv.weight' in str(e.value)


def test_a_foreign_checkpoint_of_another_model_is_refused(tmp_path):
  path = _foreign(tmp_path, '.pyth')
  with pytest.raises(convert.ConversionError) as e:
    convert_checkpoint.convert_file(helpers.tiny_config(), 'pytorchvideo', str(path))
  assert str(path) in str(e.value) and 'does not match' in str(e.value)


@pytest.mark.parametrize('fault', ['zero_bytes', 'png', 'missing', 'permission', 'text'])
def test_a_damaged_class_name_file_is_refused(tmp_path, fault):
  path = tmp_path / 'classes.txt'
  path.write_text('a\nb\nc\nd\n')
  F.inject(path, fault)
  before = F.hashes(tmp_path)
  with F.deny(path if fault == 'permission' else None), pytest.raises(storage.FileFault) as e:
    convert_checkpoint.class_names_for(helpers.tiny_config(), str(path))
  says = {'text': r'1 class names for a 4-class model', 'zero_bytes': SAYS['zero_bytes']}
  assert str(path) in str(e.value)
  assert re.search(says.get(fault, SAYS[fault]), str(e.value)), str(e.value)
  assert F.hashes(tmp_path) == before


# -- prepare_dataset: annotation CSVs and class lists ------------------------------------------


@pytest.mark.parametrize('fault', ['zero_bytes', 'text', 'png', 'permission', 'bad_row'])
def test_a_damaged_annotation_csv_is_refused(tmp_path, fault):
  from avsf_jax.input.prepare import annotations  # noqa: PLC0415

  path = tmp_path / 'train.csv'
  path.write_text('label,youtube_id,time_start,time_end,split\na,x1,0,10,train\n')
  if fault == 'bad_row':
    with path.open('a') as f:
      f.write('a,x2,zero,10,train\n')
  else:
    F.inject(path, fault)
  before = F.hashes(tmp_path)
  with F.deny(path if fault == 'permission' else None), pytest.raises(storage.FileFault) as e:
    annotations.kinetics_records(str(tmp_path), ['a'])
  says = {
    'text': r'not a valid annotation CSV: the header lacks',
    'bad_row': r"line 3: bad value \(ValueError: could not convert string to float: 'zero'",
  }
  _check_message(str(e.value), path, 'zero_bytes') if fault == 'zero_bytes' else None
  assert str(path) in str(e.value)
  assert re.search(says.get(fault, SAYS.get(fault, '')), str(e.value)), str(e.value)
  assert F.hashes(tmp_path) == before


# -- AVA label map, proposals; feature banks ---------------------------------------------------


def _ava_label_map(path):
  path.write_text('item {\n  name: "bend/bow"\n  id: 1\n}\n')


def _ava_proposals(path):
  path.write_bytes(pickle.dumps({'vid,902': np.ones((2, 5), np.float32)}))


def _feature_bank(path):
  from avsf_jax.input import feature_banks  # noqa: PLC0415

  banks = feature_banks.synthetic_banks(1, 0, num_pairs=2, segment_pairs=1)
  feature_banks.save_banks(str(path), banks['image'], banks['audio'], banks['labels'])


def _read(kind, path):
  from avsf_jax.input import feature_banks  # noqa: PLC0415
  from avsf_jax.input.prepare import ava_files  # noqa: PLC0415

  return {
    'label_map': ava_files.read_label_map,
    'proposals': ava_files.load_proposals,
    'feature_bank': feature_banks.load_banks,
  }[kind](str(path))


@pytest.mark.parametrize('fault', F.FAULTS)
@pytest.mark.parametrize(
  ('kind', 'make', 'name'),
  [
    ('label_map', _ava_label_map, 'label_map.pbtxt'),
    ('proposals', _ava_proposals, 'proposals.pkl'),
    ('feature_bank', _feature_bank, 'banks.npz'),
  ],
)
def test_damaged_ava_files_and_feature_banks_are_refused(
  tmp_path, record_property, kind, make, name, fault
):
  path = tmp_path / name
  make(path)
  assert _read(kind, path)  # intact: loads
  F.inject(path, fault)
  before = F.hashes(tmp_path)
  with F.deny(path if fault == 'permission' else None):
    try:
      result = _read(kind, path)
    except storage.FileFault as e:
      message = str(e)
      assert str(path) in message and '\n' not in message, message
      generic = r'expected|not a|damaged|truncat|missing|empty|permission|not UTF-8|line \d'
      assert re.search(generic, message, re.I), message
    else:
      # Flipped bytes inside raw array data of an uncompressed pickle/npz: nothing can tell.
      assert fault == 'flipped' and kind in ('proposals', 'feature_bank'), result
      record_property('outcome', 'defined: loads (no checksum)')
  assert F.hashes(tmp_path) == before


# -- media: log_mel --------------------------------------------------------------------------


@pytest.fixture(scope='module')
def clip(tmp_path_factory):
  """A 1 s mp4 with a 440 Hz tone (synthetic's encoder)."""
  from avsf_jax.input.prepare import synthetic  # noqa: PLC0415

  path = tmp_path_factory.mktemp('clip') / 'clip.mp4'
  frames = np.zeros((8, 32, 32, 3), np.uint8)
  t = np.arange(44100) / 44100
  synthetic.write_video(
    str(path), frames, 8, np.sin(2 * np.pi * 440 * t)[None].astype(np.float32), 44100
  )
  return path


@pytest.mark.parametrize('fault', F.FAULTS)
def test_log_mel_of_a_damaged_file(clip, tmp_path, record_property, fault):
  """Truncated or flipped media decodes what is intact (a defined result, as the input
  pipeline does) or fails naming the file; everything else fails naming the file."""
  path = tmp_path / 'clip.mp4'
  shutil.copy(clip, path)
  F.inject(path, fault)
  before = F.hashes(tmp_path)
  with F.deny(path if fault == 'permission' else None):
    try:
      spectrogram = log_mel.compute(str(path))
    except storage.FileFault as e:
      _check_message(str(e), path, fault)
    else:
      assert fault in ('truncated', 'flipped'), spectrogram.shape
      assert spectrogram.ndim == 2 and np.isfinite(spectrogram).all()
      record_property('outcome', 'defined: decodes what is intact')
  assert F.hashes(tmp_path) == before


# -- command lines: one line on stderr and exit status 1; a traceback with --verbose ----------

# Every entry point with a cheap fault: (arguments, the path its message must name). T is the
# test's folder, in which `file` is a regular file (so T/file/out cannot be a folder).
# skimming_feature_demo is the one program left out: it trains before it touches any file.
ENTRY_POINTS = {
  'avsf_jax.main': (['--config=T/missing.py', '--workdir=T/run'], 'T/missing.py'),
  'avsf_jax.evaluate': (
    [f'--config={helpers.TINY_CONFIG}', '--workdir=T/no_run', '--output=T/r.json'],
    'T/no_run',
  ),
  'avsf_jax.export': (['--workdir=T/no_run', '--output=T/export'], 'T/no_run'),
  'avsf_jax.tools.convert_checkpoint': (
    [
      f'--config={helpers.TINY_CONFIG}',
      '--source=pytorchvideo',
      '--input=T/missing.pyth',
      '--output=T/out',
    ],
    'T/missing.pyth',
  ),
  'avsf_jax.tools.log_mel': (['--input=T/missing.mp4', '--output=T/x.npy'], 'T/missing.mp4'),
  'avsf_jax.tools.prepare_dataset': (
    ['--dataset=charades', '--manual_dir=T/no_raw', '--data_dir=T/data'],
    'T/no_raw',
  ),
  'avsf_jax.tools.compare_results': (
    ['--a=T/missing.json', '--b=T/missing.json', '--output=T/c.png'],
    'T/missing.json',
  ),
  'avsf_jax.tools.ava_eval': (
    ['--groundtruth=T/missing.csv', '--detections=T/missing.csv', '--label_map=T/missing.pbtxt'],
    'T/missing.',
  ),
  'avsf_jax.tools.model_stats': (['--config=T/missing.py'], 'T/missing.py'),
  'avsf_jax.tools.benchmark': (['--suite=model', '--config=T/missing.py'], 'T/missing.py'),
  'avsf_jax.tools.extract_features': (
    [f'--config={helpers.TINY_CONFIG}', '--export=T/no_export', '--output=T/f.npz'],
    'T/no_export',
  ),
  'avsf_jax.tools.extract_preview_features': (
    ['--student_export=T/no_export', '--out=T/banks'],
    'T/no_export',
  ),
  'avsf_jax.tools.ltl_baselines': (
    ['--banks=T/no_banks/val.npz', '--student_export=T/no_export'],
    'T/no_banks/val.npz',
  ),
  'avsf_jax.tools.ltl_audio_statistics': (['--config=T/missing.py'], 'T/missing.py'),
  'avsf_jax.tools.scaling': (['--config=T/missing.py'], 'T/missing.py'),
  'avsf_jax.tools.ltl_demo': (['--out=T/file/out'], 'T/file/out'),
  'avsf_jax.tools.demo_ssl': (['--output=T/file/out'], 'T/file/out'),
  'avsf_jax.tools.ava_demo': (['--output=T/file/out', '--data_dir=T/file/data'], 'T/file/'),
}


@pytest.fixture(scope='module')
def command_lines(tmp_path_factory, compilation_cache):
  """Every entry point run with its fault, without and with --verbose, in one process
  (tests/faults/entry_points.py): {(module, verbose): (exit status, stderr)}."""
  import json  # noqa: PLC0415

  root = tmp_path_factory.mktemp('entry_points')
  (root / 'file').write_text('a regular file\n')
  runs = []
  for module, (args, _) in ENTRY_POINTS.items():
    args = [a.replace('T/', f'{root}/') for a in args]
    runs += [[module, args], [module, [*args, '--verbose']]]
  env = helpers.subprocess_env(compilation_cache, devices=1)
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(helpers.REPO), env.get('PYTHONPATH')]))
  harness = helpers.REPO / 'tests' / 'faults' / 'entry_points.py'
  result = subprocess.run(
    [sys.executable, str(harness), json.dumps(runs)],
    cwd=root,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  out = {}
  for line in result.stdout.splitlines():
    run = json.loads(line)
    out[run['module'], '--verbose' in run['args']] = (run['code'], run['stderr'])
  assert len(out) == 2 * len(ENTRY_POINTS)
  assert (root / 'file').read_text() == 'a regular file\n'  # nothing that existed changed
  return root, out


@pytest.mark.parametrize('module', sorted(ENTRY_POINTS))
def test_command_lines_fail_in_one_line_and_show_the_traceback_with_verbose(command_lines, module):
  root, runs = command_lines
  named = ENTRY_POINTS[module][1].replace('T/', f'{root}/')
  program = module.rsplit('.', 1)[-1]
  code, err = runs[module, False]
  last = err.strip().splitlines()[-1]
  assert code == 1, err[-2000:]
  assert last.startswith(f'{program}: ') and named in last, err[-2000:]
  assert 'Traceback' not in err, err[-2000:]
  code, verbose = runs[module, True]
  assert code == 1, verbose[-2000:]
  assert 'Traceback (most recent call last)' in verbose, verbose[-2000:]
  assert verbose.strip().splitlines()[-1] == last


# -- prepared datasets: prepare_dataset and training on damaged shards -------------------------


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  """(manual_dir, data_root): a real synthetic_av of one train and one validation clip,
  prepared by `builders.build` from raw files written here (two 0.5 s clips; their
  RAW_COMPLETE marker keeps the builder from generating the full 300)."""
  from avsf_jax.input.prepare import builders, synthetic  # noqa: PLC0415

  root = tmp_path_factory.mktemp('dataset')
  manual, data_root = root / 'raw', root / 'cache'
  label = synthetic.CLASS_NAMES[0]
  t = np.arange(22050) / 44100
  audio = np.sin(2 * np.pi * 440 * t)[None].astype(np.float32)
  for split in ('train', 'validate'):
    (manual / split / label).mkdir(parents=True)
    frames = np.full((12, 32, 48, 3), 90 if split == 'train' else 160, np.uint8)
    synthetic.write_video(
      str(manual / split / label / f'v{split}_000000_000001.mp4'), frames, 24, audio, 44100
    )
    (manual / f'{split}.csv').write_text(
      f'label,youtube_id,time_start,time_end,split\n{label},v{split},0,1,{split}\n'
    )
  (manual / builders.RAW_COMPLETE).write_text(builders.raw_marker_text(2))
  builder = builders.get_builder('synthetic_av', str(data_root), num_workers=1)
  builders.build(builder, str(manual))
  assert builders.is_complete(builder) and builder.prepared == 2
  return manual, data_root


SHARD_FAULTS = ('truncated', 'zero_bytes', 'flipped', 'text', 'png', 'missing', 'permission')
SHARDS = {
  'examples': 'synthetic_av-train.array_record-00000-of-00001',
  'frames': 'frames-train.array_record',
}


def _damaged_dataset(prepared, tmp_path, shard, fault, marker=True):
  """A copy of the prepared dataset with `fault` in one shard; (data_root, version dir, shard)."""
  from avsf_jax.input.prepare import builders  # noqa: PLC0415

  data_root = tmp_path / 'cache'
  shutil.copytree(prepared[1], data_root)
  version = data_root / 'synthetic_av' / 'ss320' / str(builders.SyntheticAv.VERSION)
  target = version / SHARDS[shard]
  if fault == 'flipped':  # inside the first record's chunk (a small file is mostly padding)
    data = target.read_bytes()
    target.write_bytes(data[:200] + bytes(b ^ 0xFF for b in data[200:264]) + data[264:])
  else:
    F.inject(target, fault)
  if not marker:
    (version / builders.PREPARED_MARKER).unlink()
  return data_root, version, target


def _open_dataset(entry, data_root, manual):
  """What each entry point does first with the dataset: training (`pipeline.get_builder`,
  called by the data source's dataset_info) or `prepare_dataset.prepare`."""
  from avsf_jax.input import pipeline  # noqa: PLC0415
  from avsf_jax.tools import prepare_dataset  # noqa: PLC0415

  pipeline._CHECKED.clear()  # noqa: SLF001 - every case checks its own copy
  if entry == 'training':
    config = helpers.load_config('configs/demo.py')
    config.input.data_dir = str(data_root)
    return pipeline.get_builder(config)
  return prepare_dataset.prepare('synthetic_av', str(manual), str(data_root), num_workers=1)


@pytest.mark.parametrize('fault', SHARD_FAULTS)
@pytest.mark.parametrize('shard', sorted(SHARDS))
@pytest.mark.parametrize('entry', ['training', 'prepare_dataset'])
def test_a_damaged_dataset_shard_is_refused_naming_it(prepared, tmp_path, entry, shard, fault):
  data_root, version, target = _damaged_dataset(prepared, tmp_path, shard, fault)
  before = F.hashes(data_root)
  with F.deny(target if fault == 'permission' else None), pytest.raises(storage.FileFault) as e:
    _open_dataset(entry, data_root, prepared[0])
  message = str(e.value)
  assert message.startswith(f'{target}: the shard of the prepared dataset is '), message
  says = {
    'missing': 'missing (no such file)',
    'permission': 'permission denied',
    'zero_bytes': 'empty (zero bytes)',
  }.get(fault, 'damaged (')
  assert says in message and '\n' not in message, message
  assert message.endswith(f'; delete {version} and prepare it again'), message
  assert F.hashes(data_root) == before


@pytest.mark.parametrize('entry', ['training', 'prepare_dataset'])
def test_a_half_written_dataset_without_its_marker_is_refused(prepared, tmp_path, entry):
  """A folder that holds TFDS's description but lacks a shard and the `.prepared` marker (a
  copy cut short, a build killed): refused naming the shard; nothing is built or changed."""
  data_root, version, target = _damaged_dataset(
    prepared, tmp_path, 'examples', 'missing', marker=False
  )
  before = F.hashes(data_root)
  with pytest.raises(storage.FileFault) as e:
    _open_dataset(entry, data_root, prepared[0])
  assert str(e.value) == (
    f'{target}: the shard of the prepared dataset is missing (no such file) (no .prepared '
    f'marker: an unfinished build); delete {version} and prepare it again'
  )
  assert F.hashes(data_root) == before


@pytest.mark.parametrize('entry', ['training', 'prepare_dataset'])
def test_a_complete_dataset_from_before_the_markers_is_recognised(prepared, tmp_path, capfd, entry):
  """The bug of the last session: a dataset prepared before markers existed went down the
  build path and reported "0 prepared, 0 skipped". Now its shards are checked and it is
  marked complete, with one line that says so; nothing else is written."""
  from avsf_jax.input.prepare import builders  # noqa: PLC0415

  data_root = tmp_path / 'cache'
  shutil.copytree(prepared[1], data_root)
  version = data_root / 'synthetic_av' / 'ss320' / str(builders.SyntheticAv.VERSION)
  (version / builders.PREPARED_MARKER).unlink()
  (version / builders.SKIPPED_FILENAME).unlink()  # older versions did not always write it
  before = F.hashes(version)
  builder = _open_dataset(entry, data_root, prepared[0])
  if entry == 'training':
    assert builder.info.splits['train'].num_examples == 1
  else:
    assert builder['already_prepared'] and builder['prepared'] == 0
  out, err = capfd.readouterr()
  assert f'synthetic_av: {version} holds a complete dataset without a .prepared marker' in err
  assert 'its shards check out, marking it complete' in err
  assert 'preparing it' not in err and 'generating' not in err
  assert 'prepared, 0 skipped' not in out and 'another process' not in out + err
  after = F.hashes(version)
  marker = f'{version.name}/{builders.PREPARED_MARKER}'
  assert after.pop(marker) and after == before
