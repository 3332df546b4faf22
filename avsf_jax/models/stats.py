"""Exact parameter and multiply-add counts, read off the model itself.

FLOPs follow the papers' convention: multiply-adds of convolutions and matrix products
(fvcore's convention, used for every GFLOPs figure of SlowFast and AVSlowFast), counted from
the model's jaxpr, so they are exactly what the module computes for the given input shapes
(with each convolution counted as itself, not as the cheaper-on-CPU form `layers.Conv` may
run it in).
Element-wise ops (BN, ReLU, pooling, softmax) are not counted, as in the papers.
Nothing is compiled or run: both counts work from abstract shapes.
"""

import collections
import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np

# Top-level module name prefix -> reporting group.
_GROUPS = (
  ('slow_', 'slow'),
  ('fast_to_slow_', 'fast_to_slow'),
  ('fast_', 'fast'),
  ('audio_to_', 'audio_fusion'),
  ('audio_visual_nonlocal_', 'audio_fusion'),
  ('audio_', 'audio'),
  ('avs_', 'avs'),
  ('head', 'head'),
)


def group_of(module_path: str) -> str:
  """'slow_res2/block0/conv_a' -> 'slow'; unknown top-level names map to 'other'."""
  top = module_path.split('/')[0]
  for prefix, group in _GROUPS:
    if top.startswith(prefix):
      return group
  return 'other'


def abstract_variables(model: nn.Module, inputs: Mapping[str, Any]) -> Any:
  """Shapes of `model.init`'s variables, without allocating or computing them."""
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}
  return jax.eval_shape(functools.partial(model.init, train=False), rngs, inputs)


def count_params(variables: Mapping[str, Any]) -> dict[str, int]:
  """Trainable parameter counts per group and in total ('total')."""
  counts: dict[str, int] = collections.Counter()
  for path, leaf in jax.tree_util.tree_flatten_with_path(variables['params'])[0]:
    top = getattr(path[0], 'key', str(path[0]))
    counts[group_of(str(top))] += math.prod(leaf.shape)
  counts['total'] = sum(counts.values())
  return dict(counts)


def _macs(eqn: Any) -> int:
  name = eqn.primitive.name
  if name == 'conv_general_dilated':
    rhs = eqn.invars[1].aval.shape
    rhs_spec = eqn.params['dimension_numbers'].rhs_spec
    kernel_in = rhs[rhs_spec[1]] * math.prod(rhs[d] for d in rhs_spec[2:])
    return math.prod(eqn.outvars[0].aval.shape) * kernel_in
  if name == 'dot_general':
    (lhs_contract, _), _ = eqn.params['dimension_numbers']
    lhs = eqn.invars[0].aval.shape
    return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)
  return 0


def _sub_jaxprs(params: Mapping[str, Any]):
  for value in params.values():
    for item in value if isinstance(value, list | tuple) else (value,):
      if isinstance(item, jax.extend.core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jax.extend.core.Jaxpr):
        yield item


def _walk(jaxpr: Any, prefix: str, counts: dict[str, int]) -> None:
  for eqn in jaxpr.eqns:
    # Flax adds 'Class.method' scopes for method calls; module names never contain '.'.
    stack = '/'.join(c for c in str(eqn.source_info.name_stack).split('/') if c and '.' not in c)
    path = f'{prefix}/{stack}' if prefix and stack else (prefix or stack)
    macs = _macs(eqn)
    if macs:
      # The first component is the root module's class name.
      module_path = path.split('/', 1)[1] if '/' in path else path
      counts[group_of(module_path)] += macs
    for sub in _sub_jaxprs(eqn.params):
      _walk(sub, path, counts)


def count_macs(model: nn.Module, variables: Any, inputs: Mapping[str, Any]) -> dict[str, int]:
  """Multiply-adds of one eval-mode forward pass per group and in total ('total')."""

  if 'conv_lowering' in {f.name for f in dataclasses.fields(model)}:
    model = model.clone(conv_lowering='xla')  # each convolution counted as itself

  def forward(variables, inputs):
    return model.apply(variables, inputs, train=False)

  closed = jax.make_jaxpr(forward)(variables, inputs)
  counts: dict[str, int] = collections.Counter()
  _walk(closed.jaxpr, '', counts)
  counts['total'] = sum(counts.values())
  return dict(counts)


def model_stats(model: nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
  """{'params': int, 'gflops': float, 'params_by_group': {...}, 'gflops_by_group': {...}}."""
  inputs = {
    k: jax.ShapeDtypeStruct(np.shape(v), getattr(v, 'dtype', np.float32)) for k, v in inputs.items()
  }
  variables = abstract_variables(model, inputs)
  params = count_params(variables)
  macs = count_macs(model, variables, inputs)
  return {
    'params': params['total'],
    'gflops': macs['total'] / 1e9,
    'params_by_group': {k: v for k, v in params.items() if k != 'total'},
    'gflops_by_group': {k: v / 1e9 for k, v in macs.items() if k != 'total'},
  }
