"""Preparation with the decode on Apache Beam (DirectRunner): the local build's data, exactly.

Needs `apache-beam` in the environment (the pins that admit it are in the accel3 report).
"""

import json
import os

import apache_beam
from array_record.python import array_record_data_source

from avsf_jax.input.prepare import beam_prepare, beam_results, builders


def _records(builder, split):
  paths = [str(p) for p in builder.info.splits[split].filepaths]
  source = array_record_data_source.ArrayRecordDataSource(paths)
  frames = array_record_data_source.ArrayRecordDataSource(
    [builders.frames_path(builder.data_dir, split)]
  )
  return [source[i] for i in range(len(source))], [frames[i] for i in range(len(frames))]


def _skipped(builder):
  with open(os.path.join(builder.data_dir, builders.SKIPPED_FILENAME)) as f:
    return sorted(f.read().splitlines())


def test_beam_build_writes_the_local_builds_records_frames_and_skip_report(
  kinetics_dir, kinetics_prepared, tmp_path
):
  assert apache_beam.__version__
  local = kinetics_prepared[1]
  decoded = str(tmp_path / 'decoded')
  beam = beam_prepare.build(
    'kinetics400',
    str(tmp_path / 'data'),
    kinetics_dir,
    decoded,
    beam_options=['--runner=DirectRunner'],
  )
  assert (beam.prepared, len(beam.skipped)) == (11 + 3, 4)
  assert builders.is_complete(beam)
  for split in ('train', 'validation'):
    assert _records(beam, split) == _records(local, split)  # byte for byte
  assert _skipped(beam) == _skipped(local)
  reasons = sorted(json.loads(line)['reason'] for line in _skipped(beam))
  assert reasons == ['missing_file', 'unreadable', 'unreadable', 'unreadable']
  # One result file per train record (11 prepared + 4 skipped; the row of an unknown class is
  # no record), so a rerun decodes nothing.
  assert all(beam_results.exists(decoded, 'train', i) for i in range(15))
  assert not beam_results.exists(decoded, 'train', 15)
