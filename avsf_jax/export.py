r"""Evaluation-ready exports (SPEC section 7) and the small loader that reads them.

An export directory holds:
  variables/        params + batch statistics (an orbax checkpoint)
  metadata.json     the model config, class names, input spec and preprocessing constants
  predict.jaxexport the inference function `(variables, batch) -> logits`, serialized with
                    `jax.export` for CPU, CUDA and TPU, with a symbolic batch size

`load(EXPORT_DIR)` needs none of the model or training code: it restores the variables and
deserializes the function. Writing is atomic (a temporary directory renamed into place), an
existing export is never overwritten without `overwrite=True`, and non-finite variables are
refused.

  python -m avsf_jax.export --workdir=DIR --output=EXPORT_DIR [--overwrite] [--config=CFG]

Without `--config`, the resolved config that training saved as WORKDIR/config.json is used.
"""

import dataclasses
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from avsf_jax import storage
from avsf_jax.input import info as info_lib

FORMAT = 'avsf_jax.export'
VERSION = 1
PLATFORMS = ('cpu', 'cuda', 'tpu')


class ExportError(storage.FileFault):
  """The export cannot be written or read; the message names the path and the reason."""


@dataclasses.dataclass(frozen=True)
class ExportedModel:
  """A loaded export: `predict(batch)` and everything needed to prepare the batch."""

  metadata: dict[str, Any]
  variables: Any
  function: Any  # jax.export.Exported

  @property
  def class_names(self) -> list[str]:
    return self.metadata['class_names']

  @property
  def input_spec(self) -> dict[str, list[int]]:
    return self.metadata['input_spec']

  def predict(self, batch: Mapping[str, Any]) -> Any:
    """Logits for `batch`: {name: float32 array (N, *input_spec[name])}."""
    missing = sorted(set(self.input_spec) - set(batch))
    if missing:
      raise ExportError(
        f'predict: batch lacks {missing}; the export needs {sorted(self.input_spec)}'
      )
    inputs = {}
    sizes = {np.shape(batch[name])[0] if np.ndim(batch[name]) else None for name in batch}
    if sizes & {0, None}:
      raise ExportError('predict: an empty batch (or a scalar input); give at least one example')
    for name, shape in self.input_spec.items():
      value = jnp.asarray(batch[name], jnp.float32)
      if tuple(value.shape[1:]) != tuple(shape):
        raise ExportError(
          f'predict: batch[{name!r}] has shape {tuple(value.shape)}, expected (N, *{tuple(shape)})'
        )
      inputs[name] = value
    return self.function.call(self.variables, inputs)


def _check_finite(variables: Any, where: str) -> None:
  for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
    if not np.all(np.isfinite(np.asarray(leaf))):
      raise ExportError(f'{where}: {jax.tree_util.keystr(path)} holds NaN or Inf; not exporting')


def write(
  output_dir: str | os.PathLike,
  *,
  apply_fn: Callable[[Any, Mapping[str, jax.Array]], Any],
  variables: Any,
  model_config: Mapping[str, Any],
  class_names: Sequence[str],
  input_spec: Mapping[str, Sequence[int]],
  preprocessing: Mapping[str, Any],
  extra_metadata: Mapping[str, Any] | None = None,
  overwrite: bool = False,
  platforms: Sequence[str] = PLATFORMS,
) -> epath.Path:
  """Writes an export of `apply_fn(variables, batch) -> logits` atomically; returns its path."""
  output = storage.path(output_dir)
  if output.exists() and not overwrite:
    raise ExportError(f'{output} exists; pass overwrite=True (--overwrite) to replace it')
  variables = jax.tree_util.tree_map(np.asarray, jax.device_get(variables))
  _check_finite(variables, str(output))

  batch = jax.export.symbolic_shape('batch')[0]
  input_specs = {
    name: jax.ShapeDtypeStruct((batch, *shape), jnp.float32) for name, shape in input_spec.items()
  }
  variable_specs = jax.tree_util.tree_map(
    lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), variables
  )
  exported = jax.export.export(jax.jit(apply_fn), platforms=tuple(platforms))(
    variable_specs, input_specs
  )
  metadata = {
    'format': FORMAT,
    'version': VERSION,
    'model_config': dict(model_config),
    'class_names': list(class_names),
    'input_spec': {k: list(v) for k, v in input_spec.items()},
    'preprocessing': dict(preprocessing),
    'platforms': list(platforms),
    **dict(extra_metadata or {}),
  }

  output.parent.mkdir(parents=True, exist_ok=True)
  if storage.is_url(output):
    # An object store renames a folder object by object, so a renamed export could be seen
    # half-copied. Written in place instead, with metadata.json (which `load` requires) last:
    # the completion marker. A replaced export loses its metadata.json first.
    if output.exists():
      (output / 'metadata.json').unlink(missing_ok=True)
      output.rmtree()
    _write_files(output, exported, variables, metadata)
    return output
  tmp = output.parent / f'.{output.name}.tmp-{uuid.uuid4().hex[:8]}'
  try:
    _write_files(tmp, exported, variables, metadata)
    if output.exists():
      trash = output.parent / f'.{output.name}.old-{uuid.uuid4().hex[:8]}'
      output.rename(trash)
      tmp.rename(output)
      trash.rmtree()
    else:
      tmp.rename(output)
  finally:
    if tmp.exists():
      tmp.rmtree(missing_ok=True)
  return output


