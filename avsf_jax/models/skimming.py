"""IMGAUD-SKIMMING (Listen to Look, §3.3): an LSTM that previews a video through feature banks.

A video is given as two banks of cheap preview features, image Z^I and audio Z^A, each (L, D),
one row per image-audio pair, plus a validity mask (bucketed, padded lengths: one compiled
program serves every video of a bucket). For T steps the module

1. fuses the current pair, f_t = Ψ(z̃^I_t, z̃^A_t), starting from the masked mean features;
2. advances a weight-normed LSTM cell, (h_t, c_t) = LSTM(f_t; h_{t-1}, c_{t-1});
3. queries both banks with q^M_t = Query^M(h_t) against keys k^M_j = ReLU(BN(W^M z^M_j)) by a
   masked scaled dot product, w^M = softmax_j(k^M_j · q^M_t / √d) (Eq. 6);
4. weighs the two attentions with modality scores s_t = softmax(W_s h_t), and indexes the next
   pair: softly in training (Eqs. 7-8) and by argmax at test (`test_index`);
5. masks the argmax positions so that no pair is picked twice.

The video is classified from the mean of the fused features, m = (1/T) Σ f_t (Eq. 9), and every
step also predicts from h_t (`step_logits`). The running means m_t give the logits of every
early stop t' (`running_logits`, §3.5).

Details the paper leaves out follow the official code (spec §3.2): the mean-feature start, a
random valid position masked before step 1, hidden 1024, key dimension 512, BatchNorm in the
queries and keys, keys' BN statistics over every (video, position) of the padded batch, and the
test-time choice of the *image* query's argmax for both banks.

Also here: the NON-RECURRENT and LSTM baselines of §4 (`NonRecurrentSkimming`,
`SequenceLSTM`), the official single-bank variant for "indexing | recognition" settings
(`SingleBankSkimming`, §3.6), and sparse indexing (`subsample_bank`, `interpolate_bank`,
`sparse_banks`, §3.4).
"""

import functools
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from avsf_jax.models import layers

Dtype = Any

TEST_INDEX = ('image', 'mixed', 'per_modality')
INDEX_MODALITIES = ('both', 'image', 'audio')
INTERPOLATIONS = ('torch_compat', 'exact_grid')
# The score given to masked positions (the official code's -1e35): exp() of it is exactly 0.
MASKED_SCORE = -1e35
# Ψ's weights: normal(0, 0.02) (spec §2.2); the official code also draws the queries', keys' and
# step predictor's weights so, and the keys' BN scales from normal(1, 0.02).
fusion_kernel_init = nn.initializers.normal(stddev=0.02)
skim_kernel_init = fusion_kernel_init


def key_bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def torch_uniform_init(fan_in: int):
  """PyTorch's default Linear bias (and LSTM weight) init: U(-1/√fan_in, 1/√fan_in)."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _dense(features: int, fan_in: int, name: str, dtype: Dtype, kernel_init=None) -> nn.Dense:
  """A Linear layer with PyTorch's default initialisation unless `kernel_init` is given."""
  return nn.Dense(
    features,
    kernel_init=kernel_init or nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform'),
    bias_init=torch_uniform_init(fan_in),
    dtype=dtype,
    param_dtype=jnp.float32,
    name=name,
  )


class WeightNormLSTMCell(nn.Module):
  """An LSTM cell whose two weight matrices are weight-normed per output unit (gates i, f, g, o).

  As PyTorch's `weight_norm(LSTMCell, dim=0)`: each of the 4·hidden rows of W_ih and W_hh is
  g·v/‖v‖. Kernels are stored transposed, (fan_in, 4·hidden), so the norm runs over axis 0; g
  starts at ‖v‖ (the effective weight at init is v ~ U(±1/√hidden), as PyTorch's). Both biases
  start at zero (spec §3.2).
  """

  hidden: int
  dtype: Dtype = jnp.float32

  def _weight(self, name: str, fan_in: int) -> jax.Array:
    v = self.param(
      f'{name}_v', torch_uniform_init(self.hidden), (fan_in, 4 * self.hidden), jnp.float32
    )
    g = self.param(f'{name}_g', lambda _: jnp.linalg.norm(v, axis=0))
    return v * (g / jnp.linalg.norm(v, axis=0))

  @nn.compact
  def __call__(
    self, inputs: jax.Array, carry: tuple[jax.Array, jax.Array]
  ) -> tuple[jax.Array, jax.Array]:
    """One step: returns the new (h, c)."""
    h, c = carry
    w_ih = self._weight('ih', inputs.shape[-1])
    w_hh = self._weight('hh', self.hidden)
    b_ih = self.param('ih_bias', nn.initializers.zeros, (4 * self.hidden,), jnp.float32)
    b_hh = self.param('hh_bias', nn.initializers.zeros, (4 * self.hidden,), jnp.float32)
    dt = self.dtype
    gates = (
      inputs.astype(dt) @ w_ih.astype(dt) + h.astype(dt) @ w_hh.astype(dt) + (b_ih + b_hh)
    ).astype(jnp.float32)
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return h, c


