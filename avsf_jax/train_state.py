"""The one training state: step, parameters, BatchNorm statistics, optimizer state."""

from typing import Any

import flax.struct
import jax
import optax


@flax.struct.dataclass
class TrainState:
  """Everything a training step reads and writes; all leaves are arrays (checkpointable)."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState

  def variables(self, batch_stats: Any = None) -> dict[str, Any]:
    """Model variables, optionally with other BatchNorm statistics (e.g. precise BN)."""
    stats = self.batch_stats if batch_stats is None else batch_stats
    return {'params': self.params, 'batch_stats': stats}
