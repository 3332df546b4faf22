"""The SlowFast / AVSlowFast model zoo. Imports no TensorFlow."""

from avsf_jax.models.avslowfast import AVSlowFast
from avsf_jax.models.build import build_model, example_inputs, inputs_for

__all__ = ['AVSlowFast', 'build_model', 'example_inputs', 'inputs_for']