class Fusion(nn.Module):
  """Ψ: concat(z^I, z^A) -> Linear -> ReLU -> Linear (spec §2.2), to the recognition feature."""

  hidden: int = 1024
  features: int = 512
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array, audio: jax.Array) -> jax.Array:
    x = jnp.concatenate([image, audio], axis=-1)
    x = _dense(self.hidden, x.shape[-1], 'fc1', self.dtype, fusion_kernel_init)(x)
    x = _dense(self.features, self.hidden, 'fc2', self.dtype, fusion_kernel_init)(nn.relu(x))
    return x.astype(jnp.float32)


def masked_attention(keys: jax.Array, query: jax.Array, mask: jax.Array) -> jax.Array:
  """Eq. (6): softmax over positions of k_j·q/√d, masked positions scored `MASKED_SCORE`.

  Args:
    keys: (B, L, d). query: (B, d). mask: (B, L), 1 where a position may be attended.

  Returns:
    (B, L) attention weights, exactly 0 at masked positions.
  """
  scores = jnp.einsum('bld,bd->bl', keys, query) / math.sqrt(keys.shape[-1])
  scores = scores * mask + (1.0 - mask) * MASKED_SCORE
  return jax.nn.softmax(scores.astype(jnp.float32), axis=-1)


def masked_mean(bank: jax.Array, mask: jax.Array) -> jax.Array:
  """The mean of the valid rows of (B, L, D) `bank` under (B, L) `mask`."""
  total = jnp.einsum('bld,bl->bd', bank, mask)
  return total / jnp.maximum(mask.sum(axis=1, keepdims=True), 1.0)


