r"""Dataset preparation on Apache Beam (Dataflow, Flink, Spark, or DirectRunner locally).

  python -m avsf_jax.input.prepare.beam_prepare --dataset=kinetics400 --manual_dir=DIR \
      --data_dir=DIR --decoded_dir=DIR [--short_side=320] [--skip_no_audio] \
      --beam_options='--runner=DataflowRunner --project=P --region=R ...'

Two phases, with the builders' own code on both sides:
1. **decode (Beam)**: the builder's annotation records are spread over the Beam workers, each
   decoded by `records.prepare_record` (the function the local build runs in its worker
   processes: PyAV, JPEG frames, 16 kHz audio, or the skip reason) and written to
   `decoded_dir` (`beam_results.py`). Records whose result exists are not decoded again, so a
   failed job is resumed by running it again. This is nearly all of the build's CPU time.
2. **assemble (here)**: the same TFDS builder, created with `decoded_dir`, reads the results in
   record order instead of decoding, and writes the ArrayRecord files, the frame store and
   `skipped.jsonl` exactly as a local build does (one sequential pass: the frame store's
   offsets are global, so one writer lays it out).

PyAV opens the records' paths directly, so the videos must be readable by the workers at the
paths the driver finds them under (shared storage, or a bucket mounted with Cloud Storage FUSE
in the worker container); `decoded_dir` and `data_dir` may be gs:// URLs.
"""

import shlex

from absl import app, flags

from avsf_jax.input import media
from avsf_jax.input.prepare import beam_results, builders
from avsf_jax.input.prepare import records as prepare


def _decode_one(item, decoded_dir: str, short_side: int, sample_rate: int, keep_no_audio: bool):
  split, position, record = item
  if not beam_results.exists(decoded_dir, split, position):
    result = prepare.prepare_record(record, short_side, sample_rate, keep_no_audio)
    beam_results.write(decoded_dir, split, position, result)
  return split


def decode(
  records: dict[str, list[dict]],
  decoded_dir: str,
  *,
  short_side: int,
  keep_no_audio: bool,
  beam_options: list[str],
  sample_rate: int = media.DEFAULT_SAMPLE_RATE,
) -> dict[str, int]:
  """Decodes every record on Beam into `decoded_dir`; returns the record count per split."""
  import apache_beam as beam  # noqa: PLC0415 - optional: only this path needs Beam
  from apache_beam.options import pipeline_options  # noqa: PLC0415

  items = [(split, i, r) for split, rows in sorted(records.items()) for i, r in enumerate(rows)]
  options = pipeline_options.PipelineOptions(beam_options)
  with beam.Pipeline(options=options) as pipeline:
    _ = (
      pipeline
      | 'records' >> beam.Create(items)
      | 'spread' >> beam.Reshuffle()  # one record per work item, over all workers
      | 'decode' >> beam.Map(_decode_one, decoded_dir, short_side, sample_rate, keep_no_audio)
    )
  return {split: len(rows) for split, rows in records.items()}


def build(
  name: str,
  data_dir: str,
  manual_dir: str,
  decoded_dir: str,
  *,
  beam_options: list[str],
  short_side: int = media.DEFAULT_SHORT_SIDE,
  keep_no_audio: bool = True,
) -> builders.VideoBuilder:
  """Prepares dataset `name` with the decode on Beam; returns the prepared builder (its
  `skipped` and `prepared` filled, `skipped.jsonl` written as by `builders.build`)."""
  storage = {'short_side': short_side, 'keep_no_audio': keep_no_audio}
  builder = builders.get_builder(name, data_dir, decoded_dir=decoded_dir, **storage)
  if not builders.is_complete(builder):
    builder.make_raw_files(manual_dir)
    decode(
      builder._records(manual_dir),  # noqa: SLF001 - the builder's own record list
      decoded_dir,
      beam_options=beam_options,
      **storage,
    )
    builders.build(builder, manual_dir)
  return builder


def _define_flags() -> None:
  """The command's flags (defined only when run, so that importing this module adds none)."""
  flags.DEFINE_string('dataset', None, f'one of {builders.names()}')
  flags.DEFINE_string('manual_dir', None, 'the raw videos and annotations')
  flags.DEFINE_string('data_dir', None, 'where the prepared dataset goes')
  flags.DEFINE_string('decoded_dir', None, 'where the Beam workers put the decoded records')
  flags.DEFINE_integer('short_side', media.DEFAULT_SHORT_SIDE, 'short side of stored frames')
  flags.DEFINE_bool('skip_no_audio', False, 'skip videos without audio')
  flags.DEFINE_string(
    'beam_options', '--runner=DirectRunner', 'Beam pipeline options, one shell-quoted string'
  )
  flags.mark_flags_as_required(['dataset', 'manual_dir', 'data_dir', 'decoded_dir'])


def main(argv):
  del argv
  f = flags.FLAGS
  builder = build(
    f.dataset,
    f.data_dir,
    f.manual_dir,
    f.decoded_dir,
    beam_options=shlex.split(f.beam_options),
    short_side=f.short_side,
    keep_no_audio=not f.skip_no_audio,
  )
  skipped = f'{builder.data_dir}/{builders.SKIPPED_FILENAME}'
  print(f'{builder.name}: {builder.prepared} prepared, {len(builder.skipped)} skipped ({skipped})')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
