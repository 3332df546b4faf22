"""How a `layers.Conv` is computed: one XLA convolution, or CPU-friendly lowerings.

`convolve(x, kernel, strides, dilation=..., lowering=...)` is the only entry point; the
lowering is a field of the model (`AVSlowFast.conv_lowering`, passed to every `layers.Conv`
through the conv builder), so jit's cache and a reader both see it. Lowerings:

  'xla'      one `lax.conv_general_dilated` per convolution: the well-trodden path of XLA's
             GPU and TPU emitters, and what `stats.count_macs` traces (papers' GFLOPs).
  'lowered'  forms that XLA's CPU backend runs much faster than its 3-D convolution
             (measured on CPU; docs/benchmarks.md):
               - 1 x ... x 1 (any rank and stride): one matrix product;
               - 1 x kh x kw (temporal stride 1): frames folded into the batch, one 2-D conv;
               - kt x 1 x 1 (spatial stride 1): a product per tap, outputs summed shifted
                 (temporally strided: the taps' frames stacked along channels, one product);
               - any other kt x kh x kw (the Fast stem's 5x7x7): groups of shifted frames
                 stacked along channels, one 2-D convolution (`_grouped_time_taps_conv`).
  'auto'     'lowered' on CPU, 'xla' on GPU and TPU (resolved when the model is traced).
All compute the same sums as the 3-D convolution (tests/models/test_layers.py).
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

LOWERINGS = ('auto', 'xla', 'lowered')


def torch_padding(kernel_size: Sequence[int], dilation: Sequence[int] | None = None):
  """Symmetric `d * (k // 2)` padding per axis, as PyTorch's `padding=d*(k//2)` gives.

  XLA's 'SAME' pads asymmetrically for even inputs with stride 2, which shifts every feature
  map by half a pixel relative to PyTorch; explicit pairs keep weights interchangeable.
  """
  dilation = dilation or (1,) * len(kernel_size)
  return [(d * (k // 2), d * (k // 2)) for k, d in zip(kernel_size, dilation, strict=True)]


def resolve(lowering: str) -> str:
  """'xla' or 'lowered' for a `lowering` field value ('auto' looks at the default backend)."""
  if lowering not in LOWERINGS:
    raise ValueError(f'conv lowering {lowering!r}; one of {LOWERINGS}')
  if lowering == 'auto':
    return 'lowered' if jax.default_backend() == 'cpu' else 'xla'
  return lowering


def convolve(
  x: jax.Array,
  kernel: jax.Array,
  strides: tuple[int, ...],
  *,
  dilation: tuple[int, ...] | None = None,
  lowering: str = 'auto',
) -> jax.Array:
  """The convolution of `layers.Conv` (PyTorch padding), computed as `lowering` says."""
  kernel_size = kernel.shape[:-2]
  dilation = tuple(dilation) if dilation is not None else (1,) * len(kernel_size)
  if resolve(lowering) == 'xla':
    return _xla_conv(x, kernel, strides, dilation)
  if all(k == 1 for k in kernel_size):
    return _pointwise_conv(x, kernel.reshape(kernel.shape[-2:]), strides)
  if len(kernel_size) == 3 and kernel_size[0] == 1 and strides[0] == 1:
    return _frames_as_batch_conv(x, kernel[0], strides[1:], dilation[1:])
  if len(kernel_size) != 3 or any(d != 1 for d in dilation):
    return _xla_conv(x, kernel, strides, dilation)
  if kernel_size[1:] == (1, 1) and strides[1:] == (1, 1):
    return _temporal_conv(x, kernel[:, 0, 0], strides[0])
  return _grouped_time_taps_conv(x, kernel, strides)


def _xla_conv(
  x: jax.Array,
  kernel: jax.Array,
  strides: tuple[int, ...],
  dilation: tuple[int, ...] | None = None,
) -> jax.Array:
  rank = kernel.ndim - 2
  return jax.lax.conv_general_dilated(
    x,
    kernel,
    strides,
    torch_padding(kernel.shape[:rank], dilation),
    rhs_dilation=dilation,
    dimension_numbers=_dimension_numbers(rank),
  )


def _dimension_numbers(rank: int) -> tuple[str, str, str]:
  spatial = 'DHW'[3 - rank :] if rank <= 3 else None
  if spatial is None:
    raise ValueError(f'Conv supports 1-3 spatial dims, got {rank}')
  return f'N{spatial}C', f'{spatial}IO', f'N{spatial}C'


def _frames_as_batch_conv(
  x: jax.Array,
  kernel: jax.Array,
  strides: tuple[int, int],
  dilation: tuple[int, int] | None = None,
) -> jax.Array:
  """(N, T, H, W, C) conv with a 1 x kh x kw kernel as one 2-D conv over N*T frames."""
  n, t = x.shape[:2]
  y = _xla_conv(x.reshape((n * t, *x.shape[2:])), kernel, strides, dilation)
  return y.reshape((n, t, *y.shape[1:]))


def _pointwise_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...]) -> jax.Array:
  """A 1 x ... x 1 convolution (kernel (C, O)) as a matrix product over the strided pixels."""
  if any(s > 1 for s in strides):
    x = x[(slice(None), *(slice(None, None, s) for s in strides))]
  return jnp.einsum('...c,co->...o', x, kernel)


def _shifted_frames(x: jax.Array, taps: int, stride: int) -> list[jax.Array]:
  """The `taps` frame sequences a kt-tap temporal kernel with `k//2` padding reads."""
  pad, t = taps // 2, x.shape[1]
  padded = jnp.pad(x, ((0, 0), (pad, pad)) + ((0, 0),) * (x.ndim - 2))
  t_out = (t + 2 * pad - taps) // stride + 1
  return [padded[:, k : k + stride * (t_out - 1) + 1 : stride] for k in range(taps)]


def _taps_as_channels(x: jax.Array, taps: int, stride: int) -> jax.Array:
  """The frames each of `taps` temporal taps reads, stacked along channels (tap-major)."""
  return jnp.concatenate(_shifted_frames(x, taps, stride), axis=-1)


def _sum_shifted(maps: Sequence[jax.Array], offsets: Sequence[int], t_out: int) -> jax.Array:
  """sum_i maps[i][:, t + offsets[i]] for t < t_out, reading zeros outside each map.

  XLA fuses the pads, slices and adds into one pass over the (small) output maps.
  """
  terms = []
  for y, offset in zip(maps, offsets, strict=True):
    low, high = max(-offset, 0), max(offset + t_out - y.shape[1], 0)
    y = jnp.pad(y, ((0, 0), (low, high)) + ((0, 0),) * (y.ndim - 2))
    terms.append(y[:, offset + low : offset + low + t_out])
  return functools.reduce(jnp.add, terms)


def _grouped_time_taps_conv(
  x: jax.Array, kernel: jax.Array, strides: tuple[int, int, int]
) -> jax.Array:
  """(N, T, H, W, C) conv with a kt x kh x kw kernel as one 2-D conv over the frames.

  The kt temporal taps are split into 2 groups of a = ceil(kt/2) consecutive taps. The input
  gets a shifted copies stacked along channels (a*C channels), each group's kernels are one
  block of outputs (2*O channels), and one 2-D convolution computes both groups for every
  frame; the output is group 0's map plus group 1's map shifted by a frames. For the Fast
  stem (5x7x7, 3 -> 8 channels) this is 1.4x faster on CPU than stacking all 5 taps (15 -> 8
  channels) and 13x faster than XLA's 3-D convolution. Temporal stride > 1 stacks all taps.
  """
  taps, kh, kw, c, o = kernel.shape
  if strides[0] > 1 or taps < 3:
    kernel_2d = kernel.transpose(1, 2, 0, 3, 4).reshape(kh, kw, taps * c, o)
    return _frames_as_batch_conv(_taps_as_channels(x, taps, strides[0]), kernel_2d, strides[1:])
  a = -(-taps // 2)
  # (2a, kh, kw, C, O) -> (kh, kw, a*C, 2*O): input block i is frame shift i, output block j
  # is group j (taps j*a .. j*a + a - 1; the missing tap of an odd kt is zero).
  kernel = jnp.pad(kernel, ((0, 2 * a - taps),) + ((0, 0),) * 4)
  kernel_2d = kernel.reshape(2, a, kh, kw, c, o).transpose(2, 3, 1, 4, 0, 5)
  kernel_2d = kernel_2d.reshape(kh, kw, a * c, 2 * o)
  # Group j at output frame t reads input frames t - kt//2 + j*a + i (i < a): stack, for
  # every start s = t - kt//2 + j*a, the a frames from s on.
  t, pad = x.shape[1], taps // 2
  t_out = t + 2 * pad - taps + 1
  positions = t_out + a
  padded = jnp.pad(x, ((0, 0), (pad, positions + a - 1 - pad - t)) + ((0, 0),) * 3)
  stacked = jnp.concatenate([padded[:, i : i + positions] for i in range(a)], axis=-1)
  groups = _frames_as_batch_conv(stacked, kernel_2d, strides[1:])
  return _sum_shifted([groups[..., :o], groups[..., o:]], [0, a], t_out)


def _temporal_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """(N, T, H, W, C) conv with a kt x 1 x 1 kernel (kt, C, O), without a 3-D convolution.

  Stride 1: one matrix product per tap on the unpadded input, and the kt output maps summed
  with tap k's map shifted by k - kt//2 frames (no copy of the input is made). Strided (the
  Fast->Slow laterals): the frames each tap reads are stacked along channels and one product
  maps kt*C -> O (half the backward time of a kt x 1 2-D convolution over (T, H*W)).
  """
  taps, c, o = kernel.shape
  pad = taps // 2
  if stride > 1:
    stacked = _taps_as_channels(x, taps, stride)
    return jnp.einsum('nthwc,co->nthwo', stacked, kernel.reshape(taps * c, o))
  maps = [jnp.einsum('nthwc,co->nthwo', x, kernel[k]) for k in range(taps)]
  return _sum_shifted(maps, [k - pad for k in range(taps)], x.shape[1] + 2 * pad - taps + 1)