def _digests(folder: epath.Path) -> dict[str, str]:
  """sha256 of predict.jaxexport and of every file under variables/, by relative path."""
  files = [folder / 'predict.jaxexport']
  for root, _, names in (folder / 'variables').walk():
    files += sorted(epath.Path(root) / name for name in names)
  return {
    str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
    for p in files
    if p.exists()
  }


def _verify(folder: epath.Path, digests: Mapping[str, str]) -> None:
  """ExportError naming the first file that is missing, unreadable or changed."""
  for name, digest in sorted(digests.items()):
    try:
      data = storage.read_bytes(folder / name, 'export file')
    except storage.FileFault as e:
      raise ExportError(str(e)) from None
    if hashlib.sha256(data).hexdigest() != digest:
      raise ExportError(
        f'{folder / name}: damaged (its sha256 differs from the one the export recorded: '
        'corrupt, truncated or replaced bytes)'
      )


def _write_files(folder: epath.Path, exported, variables, metadata) -> None:
  """variables/, predict.jaxexport, then metadata.json (with their sha256): a folder without
  metadata.json is no export."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(folder / 'variables', variables)
  checkpointer.wait_until_finished()
  (folder / 'predict.jaxexport').write_bytes(exported.serialize())
  metadata = {**metadata, 'sha256': _digests(folder)}
  (folder / 'metadata.json').write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str))


def load(export_dir: str | os.PathLike) -> ExportedModel:
  """Reads an export written by `write`; needs no model or training code.

  Every failure is an ExportError naming the file and what is wrong with it.
  """
  path = storage.path(export_dir)
  if not path.exists():
    raise ExportError(f'{path}: no such export directory')
  meta_path = path / 'metadata.json'
  if not meta_path.exists():
    raise ExportError(f'{path}: not an avsf_jax export (no metadata.json)')
  try:
    metadata = json.loads(storage.read_text(meta_path, 'export metadata'))
  except storage.FileFault as e:
    raise ExportError(str(e)) from None
  except json.JSONDecodeError as e:
    raise ExportError(f'{meta_path}: not readable JSON ({e})') from None
  if not isinstance(metadata, dict) or metadata.get('format') != FORMAT:
    raise ExportError(f'{meta_path}: not avsf_jax export metadata (expected format {FORMAT!r})')
  if metadata.get('version') != VERSION:
    raise ExportError(
      f'{meta_path}: export format version {metadata.get("version")}, expected {VERSION}'
    )
  _verify(path, metadata.get('sha256') or {})  # exports of older versions have none
  try:
    variables = ocp.StandardCheckpointer().restore(path / 'variables')
  except Exception as e:  # noqa: BLE001 - orbax raises many kinds; the message says which
    raise ExportError(
      f'{path / "variables"}: the variables cannot be restored ({_first_line(e)})'
    ) from None
  variables = jax.tree_util.tree_map(np.asarray, variables)
  _check_finite(variables, str(path / 'variables'))
  function_path = path / 'predict.jaxexport'
  try:
    raw = storage.read_bytes(function_path, 'serialized predict function')
  except storage.FileFault as e:
    raise ExportError(str(e)) from None
  try:
    function = jax.export.deserialize(bytearray(raw))
  except Exception as e:  # noqa: BLE001 - flatbuffer / struct errors of a damaged file
    raise ExportError(
      f'{function_path}: damaged or not a jax.export file ({_first_line(e)})'
    ) from None
  return ExportedModel(metadata=metadata, variables=variables, function=function)


def _first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f'{type(error).__name__}: {text[0][:200]}' if text else type(error).__name__


def preprocessing_of(config: Any) -> dict[str, Any]:
  """The constants a caller needs to turn a video into the export's inputs."""
  keys = ('num_frames', 'tau', 'mean', 'std', 'test_short_side', 'test_crop_size')
  out = {f'video_{k}': config.input[k] for k in keys if k in config.input}
  if 'alpha' in config.model:
    out['video_alpha'] = config.model.alpha
  out.update({f'audio_{k}': v for k, v in config.audio.items()})
  return out