class Skimming(nn.Module):
  """IMGAUD-SKIMMING over feature banks; returns `(logits, aux)`.

  `inputs`: 'image' (B, L, D_I) and 'audio' (B, L, D_A) preview features, 'mask' (B, L) with 1
  for valid pairs, L >= `num_steps` (pad short videos by repeating their last pair), and
  optionally 'start_index' (B,) int32: the position masked before step 1 (otherwise drawn from
  the 'start' RNG stream among the valid positions).

  `aux`: 'step_logits' (B, T, C) from h_t; 'running_logits' (B, T, C) = FC_cls(m_t) for early
  stops t' = 1..T ('running_logits'[:, -1] == logits); 'image_indices' / 'audio_indices' (B, T)
  the positions indexed at each step (argmax at test, argmax of each modality's attention in
  training); 'modality_scores' (B, T, 2); 'features' (B, T, D) the f_t.

  `index_modalities` 'image' / 'audio' gives the single-modality indexing variants: only that
  bank is queried, and its attention indexes both banks. `test_index` chooses the hard index
  at test: 'image' (official: the image query's argmax for both banks), 'mixed' (argmax of
  s^I w^I + s^A w^A) or 'per_modality' (each bank its own query's argmax).
  """

  num_classes: int
  num_steps: int = 10
  hidden: int = 1024
  key_dim: int = 512
  fusion_hidden: int = 1024
  feature_dim: int = 512
  test_index: str = 'image'
  index_modalities: str = 'both'
  mask_random_start: bool = True
  bn_momentum: float = 0.9
  dtype: Dtype = jnp.float32

  def _check(self, image: jax.Array, audio: jax.Array, mask: jax.Array) -> None:
    if self.test_index not in TEST_INDEX:
      raise ValueError(f'Skimming.test_index={self.test_index!r}; expected one of {TEST_INDEX}')
    if self.index_modalities not in INDEX_MODALITIES:
      raise ValueError(
        f'Skimming.index_modalities={self.index_modalities!r}; expected one of {INDEX_MODALITIES}'
      )
    if image.ndim != 3 or audio.ndim != 3 or image.shape[:2] != audio.shape[:2]:
      raise ValueError(
        f"inputs['image'] {image.shape} and inputs['audio'] {audio.shape}: expected two "
        '(batch, length, features) banks of the same batch and length'
      )
    if mask.shape != image.shape[:2]:
      raise ValueError(f"inputs['mask']: expected shape {image.shape[:2]}, got {mask.shape}")
    if image.shape[1] < self.num_steps:
      raise ValueError(
        f'Skimming: banks of length {image.shape[1]} are shorter than num_steps='
        f'{self.num_steps}; pad every video to at least num_steps pairs'
      )

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], *, train: bool):
    image = jnp.asarray(inputs['image'], jnp.float32)
    audio = jnp.asarray(inputs['audio'], jnp.float32)
    mask = jnp.asarray(inputs['mask'], jnp.float32)
    self._check(image, audio, mask)
    length = image.shape[1]
    norm = functools.partial(
      layers.BatchNorm, use_running_average=not train, momentum=self.bn_momentum
    )
    dense = functools.partial(_dense, dtype=self.dtype)
    banks = {'image': image, 'audio': audio}
    indexing = ('image', 'audio') if self.index_modalities == 'both' else (self.index_modalities,)

    fusion = Fusion(self.fusion_hidden, self.feature_dim, self.dtype, name='fusion')
    lstm = WeightNormLSTMCell(self.hidden, self.dtype, name='lstm')
    classifier = dense(self.num_classes, self.feature_dim, 'classifier')
    prediction_fc = dense(
      self.num_classes, self.hidden, 'prediction_fc', kernel_init=skim_kernel_init
    )
    keys, queries = {}, {}
    for m in indexing:
      k = dense(self.key_dim, banks[m].shape[-1], f'{m}_key', kernel_init=skim_kernel_init)(
        banks[m]
      )
      k = norm(scale_init=key_bn_scale_init, name=f'{m}_key_bn')(k)
      keys[m] = nn.relu(k).astype(jnp.float32)
      queries[m] = (
        dense(self.hidden, self.hidden, f'{m}_query_fc1', kernel_init=skim_kernel_init),
        norm(name=f'{m}_query_bn'),
        dense(self.key_dim, self.hidden, f'{m}_query_fc2', kernel_init=skim_kernel_init),
      )
    modality_fc = dense(2, self.hidden, 'modality_fc') if len(indexing) == 2 else None

    masks = {m: mask for m in indexing}
    if self.mask_random_start:
      if 'start_index' in inputs:
        start = jnp.asarray(inputs['start_index'], jnp.int32)
      elif self.is_initializing() and not self.has_rng('start'):
        start = jnp.zeros(image.shape[:1], jnp.int32)  # shapes only: any start will do
      else:
        logits = jnp.where(mask > 0, 0.0, -jnp.inf)
        start = jax.random.categorical(self.make_rng('start'), logits, axis=-1)
      masks = {m: v * (1.0 - jax.nn.one_hot(start, length)) for m, v in masks.items()}

    z_image, z_audio = masked_mean(image, mask), masked_mean(audio, mask)
    h = jnp.zeros((image.shape[0], self.hidden), jnp.float32)
    c = jnp.zeros_like(h)
    out = {k: [] for k in ('features', 'step_logits', 'image_indices', 'audio_indices', 'scores')}
    for _ in range(self.num_steps):
      f = fusion(z_image, z_audio)
      h, c = lstm(f, (h, c))
      out['features'].append(f)
      out['step_logits'].append(prediction_fc(h).astype(jnp.float32))
      weights = {}
      for m in indexing:
        fc1, bn, fc2 = queries[m]
        q = fc2(nn.relu(bn(fc1(h)))).astype(jnp.float32)
        weights[m] = masked_attention(keys[m], q, masks[m])
      if modality_fc is None:
        scores = jnp.ones((h.shape[0], 1), jnp.float32)
      else:
        scores = jax.nn.softmax(modality_fc(h).astype(jnp.float32), axis=-1)
      mixed = sum(scores[:, i, None] * weights[m] for i, m in enumerate(indexing))
      argmax = {m: jnp.argmax(weights[m], axis=-1) for m in indexing}
      if train:
        z_image = jnp.einsum('bl,bld->bd', mixed, image)
        z_audio = jnp.einsum('bl,bld->bd', mixed, audio)
        pick_image = argmax[indexing[0]]
        pick_audio = argmax[indexing[-1]]
      else:
        if self.test_index == 'mixed':
          pick_image = pick_audio = jnp.argmax(mixed, axis=-1)
        elif self.test_index == 'per_modality':
          pick_image, pick_audio = argmax[indexing[0]], argmax[indexing[-1]]
        else:
          pick_image = pick_audio = argmax[indexing[0]]
        z_image = jnp.take_along_axis(image, pick_image[:, None, None], axis=1)[:, 0]
        z_audio = jnp.take_along_axis(audio, pick_audio[:, None, None], axis=1)[:, 0]
      out['image_indices'].append(pick_image)
      out['audio_indices'].append(pick_audio)
      if scores.shape[-1] == 1:  # single-modality indexing: all weight on that modality
        scores = scores * jax.nn.one_hot(('image', 'audio').index(indexing[0]), 2)
      out['scores'].append(scores)
      # No repeats: each modality's argmax leaves its own mask (the official rule); at test
      # the index taken from that modality's bank leaves it too, so no pair is taken twice.
      taken = {'image': pick_image, 'audio': pick_audio}
      for m in indexing:
        masks[m] = masks[m] * (1.0 - jax.nn.one_hot(argmax[m], length))
        if not train:
          masks[m] = masks[m] * (1.0 - jax.nn.one_hot(taken[m], length))

    features = jnp.stack(out['features'], axis=1)
    steps = jnp.arange(1, self.num_steps + 1, dtype=jnp.float32)[None, :, None]
    running = jnp.cumsum(features, axis=1) / steps
    running_logits = classifier(running).astype(jnp.float32)
    aux = {
      'step_logits': jnp.stack(out['step_logits'], axis=1),
      'running_logits': running_logits,
      'image_indices': jnp.stack(out['image_indices'], axis=1).astype(jnp.int32),
      'audio_indices': jnp.stack(out['audio_indices'], axis=1).astype(jnp.int32),
      'modality_scores': jnp.stack(out['scores'], axis=1),
      'features': features,
    }
    return running_logits[:, -1], aux


