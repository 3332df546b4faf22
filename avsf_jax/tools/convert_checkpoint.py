r"""Foreign SlowFast-family weights -> an avsf_jax export directory.

  python -m avsf_jax.tools.convert_checkpoint --source=pytorchvideo \
      --config=configs/kinetics_r50.py:slowfast_8x8 --input=SLOWFAST_8x8_R50.pyth \
      --output=exports/slowfast_8x8_r50
  python -m avsf_jax.tools.convert_checkpoint --source=pyslowfast \
      --config=configs/kinetics_r50.py:slowfast_4x16 --input=SLOWFAST_4x16_R50.pkl ...

Sources: `pytorchvideo` (`create_slowfast` / `create_audio_visual_slowfast` state dicts,
`.pyth`), `pyslowfast` (PySlowFast `.pyth`, a bare state dict or one under
`model_state`; PySlowFast's own Caffe2-converted `.pkl` model-zoo files too), `caffe2`
(pickled Caffe2 blobs, renamed to PySlowFast's names first). Files are read without
executing code from them. A detection config (`configs/ava.py`, `config.task = 'detection'`)
converts a PySlowFast AVA checkpoint onto the detector (`interop.ava_convert`: the backbone
as for Kinetics, `head.projection` onto the RoI head), for example

  python -m avsf_jax.tools.convert_checkpoint --source=pyslowfast \
      --config=configs/ava.py:slowfast_32x2_r101_50_50 --input=SLOWFAST_32x2_R101_50_50.pkl \
      --output=exports/ava_slowfast_32x2_r101

Every missing, unexpected or mis-shaped tensor is listed by name
and fails the conversion unless `--allow_partial` (missing ones then keep their fresh
initialisation). The result is an export that `python -m avsf_jax.evaluate --export=DIR`
and `--config.init_from=DIR` accept.
"""

import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from avsf_jax import console

DATA_DIR = pathlib.Path(__file__).resolve().parents[2] / 'data'


def class_names_for(config, path: str | None = None) -> list[str]:
  """Class names from `path`, the dataset's list in data/, or 'class_<i>'."""
  num = config.model.num_classes
  if path is None:
    candidate = DATA_DIR / f'{config.input.dataset}_classes.txt'
    path = str(candidate) if candidate.is_file() else None
  if path is not None:
    from avsf_jax import storage  # noqa: PLC0415

    text = storage.read_text(path, 'class-name file')
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(num, int) and len(names) != num:
      raise storage.FileFault(f'{path}: {len(names)} class names for a {num}-class model')
    return names
  if isinstance(num, int):
    return [f'class_{i}' for i in range(num)]
  return [f'{head}_{i}' for head, size in sorted(num.items()) for i in range(size)]


def convert_file(config, source: str, input_path: str, *, allow_partial: bool = False):
  """(variables, report) for `input_path`, converted onto `config.model`'s network."""
  import jax  # noqa: PLC0415 - keep `--help` fast

  from avsf_jax import models  # noqa: PLC0415
  from avsf_jax.interop import checkpoint_io, convert  # noqa: PLC0415
  from avsf_jax.models import stats  # noqa: PLC0415

  state = checkpoint_io.load_checkpoint(input_path)
  caffe2 = source == 'caffe2' or (source == 'pyslowfast' and input_path.endswith('.pkl'))
  if config.get('task') == 'detection':
    return _convert_detector(config, source, state, input_path, caffe2, allow_partial)
  if caffe2:
    state = convert.caffe2_state(state)
  model = models.build_model(config.model)
  inputs = models.inputs_for(model, config)
  abstract = stats.abstract_variables(model, inputs)
  fallback = None
  if allow_partial:
    fallback = jax.jit(lambda x: model.init({'params': jax.random.key(0)}, x, train=False))(inputs)
  variables, report = convert.convert(
    abstract, state, convert.NAME_MAPS[source](state), fallback=fallback
  )
  if not report.complete and not allow_partial:
    raise convert.ConversionError(
      f'{input_path} does not match {config.model.pathways} (depth {config.model.depth}):\n'
      f'{report.summary()}\nFix the --config, or pass --allow_partial to keep the missing '
      'tensors at their initial values.'
    )
  return variables, report


def _convert_detector(config, source, state, input_path, caffe2, allow_partial):
  """A PySlowFast AVA detector (`configs/ava.py`, `config.task = 'detection'`): the backbone
  by the Kinetics name map plus `head.projection` onto the RoI head (`interop.ava_convert`)."""
  from avsf_jax.interop import ava_convert, convert  # noqa: PLC0415

  if source not in ('pyslowfast', 'caffe2'):
    raise convert.ConversionError(
      f'{input_path}: --source={source} has no AVA detector mapping; detection configs convert '
      "PySlowFast AVA checkpoints (--source=pyslowfast: .pyth, or the zoo's Caffe2 .pkl; "
      '--source=caffe2)'
    )
  fallback = ava_convert.init_detector_variables(config) if allow_partial else None
  try:
    return ava_convert.convert_detector(config, state, caffe2=caffe2, fallback=fallback)
  except convert.ConversionError as e:
    raise convert.ConversionError(
      f'{input_path}: {e}\nFix the --config, or pass --allow_partial to keep the missing '
      'tensors at their initial values.'
    ) from None


def main(argv):
  """The command line; a bad input file ends it with one line naming the file and the fault
  (the traceback too with --verbose)."""
  del argv

  # Faults (storage.FileFault, export.ExportError, checkpoint_io.UnsafeCheckpointError,
  # convert.ConversionError) end it in one line through console.guard (see __main__).
  _convert()


def _convert():
  for name, value in (('config', flags.FLAGS.config), ('source', flags.FLAGS.source)):
    if value is None:
      sys.exit(f'convert_checkpoint: --{name} is required')
  if not flags.FLAGS.input or not flags.FLAGS.output:
    sys.exit('convert_checkpoint: --input and --output are required')
  from avsf_jax import export  # noqa: PLC0415

  config = flags.FLAGS.config
  variables, report = convert_file(
    config, flags.FLAGS.source, flags.FLAGS.input, allow_partial=flags.FLAGS.allow_partial
  )
  logging.info('%s', report.summary())
  print(report.summary())
  path = export.write_from_config(
    flags.FLAGS.output,
    config,
    variables,
    class_names_for(config, flags.FLAGS.class_names),
    extra_metadata={'converted_from': {'source': flags.FLAGS.source, 'file': flags.FLAGS.input}},
    overwrite=flags.FLAGS.overwrite,
  )
  print(f'wrote {path}')


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, because this module is
  also imported as a library (absl flags are process-global)."""
  config_flags.DEFINE_config_file('config', None, 'Config file (with :variant).')
  flags.DEFINE_enum('source', None, ['pytorchvideo', 'pyslowfast', 'caffe2'], 'Format.')
  flags.DEFINE_string('input', None, 'Checkpoint file (.pyth / .pt / .pkl).')
  flags.DEFINE_string('output', None, 'Export directory to write.')
  flags.DEFINE_bool('allow_partial', False, 'Convert despite missing tensors.')
  flags.DEFINE_bool('overwrite', False, 'Replace an existing export.')
  console.define_flags()
  flags.DEFINE_string(
    'class_names', None, 'Text file with one class name per line (default: from the dataset).'
  )


if __name__ == '__main__':
  define_flags()
  app.run(console.guard('convert_checkpoint', main), flags_parser=console.parse_flags)