def write_experiment(
  output_dir: str | os.PathLike,
  experiment: Any,
  variables: Any,
  *,
  preprocessing: Mapping[str, Any] | None = None,
  extra_metadata: Mapping[str, Any] | None = None,
  overwrite: bool = False,
) -> epath.Path:
  """`write` for an `experiment.Experiment`'s task and model (imports the model code).

  `preprocessing` replaces `preprocessing_of(config)` for tasks whose inputs are not clips.
  """
  config, task = experiment.config, experiment.task
  spec = task.export_input_spec()
  if preprocessing is None:
    preprocessing = task.export_preprocessing()
  return write(
    output_dir,
    apply_fn=task.export_function(experiment.model),
    variables=task.export_variables(variables),
    model_config=config.model.to_dict(),
    class_names=info_lib.flat_class_names(experiment.info.class_names),
    input_spec={k: list(v.shape) for k, v in spec.items()},
    preprocessing=preprocessing_of(config) if preprocessing is None else dict(preprocessing),
    extra_metadata={'task': task.name, **dict(extra_metadata or {})},
    overwrite=overwrite,
  )


def write_from_config(
  output_dir: str | os.PathLike,
  config: Any,
  variables: Any,
  class_names: Sequence[str],
  *,
  extra_metadata: Mapping[str, Any] | None = None,
  overwrite: bool = False,
) -> epath.Path:
  """`write` for the model of a config's task, without its dataset (converted weights)."""
  from avsf_jax import tasks  # noqa: PLC0415 - loading an export must not need the models

  task = tasks.create(config, info=None)
  spec = task.input_spec(train=False)
  return write(
    output_dir,
    apply_fn=task.export_function(task.build_model()),
    variables={'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})},
    model_config=config.model.to_dict(),
    class_names=list(class_names),
    input_spec={k: list(v.shape) for k, v in spec.items()},
    preprocessing=preprocessing_of(config),
    extra_metadata={'task': task.name, **dict(extra_metadata or {})},
    overwrite=overwrite,
  )


def export_workdir(
  config: Any, workdir: str, output: str, *, step: int | None = None, overwrite: bool = False
):
  """Exports a checkpoint of a training workdir (the newest valid one by default), with the
  evaluation's BN statistics saved beside it, so `evaluate --export` reproduces
  `WORKDIR/eval_results.json` and no training data is read."""
  from avsf_jax import experiment as experiment_lib  # noqa: PLC0415

  experiment = experiment_lib.Experiment(config)
  variables, step = experiment.restore(workdir, step=step)
  if jax.process_index() != 0:  # every process restores; one writes
    return storage.path(output)
  return write_experiment(
    output,
    experiment,
    jax.device_get(variables),
    extra_metadata={'workdir': str(storage.path(workdir)), 'step': step},
    overwrite=overwrite,
  )


def config_from_workdir(workdir: str) -> Any:
  """The resolved config a training run saved as WORKDIR/config.json."""
  import ml_collections  # noqa: PLC0415

  path = storage.path(workdir) / 'config.json'
  if not path.exists():
    raise ExportError(f'{path} not found: pass --config=CONFIG_FILE[:variant]')
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def main(argv):
  """`python -m avsf_jax.export --config=CFG --workdir=DIR --output=EXPORT_DIR [--overwrite]`."""
  from absl import app, flags  # noqa: PLC0415

  from avsf_jax import checkpointing, console  # noqa: PLC0415
  from avsf_jax import mesh as mesh_lib  # noqa: PLC0415

  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  args = flags.FLAGS
  # console: library logs to WORKDIR/log.txt, one line per stage, one-line errors.
  if '://' not in args.workdir and not os.path.isdir(args.workdir):
    raise FileNotFoundError(f'{args.workdir}: no such training workdir')
  console.setup(storage.path(args.workdir) / 'log.txt', verbose=args.verbose)
  try:
    config = args.config if args.config is not None else config_from_workdir(args.workdir)
    mesh_lib.prepare_process()
    if jax.process_count() > 1 and config.mesh.param_sharding != 'replicated':
      raise app.UsageError('export: gather FSDP-sharded parameters first (export on one host)')
    path = export_workdir(
      config, args.workdir, args.output, step=args.step, overwrite=args.overwrite
    )
  except (storage.FileFault, FileNotFoundError, checkpointing.CheckpointError) as e:
    raise console.fail('export', e) from None
  console.stage('export', f'{path} (evaluate it with --export={path})')


def _define_flags() -> None:
  """Flags of the command line only: this module is also imported as a library."""
  from absl import flags  # noqa: PLC0415
  from ml_collections import config_flags  # noqa: PLC0415

  from avsf_jax import console  # noqa: PLC0415

  config_flags.DEFINE_config_file('config', None, 'Config file (with :variant).')
  flags.DEFINE_string('workdir', None, 'Training workdir whose newest checkpoint to export.')
  flags.DEFINE_string('output', None, 'Export directory to write.')
  flags.DEFINE_bool('overwrite', False, 'Replace an existing export.')
  flags.DEFINE_integer('step', None, 'Checkpoint step to export (default: the newest valid one).')
  console.define_flags()
  flags.mark_flags_as_required(['workdir', 'output'])


if __name__ == '__main__':
  from absl import app

  from avsf_jax import console

  console.quiet_native_logs()
  _define_flags()
  app.run(console.guard('export', main), flags_parser=console.parse_flags)