def subsample_bank(bank, factor: int):
  """Sparse indexing (§3.4): the pairs at positions j ≡ 0 (mod `factor`), ⌈L/factor⌉ rows."""
  if factor < 1:
    raise ValueError(f'subsample factor: expected an integer >= 1, got {factor}')
  return bank[:, ::factor]


def interpolate_bank(samples, length: int, mode: str = 'torch_compat', factor: int = 1):
  """Rebuilds (B, length, D) banks from (B, L_in, D) subsampled ones by linear interpolation.

  'torch_compat' is PyTorch's `F.interpolate(mode='linear', align_corners=False)` from L_in to
  `length` samples, which the official code uses (sampled points do not land on their own
  positions). 'exact_grid' places sample i at position i·`factor` and interpolates between
  samples in the original time, holding the last sample after it. Works on numpy and jax
  arrays alike (the index arithmetic is static).
  """
  l_in = samples.shape[1]
  if mode == 'torch_compat':
    # In float32, as PyTorch computes the source coordinate, so that the weights agree.
    scale = np.float32(l_in) / np.float32(length)
    x = np.maximum(scale * (np.arange(length, dtype=np.float32) + 0.5) - 0.5, 0.0)
  elif mode == 'exact_grid':
    x = np.minimum(np.arange(length) / factor, l_in - 1)
  else:
    raise ValueError(f'interpolation={mode!r}; expected one of {INTERPOLATIONS}')
  i0 = np.floor(x).astype(np.int64)
  i1 = np.minimum(i0 + 1, l_in - 1)
  lam = (x - i0).astype(np.float32)[None, :, None]
  samples = samples.astype(np.float32) if isinstance(samples, np.ndarray) else samples
  return (1.0 - lam) * samples[:, i0] + lam * samples[:, i1]


def sparse_banks(image, audio, mask, factor: int, mode: str = 'torch_compat'):
  """Subsample both banks by `factor`, interpolate back to the padded length, re-apply `mask`."""
  length = image.shape[1]
  rebuilt = [
    interpolate_bank(subsample_bank(b, factor), length, mode, factor) * mask[..., None]
    for b in (image, audio)
  ]
  return rebuilt[0], rebuilt[1]


