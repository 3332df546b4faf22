"""Runs the fault-injection suite and writes its table: faults x entry points, with the
outcome of each case as the suite checked it (for the issue's note).

  python tests/faults/fault_table.py OUTPUT.md [more pytest arguments]

Each row is one test case: the entry point, the damaged file, the fault, what the case
asserts (`OUTCOMES`, one sentence per test function, with the cases that have a defined
result other than a refusal named) and whether it passed.
"""

import collections
import os
import sys

import pytest

REFUSED = 'refused: one line naming the file and the fault; nothing modified; non-zero exit'
# test function -> (entry point, damaged file, outcome the passing case asserts)
OUTCOMES = {
  'test_a_damaged_newest_checkpoint_is_skipped': (
    '{entry}',
    'newest checkpoint (6): its largest file (`_METADATA` for permission)',
    'recovered: one warning line naming checkpoint 6, the file and the fault; checkpoint 4 '
    'restored; nothing modified',
  ),
  'test_nan_in_the_newest_checkpoint_is_skipped': (
    'evaluate_workdir',
    'newest checkpoint (6), params',
    'recovered: checkpoint 6 skipped naming the fault (NaN/Inf or its sha256); 4 restored',
  ),
  'test_a_checkpoint_of_another_model_lists_every_checkpoint': (
    'evaluate_workdir / resume',
    'every checkpoint (another model)',
    'refused: CheckpointError listing checkpoints 2, 4 and 6 with the shape mismatch',
  ),
  'test_an_explicit_step_that_is_damaged_is_named': (
    'evaluate --step=6',
    'checkpoint 6',
    'refused naming checkpoint 6; --step=4 restores',
  ),
  'test_export_of_a_workdir_with_a_damaged_newest_checkpoint_uses_the_one_before': (
    'export',
    'newest checkpoint (6)',
    'recovered: the export holds step 4; nothing modified',
  ),
  'test_resume_past_a_damaged_checkpoint_ends_like_a_normal_resume': (
    'training resume (python -m avsf_jax.main)',
    'newest checkpoint (6)',
    'recovered: resumes from 4, the damaged step is moved aside byte for byte, the final '
    'parameters equal a normal resume from 4',
  ),
  'test_a_damaged_export_is_refused_naming_the_file': ('export.{entry}', '{name}', REFUSED),
  'test_nan_or_inf_in_an_export_is_refused': ('export.{entry}', 'variables', REFUSED),
  'test_init_from_an_export_of_another_model_is_refused': (
    'init_from',
    'export of another model',
    'refused: names the export and the shape mismatch',
  ),
  'test_flipped_bytes_in_an_export_fail_its_checksum': (
    'export.load',
    '{name}',
    'refused: the sha256 recorded in metadata.json differs; names the file',
  ),
  'test_evaluate_an_export_of_another_model_is_refused': (
    'evaluate --export',
    'export of another input size',
    'refused: names the input shape mismatch',
  ),
  'test_predict_on_bad_batches': (
    'export.load + predict',
    'batch: NaN, int dtype, wrong rank, missing key, zero batch',
    'NaN in -> NaN out and int -> cast (defined); wrong rank, missing key, zero batch -> '
    'ExportError naming the input',
  ),
  'test_a_damaged_foreign_checkpoint_is_refused': (
    'convert_checkpoint',
    'model{suffix}',
    REFUSED + ' (flipped bytes inside raw tensor data of a pickle load: no checksum)',
  ),
  'test_nan_in_a_foreign_checkpoint_is_refused': (
    'convert_checkpoint',
    'model{suffix}',
    'refused: names the file, the tensor and NaN/Inf',
  ),
  'test_a_foreign_checkpoint_of_another_model_is_refused': (
    'convert_checkpoint',
    'model.pyth of another model',
    'refused: names the file, "does not match"',
  ),
  'test_a_damaged_class_name_file_is_refused': (
    'convert_checkpoint --class_names',
    'classes.txt',
    REFUSED,
  ),
  'test_a_damaged_annotation_csv_is_refused': ('prepare_dataset', 'train.csv', REFUSED),
  'test_damaged_ava_files_and_feature_banks_are_refused': (
    '{kind} loader',
    '{name}',
    REFUSED + ' (flipped bytes inside raw array data of a pickle/npz load: no checksum)',
  ),
  'test_log_mel_of_a_damaged_file': (
    'log_mel',
    'clip.mp4',
    REFUSED + ' (truncated/flipped media: what is intact decodes, finite)',
  ),
  'test_command_lines_fail_in_one_line_and_show_the_traceback_with_verbose': (
    '{module}',
    'a missing input file or folder',
    'exit 1 with one line `program: message` naming the path, no traceback; with --verbose '
    'the traceback, then the same line',
  ),
  'test_a_damaged_dataset_shard_is_refused_naming_it': (
    '{entry}',
    'prepared dataset, {shard} shard',
    REFUSED + ' (says: delete the folder and prepare it again)',
  ),
  'test_a_half_written_dataset_without_its_marker_is_refused': (
    '{entry}',
    'dataset folder without `.prepared`, a shard missing',
    'refused naming the shard and the missing marker; nothing built or modified',
  ),
  'test_a_complete_dataset_from_before_the_markers_is_recognised': (
    '{entry}',
    'complete dataset without `.prepared` (older version)',
    'recovered: shards checked, marked complete with one line; nothing else written',
  ),
}


