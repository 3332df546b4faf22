"""Non-local block (Wang et al. 2018) as PySlowFast instantiates it for "+NL" SlowFast models."""

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Callable[..., nn.Module]

INSTANTIATIONS = ('dot_product', 'softmax')


class NonLocal(nn.Module):
  """Non-local block with a residual connection.

  theta/phi/g are 1x1x1 convs to `inner` channels (with bias, as in PySlowFast); keys and
  values are max-pooled by `pool` (no padding) before their convs. `instantiation` picks how
  the theta.phi affinity is normalised (Wang et al. 2018, section 3.2):
    - 'dot_product': divided by the number of key positions, no softmax (what PySlowFast's
      SlowFast+NL configs use);
    - 'softmax': scaled by `inner ** -0.5`, softmax over keys (embedded Gaussian).
  The output conv returns to the input width, followed by BN whose scale starts at zero, so
  the block starts as the identity.
  """

  inner: int
  pool: Sequence[int]
  conv: ModuleDef
  norm: ModuleDef
  instantiation: str = 'dot_product'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n, channels = x.shape[0], x.shape[-1]
    theta = self.conv(self.inner, (1, 1, 1), use_bias=True, name='theta')(x)
    pooled = x
    if any(p > 1 for p in self.pool):
      pooled = nn.max_pool(x, tuple(self.pool), strides=tuple(self.pool), padding='VALID')
    phi = self.conv(self.inner, (1, 1, 1), use_bias=True, name='phi')(pooled)
    g = self.conv(self.inner, (1, 1, 1), use_bias=True, name='g')(pooled)

    theta = theta.reshape(n, -1, self.inner)
    phi = phi.reshape(n, -1, self.inner)
    g = g.reshape(n, -1, self.inner)
    affinity = jnp.einsum('nqd,nkd->nqk', theta, phi)
    if self.instantiation == 'dot_product':
      attention = affinity / phi.shape[1]
    elif self.instantiation == 'softmax':
      affinity = affinity.astype(jnp.float32) * (self.inner**-0.5)
      attention = jax.nn.softmax(affinity, axis=-1).astype(g.dtype)
    else:
      raise ValueError(
        f'{self.name}: instantiation={self.instantiation!r}; expected one of {INSTANTIATIONS}'
      )
    y = jnp.einsum('nqk,nkd->nqd', attention, g).reshape(x.shape[:-1] + (self.inner,))
    y = self.conv(channels, (1, 1, 1), use_bias=True, name='out')(y)
    y = self.norm(name='bn', scale_init=nn.initializers.zeros)(y)
    return x + y