class NonRecurrentSkimming(nn.Module):
  """The NON-RECURRENT baseline (§4, Table 1): one learned query per modality, no LSTM.

  The attention w = s^I w^I + s^A w^A (learned modality scores) is computed once from the
  keys. Training classifies FC_cls(Σ_j w_j Ψ(z^I_j, z^A_j)) (spec [assumption]); at test the
  `num_picks` positions of largest w are taken and FC_cls(mean of their Ψ) classifies.
  `inputs` as `Skimming`; `aux['indices']` (B, num_picks) and `aux['weights']` (B, L).
  """

  num_classes: int
  num_picks: int = 10
  key_dim: int = 512
  fusion_hidden: int = 1024
  feature_dim: int = 512
  bn_momentum: float = 0.9
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], *, train: bool):
    image = jnp.asarray(inputs['image'], jnp.float32)
    audio = jnp.asarray(inputs['audio'], jnp.float32)
    mask = jnp.asarray(inputs['mask'], jnp.float32)
    if image.shape[1] < self.num_picks:
      raise ValueError(
        f'NonRecurrentSkimming: banks of length {image.shape[1]} are shorter than num_picks='
        f'{self.num_picks}'
      )
    norm = functools.partial(
      layers.BatchNorm, use_running_average=not train, momentum=self.bn_momentum
    )
    weights = []
    for m, bank in (('image', image), ('audio', audio)):
      k = _dense(
        self.key_dim, bank.shape[-1], f'{m}_key', self.dtype, kernel_init=skim_kernel_init
      )(bank)
      k = norm(scale_init=key_bn_scale_init, name=f'{m}_key_bn')(k)
      keys = nn.relu(k).astype(jnp.float32)
      query = self.param(
        f'{m}_query', nn.initializers.normal(1 / math.sqrt(self.key_dim)), (self.key_dim,)
      )
      weights.append(masked_attention(keys, jnp.broadcast_to(query, keys.shape[::2]), mask))
    scores = jax.nn.softmax(self.param('modality_logits', nn.initializers.zeros, (2,)))
    w = scores[0] * weights[0] + scores[1] * weights[1]
    fused = Fusion(self.fusion_hidden, self.feature_dim, self.dtype, name='fusion')(image, audio)
    classifier = _dense(self.num_classes, self.feature_dim, 'classifier', self.dtype)
    _, indices = jax.lax.top_k(w, self.num_picks)
    if train:
      summary = jnp.einsum('bl,bld->bd', w, fused)
    else:
      summary = jnp.take_along_axis(fused, indices[..., None], axis=1).mean(axis=1)
    logits = classifier(summary).astype(jnp.float32)
    return logits, {'indices': indices.astype(jnp.int32), 'weights': w}


class SequenceLSTM(nn.Module):
  """The LSTM baseline (§4, Table 1): an LSTM over all N fused features in order, FC on h_N.

  `inputs` as `Skimming`; the valid pairs must come first (h_N is read at the last valid one).
  """

  num_classes: int
  hidden: int = 1024
  fusion_hidden: int = 1024
  feature_dim: int = 512
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], *, train: bool):
    del train  # No batch statistics or dropout.
    image = jnp.asarray(inputs['image'], jnp.float32)
    audio = jnp.asarray(inputs['audio'], jnp.float32)
    mask = jnp.asarray(inputs['mask'], jnp.float32)
    fused = Fusion(self.fusion_hidden, self.feature_dim, self.dtype, name='fusion')(image, audio)
    cell = nn.OptimizedLSTMCell(self.hidden, param_dtype=jnp.float32, name='lstm')
    lengths = mask.sum(axis=1).astype(jnp.int32)
    (_, h), _ = nn.RNN(cell, return_carry=True, name='rnn')(fused, seq_lengths=lengths)
    logits = _dense(self.num_classes, self.hidden, 'prediction_fc', self.dtype)(h)
    return logits.astype(jnp.float32), {}


