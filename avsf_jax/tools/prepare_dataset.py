r"""Raw videos + annotations -> a prepared TFDS dataset, with a report of every skipped file.

  python -m avsf_jax.tools.prepare_dataset --dataset=kinetics400 \
      --manual_dir=/data/kinetics400 --data_dir=~/tensorflow_datasets
  python -m avsf_jax.tools.prepare_dataset --dataset=synthetic_av --manual_dir=/tmp/syn --data_dir=DIR

Decodes with PyAV in one worker process per core and stores JPEG frames at short side
`--short_side` (never upscaled) at the native frame rate, 16 kHz mono int16 audio and metadata.
Files that do not become examples are listed, with the reason, in `skipped.jsonl` next to the
prepared data. `synthetic_av` writes its mp4 files into `--manual_dir` first if it is empty.

  python -m avsf_jax.tools.prepare_dataset --dataset=ucf101 --split=2 --manual_dir=UCF --data_dir=DIR
"""

import collections
import json
import os

from absl import app, flags

from avsf_jax import console


def get_builder(name: str, data_dir: str, *, split: int = 1, **kwargs):
  """The builder of `name` (`builders.names()`, or `name/variant`); for the builders with
  official splits (`ucf101`, `hmdb51`) a plain name gets `/split{split}`."""
  from avsf_jax.input.prepare import builders, ucf_hmdb

  if name in ucf_hmdb.BUILDERS:
    name = f'{name}/split{split}'
  return builders.get_builder(name, data_dir, **kwargs)


def prepare(
  dataset: str,
  manual_dir: str,
  data_dir: str,
  *,
  short_side: int = 320,
  skip_no_audio: bool = False,
  num_workers=None,
  split: int = 1,
) -> dict:
  """Builds the dataset (unless already prepared); returns a summary dict: already_prepared,
  prepared, skipped, by_reason, skipped_file, data_dir."""
  from avsf_jax.input import pipeline
  from avsf_jax.input.prepare import builders

  pipeline.hide_accelerators_from_tf()
  builder = get_builder(
    dataset,
    os.path.expanduser(data_dir),
    short_side=short_side,
    keep_no_audio=not skip_no_audio,
    num_workers=num_workers,
    split=split,
  )
  already = builders.is_prepared(builder)
  skipped_file = builders.build(builder, os.path.expanduser(manual_dir))
  return {
    'already_prepared': already,
    'prepared': builder.prepared,
    'skipped': len(builder.skipped),
    'by_reason': dict(collections.Counter(s['reason'] for s in builder.skipped)),
    'skipped_file': skipped_file,
    'data_dir': builder.data_dir,
  }


def main(argv):
  del argv
  from avsf_jax.input import pipeline

  summary = prepare(
    flags.FLAGS.dataset,
    flags.FLAGS.manual_dir,
    flags.FLAGS.data_dir or pipeline.default_data_dir(),
    short_side=flags.FLAGS.short_side,
    skip_no_audio=flags.FLAGS.skip_no_audio,
    num_workers=flags.FLAGS.num_workers,
    split=flags.FLAGS.split,
  )
  if summary['already_prepared']:
    print(f'{summary["data_dir"]} is already prepared; delete it to rebuild')
    return
  if summary['skipped']:
    print('skipped by reason: ' + json.dumps(summary['by_reason']))
  print(
    f'{summary["prepared"]} prepared, {summary["skipped"]} skipped (see {summary["skipped_file"]})'
  )


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, because this module is
  also imported as a library (absl flags are process-global)."""
  flags.DEFINE_string(
    'dataset',
    None,
    'kinetics400, kinetics600, kinetics_sounds, charades, epic_kitchens, synthetic_av, '
    'ucf101, hmdb51 (with --split, or as ucf101/split2), activitynet, synthetic_av_sync.',
  )
  flags.DEFINE_string('manual_dir', None, 'Folder with the raw videos and annotation files.')
  flags.DEFINE_string(
    'data_dir', None, 'Output root (default: $AVSF_DATA_DIR or ~/.cache/avsf_jax/datasets).'
  )
  flags.DEFINE_integer('short_side', 320, 'Short side of the stored frames (pixels).')
  flags.DEFINE_bool(
    'skip_no_audio', False, 'Skip videos without audio instead of keeping them silent.'
  )
  flags.DEFINE_integer('num_workers', None, 'Decoding processes (default: all cores).')
  flags.DEFINE_integer('split', 1, 'ucf101 / hmdb51: the official split (1, 2 or 3).')
  console.define_flags()


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['dataset', 'manual_dir'])
  app.run(console.guard('prepare_dataset', main))