# The fault of the test functions that are not parametrised by one.
FAULTS = {
  'test_nan_in_the_newest_checkpoint_is_skipped': 'nan',
  'test_a_checkpoint_of_another_model_lists_every_checkpoint': 'other_model',
  'test_an_explicit_step_that_is_damaged_is_named': 'flipped',
  'test_export_of_a_workdir_with_a_damaged_newest_checkpoint_uses_the_one_before': 'flipped',
  'test_resume_past_a_damaged_checkpoint_ends_like_a_normal_resume': 'flipped',
  'test_nan_or_inf_in_an_export_is_refused': 'nan (Inf)',
  'test_init_from_an_export_of_another_model_is_refused': 'other_model',
  'test_flipped_bytes_in_an_export_fail_its_checksum': 'flipped',
  'test_evaluate_an_export_of_another_model_is_refused': 'other_model',
  'test_predict_on_bad_batches': 'bad batches',
  'test_nan_in_a_foreign_checkpoint_is_refused': 'nan',
  'test_a_foreign_checkpoint_of_another_model_is_refused': 'other_model',
  'test_command_lines_fail_in_one_line_and_show_the_traceback_with_verbose': 'missing',
  'test_a_half_written_dataset_without_its_marker_is_refused': 'half-written',
  'test_a_complete_dataset_from_before_the_markers_is_recognised': 'no marker (intact)',
}


class _Collector:
  def __init__(self):
    self.params, self.outcomes, self.met = {}, collections.OrderedDict(), {}

  def pytest_collection_modifyitems(self, items):
    for item in items:
      spec = getattr(item, 'callspec', None)
      self.params[item.nodeid] = (item.originalname, dict(spec.params) if spec else {})

  def pytest_runtest_logreport(self, report):
    if report.when == 'call' or report.outcome != 'passed':
      self.outcomes.setdefault(report.nodeid, report.outcome)
      # A case with more than one defined outcome records which it met (record_property).
      for key, value in report.user_properties:
        if key == 'outcome':
          self.met[report.nodeid] = value


SHORT = {'refused': 'refused', 'recovered': 'recovered', 'exit': 'one line'}
_ORDER = ('truncated', 'zero_bytes', 'flipped', 'text', 'png', 'missing', 'permission')


def _fault_order(fault: str):
  return (_ORDER.index(fault), '') if fault in _ORDER else (len(_ORDER), fault)


def _fill(template: str, params: dict) -> str:
  text = {k: v if isinstance(v, str) else getattr(v, '__name__', v) for k, v in params.items()}
  return template.format_map(collections.defaultdict(str, text))


def main(output: str, args: list[str]) -> int:
  collector = _Collector()
  code = pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/faults', *args], plugins=[collector])
  lines = [
    '| entry point | damaged file | fault | outcome asserted | result |',
    '| --- | --- | --- | --- | --- |',
  ]
  counts = collections.Counter()
  matrix = collections.defaultdict(dict)  # entry point -> fault -> short outcome
  for nodeid, outcome in collector.outcomes.items():
    name, params = collector.params.get(nodeid, (nodeid.split('::')[-1], {}))
    entry, damaged, asserted = OUTCOMES.get(name, ('?', '?', name))
    fault = params.get('fault') or FAULTS.get(name, '')
    entry = _fill(entry, params)
    met = collector.met.get(nodeid)
    shown = f'{outcome} ({met})' if met else outcome
    lines.append(f'| {entry} | {_fill(damaged, params)} | {fault} | {asserted} | {shown} |')
    counts[outcome] += 1
    short = 'defined' if met else SHORT.get(asserted.split(':')[0].split(' ')[0], 'defined')
    cell = short if outcome == 'passed' else f'**{outcome}**'
    previous = matrix[entry].get(fault)
    matrix[entry][fault] = cell if previous in (None, cell) else f'{previous}, {cell}'
  faults = sorted({f for row in matrix.values() for f in row}, key=_fault_order)
  grid = ['| entry point | ' + ' | '.join(faults) + ' |', '| --- |' + ' --- |' * len(faults)]
  for entry in sorted(matrix):
    grid.append(f'| {entry} | ' + ' | '.join(matrix[entry].get(f, '') for f in faults) + ' |')
  summary = ', '.join(f'{n} {k}' for k, n in sorted(counts.items()))
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output, 'w') as f:
    f.write(f'# Fault injection: faults x entry points ({summary})\n\n')
    f.write('Generated by `python tests/faults/fault_table.py` from `pytest tests/faults`.\n\n')
    f.write(
      'Summary (refused: one line naming the file and the fault, nothing modified, non-zero '
      'exit; recovered: the newest valid checkpoint is used, one line names the bad one; '
      'one line: the command line exits 1 in one line, with the traceback under --verbose; '
      'defined: a defined result, see the rows below). Every case passed unless marked.\n\n'
    )
    f.write('\n'.join(grid) + '\n\n## Every case\n\n')
    f.write('\n'.join(lines) + '\n')
  print(f'{output}: {len(lines) - 2} cases ({summary})')
  return int(code)


if __name__ == '__main__':
  sys.exit(main(sys.argv[1], sys.argv[2:]))