class SingleBankSkimming(nn.Module):
  """The single-modality skimming of the official release (spec §3.6), for "indexing |
  recognition" settings (Table 2b, Fig. 7): one bank of clip features indexes the video.

  No Ψ and no modality scores: the LSTM reads the features themselves. Each step queries the
  keys (computed from the *full* features, an official quirk, even when 'banks' holds the
  interpolated ones), soft-indexes 'banks' for the next input, and masks its argmax. The
  classifier reads the mean of the T soft-selected features (the mean start is not part of it);
  with `hard_inputs` (the official `use_gt_feature`) the next input is the bank row at the
  argmax instead, while the classifier still reads the soft features. Given
  'clip_predictions' (B, L, C), the expensive model's precomputed per-position predictions,
  `aux['recognition_scores']` is their mean at the argmax indices: the cheap bank chooses the
  moments and the expensive predictions there are averaged. Steps taken after every position
  is masked are left out of both means (the official loop stops there).

  `inputs`: 'features' (B, L, E), 'mask' (B, L); optional 'banks' (B, L, E) (default:
  'features'), 'clip_predictions', 'start_index' (B,) (else the 'start' RNG stream).
  """

  num_classes: int
  num_steps: int = 10
  hidden: int = 1024
  key_dim: int = 512
  hard_inputs: bool = False
  bn_momentum: float = 0.9
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], *, train: bool):
    features = jnp.asarray(inputs['features'], jnp.float32)
    banks = jnp.asarray(inputs.get('banks', features), jnp.float32)
    mask = jnp.asarray(inputs['mask'], jnp.float32)
    if features.ndim != 3 or banks.shape != features.shape or mask.shape != features.shape[:2]:
      raise ValueError(
        f"inputs['features'] {features.shape}, ['banks'] {banks.shape} and ['mask'] "
        f'{mask.shape}: expected (B, L, E), (B, L, E) and (B, L)'
      )
    batch, length, _ = features.shape
    norm = functools.partial(
      layers.BatchNorm, use_running_average=not train, momentum=self.bn_momentum
    )
    dense = functools.partial(_dense, dtype=self.dtype)
    k = dense(self.key_dim, features.shape[-1], 'key', kernel_init=skim_kernel_init)(features)
    keys = nn.relu(norm(scale_init=key_bn_scale_init, name='key_bn')(k)).astype(jnp.float32)
    fc1 = dense(self.hidden, self.hidden, 'query_fc1', kernel_init=skim_kernel_init)
    bn = norm(name='query_bn')
    fc2 = dense(self.key_dim, self.hidden, 'query_fc2', kernel_init=skim_kernel_init)
    lstm = WeightNormLSTMCell(self.hidden, self.dtype, name='lstm')
    prediction_fc = dense(
      self.num_classes, self.hidden, 'prediction_fc', kernel_init=skim_kernel_init
    )
    classifier = dense(self.num_classes, features.shape[-1], 'classifier')

    if 'start_index' in inputs:
      start = jnp.asarray(inputs['start_index'], jnp.int32)
    elif self.is_initializing() and not self.has_rng('start'):
      start = jnp.zeros((batch,), jnp.int32)  # shapes only: any start will do
    else:
      logits = jnp.where(mask > 0, 0.0, -jnp.inf)
      start = jax.random.categorical(self.make_rng('start'), logits, axis=-1)
    x = masked_mean(features, mask)
    h = jnp.zeros((batch, self.hidden), jnp.float32)
    c = jnp.zeros_like(h)
    previous = start
    soft, indices, alive, step_logits = [], [], [], []
    for _ in range(self.num_steps):
      mask = mask * (1.0 - jax.nn.one_hot(previous, length))
      # The official loop breaks once every position of the *batch* is masked.
      alive.append(jnp.any(mask > 0).astype(jnp.float32))
      h, c = lstm(x, (h, c))
      step_logits.append(prediction_fc(h).astype(jnp.float32))
      w = masked_attention(keys, fc2(nn.relu(bn(fc1(h)))).astype(jnp.float32), mask)
      previous = jnp.argmax(w, axis=-1)
      selected = jnp.einsum('bl,bld->bd', w, banks)
      soft.append(selected)
      indices.append(previous)
      x = (
        jnp.take_along_axis(banks, previous[:, None, None], 1)[:, 0]
        if self.hard_inputs
        else selected
      )
    # A step counts if the batch still had a position left before it (the break comes after).
    taken = jnp.concatenate([jnp.ones((1,)), jnp.stack(alive)[:-1]])
    taken = jnp.cumprod(taken)[None, :, None]
    soft_mean = (jnp.stack(soft, 1) * taken).sum(1) / taken.sum()
    indices = jnp.stack(indices, axis=1).astype(jnp.int32)
    aux = {'indices': indices, 'step_logits': jnp.stack(step_logits, 1), 'steps': taken.sum()}
    if 'clip_predictions' in inputs:
      clip = jnp.asarray(inputs['clip_predictions'], jnp.float32)
      picked = jnp.take_along_axis(clip, indices[..., None], axis=1)
      aux['recognition_scores'] = (picked * taken).sum(1) / taken.sum()
    return classifier(soft_mean).astype(jnp.float32), aux
