"""PySlowFast AVA detector checkpoints -> `models.detector.Detector` variables.

PySlowFast's AVA models (for example the model zoo's `SLOWFAST_32x2_R101_50_50.pkl`, spec
`ava.md` 6) are its SlowFast backbone with res5 at stride 1 / dilation 2 plus `ResNetRoIHead`,
whose only weights are the FC `head.projection.{weight,bias}` (80 classes). The backbone's
names are those of a Kinetics model (`interop.convert.pyslowfast_name_map`); the FC maps onto
our RoI head's `head/projection` (`models.detection_head.RoIHead`). A Caffe2 `.pkl` is renamed
to PySlowFast's names first (`convert.caffe2_state`; its `pred` blobs become
`head.projection`). Use the named config `configs/ava.py:slowfast_32x2_r101_50_50` (legacy,
non-aligned RoIAlign as the c2 zoo configs).
"""

from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from avsf_jax.interop import convert
from avsf_jax.tasks import detection

_HEAD_LEAVES = {'kernel': 'weight', 'bias': 'bias'}


def pyslowfast_detector_name_map(state_keys) -> convert.NameMap:
  """`convert.pyslowfast_name_map` plus the RoI head's FC: head/projection <- head.projection."""
  backbone = convert.pyslowfast_name_map(state_keys)

  def name_map(path: convert.Path) -> str | None:
    if path[0] == 'params' and path[1:-1] == ('head', 'projection'):
      return f'head.projection.{_HEAD_LEAVES[path[-1]]}'
    return backbone(path)

  return name_map


def abstract_detector_variables(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Shapes of the detector's variables for `config` (nothing is computed)."""
  task = detection.Detection(config, None)
  model = task.build_model()
  return jax.eval_shape(lambda: task.init_variables(model, jax.random.key(0)))


def init_detector_variables(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Freshly initialised detector variables for `config` (the values a partial conversion
  keeps for the tensors the checkpoint lacks)."""
  task = detection.Detection(config, None)
  model = task.build_model()
  return jax.jit(lambda key: task.init_variables(model, key))(jax.random.key(0))


def convert_detector(
  config: ml_collections.ConfigDict,
  state: Mapping[str, np.ndarray],
  *,
  caffe2: bool = False,
  fallback: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], convert.ConversionReport]:
  """(variables, report) of a PySlowFast AVA state dict (or Caffe2 blobs with `caffe2`) on
  `config`'s detector. Any missing, unexpected or mis-shaped tensor is a `ConversionError`
  listing each by name, unless `fallback` (`init_detector_variables`) is given: the
  tensors without a well-shaped source then take its values and the report lists them."""
  if caffe2:
    state = convert.caffe2_state(state)
  abstract = abstract_detector_variables(config)
  variables, report = convert.convert(
    abstract, state, pyslowfast_detector_name_map(state), fallback=fallback
  )
  if not report.complete and fallback is None:
    raise convert.ConversionError(
      f'the checkpoint does not match the detector of config.model (depth '
      f'{config.model.depth}, pathways {tuple(config.model.pathways)}):\n{report.summary()}'
    )
  return variables, report
