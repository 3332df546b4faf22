"""The console plumbing (avsf_jax/console.py) and the workdir check of train.py, in process."""

import json
import logging

import pytest
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from avsf_jax import console, train
from tests import helpers


def test_config_file_error_is_the_config_files_own_line():
  """ml_collections wraps a config file's ValueError in a traceback; the one line the user
  sees is the ValueError's own message (here pick_variant's list of variants)."""
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config', flag_values=values)
  with pytest.raises(flags.Error) as info:
    values(['prog', f'--config={helpers.REPO / "configs" / "demo.py"}:bogus'])
  assert 'Traceback' in str(info.value)
  assert console.config_file_error(str(info.value)) == (
    "configs/demo.py: unknown variant 'bogus'; choose one of: avslowfast, slowfast"
  )
  assert console.config_file_error('flag --steps=x: invalid literal for int()') is None


def test_program_name_of_a_module_run_with_dash_m():
  assert console.program_name(str(helpers.REPO / 'avsf_jax' / 'main.py')) == 'avsf_jax.main'
  assert console.program_name('/elsewhere/run.py') == 'run'


def test_stage_lines_and_summary_table(capsys):
  console.stage('dataset', 'synthetic_av: 240 training / 60 evaluation videos')
  console.summary([('top1', '100.0%'), ('results', '/w/eval_results.json')])
  rule = '-' * len('results  /w/eval_results.json')
  assert capsys.readouterr().out.splitlines() == [
    'dataset    synthetic_av: 240 training / 60 evaluation videos',
    rule,
    'top1     100.0%',
    'results  /w/eval_results.json',
    rule,
  ]


def test_train_postfix():
  assert console.train_postfix({'loss': 0.12345, 'clips_per_sec': 41.6}) == 'loss 0.123, 42 clips/s'


def test_progress_wrap_passes_every_batch_through(capsys):
  wrap = console.progress_wrap(3, desc='evaluating')
  assert list(wrap(iter('abc'))) == ['a', 'b', 'c']
  assert 'evaluating 3/3' in capsys.readouterr().err


@pytest.fixture
def routed(tmp_path):
  """console.setup on a temporary log file, undone afterwards."""
  root = logging.getLogger()
  level, handlers = root.level, list(root.handlers)
  absl_handler = absl_logging.get_absl_handler()
  filters, stream = list(absl_handler.filters), absl_handler.python_handler.stream
  path = console.setup(tmp_path / 'log.txt', verbose=False, redirect_native=False)
  yield path
  for h in list(root.handlers):
    if h not in handlers:
      root.removeHandler(h)
      h.close()
  absl_handler.filters[:] = filters
  absl_handler.python_handler.stream = stream
  root.setLevel(level)
  logging.captureWarnings(False)


def _emit(name, level, message, pathname):
  logger = logging.getLogger(name)
  logger.handle(logger.makeRecord(name, level, pathname, 1, message, None, None))


def test_library_logs_go_to_the_file_and_our_warnings_to_the_console(routed, capfd):
  ours = str(helpers.REPO / 'avsf_jax' / 'train.py')
  theirs = '/site-packages/orbax/checkpoint/checkpoint_manager.py'
  _emit('absl', logging.INFO, 'CheckpointManager options', theirs)
  _emit('jax._src.xla_bridge', logging.INFO, "Unable to initialize backend 'tpu'", theirs)
  _emit('tensorflow', logging.WARNING, 'FeatureConnector.dtype is deprecated', theirs)
  _emit('absl', logging.WARNING, 'Preemption notice: saved checkpoint 7', ours)
  _emit('absl', logging.ERROR, 'orbax failed to write', theirs)
  logging.getLogger().handlers[-1].flush()
  err = capfd.readouterr().err
  assert 'Preemption notice' in err and 'orbax failed to write' in err
  for noise in ('CheckpointManager options', 'backend', 'deprecated'):
    assert noise not in err
  text = open(routed).read()
  for message in ('CheckpointManager options', 'backend', 'deprecated', 'Preemption', 'failed'):
    assert message in text


def _workdir(tmp_path, saved_config, checkpoint_steps=(6,)):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'config.json').write_text(saved_config.to_json_best_effort())
  for step in checkpoint_steps:
    (workdir / 'checkpoints' / str(step)).mkdir(parents=True)
  return workdir


def test_workdir_of_another_experiment_is_refused(tmp_path):
  saved = helpers.tiny_config()
  saved.model.slow_width = 16
  workdir = _workdir(tmp_path, saved)
  with pytest.raises(train.WorkdirMismatchError) as info:
    train.check_workdir(helpers.tiny_config(), workdir)
  assert str(info.value) == (
    f'{workdir} holds checkpoints of another experiment (model.slow_width: 16 there, 8 here); '
    'not mixing them. Use another --workdir, or delete that one to start over.'
  )


def test_workdir_of_another_task_names_the_task_first(tmp_path):
  saved = helpers.tiny_config('slowfast')
  saved.task = 'pretraining'
  with pytest.raises(train.WorkdirMismatchError, match=r"\(task: 'pretraining' there, "):
    train.check_workdir(helpers.tiny_config(), _workdir(tmp_path, saved))


def test_workdir_check_accepts_the_same_experiment_and_fresh_workdirs(tmp_path):
  config = helpers.tiny_config()
  other = helpers.tiny_config()
  other.model.dtype = 'bfloat16'  # the compute dtype does not change the checkpoint
  other.optim.num_epochs = 3.0  # nor does the schedule
  train.check_workdir(config, _workdir(tmp_path, other))
  saved = helpers.tiny_config()
  saved.model.slow_width = 16
  no_checkpoints = tmp_path / 'fresh'
  no_checkpoints.mkdir()
  (no_checkpoints / 'config.json').write_text(json.dumps({'model': {'slow_width': 16}}))
  train.check_workdir(config, no_checkpoints)  # a config.json alone holds nothing to mix
  train.check_workdir(config, tmp_path / 'missing')


def test_the_closing_summary_counts_what_each_task_reports():
  # Clip tasks (clip_finetune, distillation) report 'clips', skimming no count: the summary
  # of `python -m avsf_jax.main` used to fail on both after writing their results.
  from avsf_jax import main  # noqa: PLC0415

  assert main._count_rows({'top1': 50.0, 'num_examples': 12, 'step': 7}) == [
    ('videos', '12 (step 7)')
  ]
  assert main._count_rows({'top1': 50.0, 'clips': 96, 'step': 3}) == [('clips', '96 (step 3)')]
  assert main._count_rows({'avgpool_top1': 50.0, 'top1': 50.0}) == []
