"""IMGAUD-SKIMMING against a numpy reference written from the spec (§3.2), and torch parity.

The reference below is written from /work/shared/specs/listen_to_look.md §3.2 (not from the
official repository): weight-normed LSTM cell (gates i, f, g, o), BN-ReLU keys over all padded
positions, Linear-BN-ReLU-Linear queries, masked scaled dot-product attention, modality
softmax, soft indexing (Eqs. 7-8) in training and hard indexing at test, no repeats.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from avsf_jax.models import skimming

B, L, T, C = 3, 9, 4, 5
D_I, D_A = 6, 7
SIZES = dict(hidden=16, key_dim=8, fusion_hidden=12, feature_dim=10)
LENGTHS = (9, 6, 5)
EPS = 1e-5


def _np(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def _dense(p, x):
  return x @ p['kernel'] + p['bias']


def _bn(p, stats, x, train):
  axes = tuple(range(x.ndim - 1))
  if train:
    mean, var = x.mean(axes), x.var(axes)
  else:
    mean, var = stats['mean'], stats['var']
  return (x - mean) / np.sqrt(var + EPS) * p['scale'] + p['bias']


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _wn(v, g):
  return v * g / np.linalg.norm(v, axis=0)


def np_lstm(p, x, h, c):
  gates = x @ _wn(p['ih_v'], p['ih_g']) + p['ih_bias'] + h @ _wn(p['hh_v'], p['hh_g'])
  gates = gates + p['hh_bias']
  i, f, g, o = np.split(gates, 4, axis=-1)
  c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
  return _sigmoid(o) * np.tanh(c), c


def np_step(p, s, keys, banks, masks, z, hc, train, test_index):
  """One skimming step (§3.2): returns f_t, p_t, (h, c), next z, picks and new masks.

  `keys` / `masks` hold the indexing modalities ('image' and 'audio', or one of them).
  """
  f = _dense(p['fusion']['fc2'], np.maximum(_dense(p['fusion']['fc1'], np.concatenate(z, -1)), 0))
  h, c = np_lstm(p['lstm'], f, *hc)
  pred = _dense(p['prediction_fc'], h)
  mods = list(keys)
  w = {}
  for m in mods:
    q = _dense(p[f'{m}_query_fc1'], h)
    q = np.maximum(_bn(p[f'{m}_query_bn'], s.get(f'{m}_query_bn'), q, train), 0)
    q = _dense(p[f'{m}_query_fc2'], q)
    score = np.einsum('bld,bd->bl', keys[m], q) / np.sqrt(keys[m].shape[-1])
    score = score * masks[m] + (1 - masks[m]) * -1e35
    w[m] = _softmax(score)
  sc = _softmax(_dense(p['modality_fc'], h)) if len(mods) == 2 else np.ones((h.shape[0], 1))
  image, audio = banks
  arg = {m: w[m].argmax(-1) for m in w}
  rows = np.arange(h.shape[0])
  if train:
    # Eqs. (7)-(8): z̃^M_{t+1} = Σ_k s^k_t Σ_j w^k_j z^M_j, for both banks M.
    zi = np.stack([sum(sc[b, k] * w[m][b] @ image[b] for k, m in enumerate(mods)) for b in rows])
    za = np.stack([sum(sc[b, k] * w[m][b] @ audio[b] for k, m in enumerate(mods)) for b in rows])
    picks = (arg[mods[0]], arg[mods[-1]])
  else:
    if test_index == 'image':
      picks = (arg[mods[0]], arg[mods[0]])
    elif test_index == 'per_modality':
      picks = (arg[mods[0]], arg[mods[-1]])
    else:
      mixed = sum(sc[:, k : k + 1] * w[m] for k, m in enumerate(mods)).argmax(-1)
      picks = (mixed, mixed)
    zi, za = image[rows, picks[0]], audio[rows, picks[1]]
  new_masks = {}
  for m in mods:
    new_masks[m] = masks[m].copy()
    new_masks[m][rows, arg[m]] = 0
    if not train:
      new_masks[m][rows, picks[0 if m == 'image' else 1]] = 0
  return f, pred, (h, c), (zi, za), picks, new_masks


def np_rollout(variables, image, audio, mask, start, train, test_index='image', mods=None):
  """The whole T-step rollout: logits, step predictions and the indices of every step."""
  p, s = _np(variables['params']), _np(variables['batch_stats'])
  image, audio, mask = (np.asarray(a, np.float64) for a in (image, audio, mask))
  keys = {}
  for m, bank in (('image', image), ('audio', audio)):
    if m in (mods or ('image', 'audio')):
      k = _dense(p[f'{m}_key'], bank)
      keys[m] = np.maximum(_bn(p[f'{m}_key_bn'], s.get(f'{m}_key_bn'), k, train), 0)
  masks = {m: mask.copy() for m in keys}
  for m in masks:
    masks[m][np.arange(B), start] = 0
  count = mask.sum(1, keepdims=True)
  z = ((image * mask[..., None]).sum(1) / count, (audio * mask[..., None]).sum(1) / count)
  hc = (np.zeros((B, SIZES['hidden'])),) * 2
  feats, preds, picks = [], [], []
  for _ in range(T):
    f, pred, hc, z, pick, masks = np_step(
      p, s, keys, (image, audio), masks, z, hc, train, test_index
    )
    feats.append(f)
    preds.append(pred)
    picks.append(pick)
  logits = _dense(p['classifier'], np.mean(feats, axis=0))
  return logits, np.stack(preds, 1), np.array(picks).transpose(2, 0, 1)  # (B, T, 2)


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  mask = (np.arange(L)[None] < np.array(LENGTHS)[:, None]).astype(np.float32)
  image = rng.standard_normal((B, L, D_I)).astype(np.float32) * mask[..., None]
  audio = rng.standard_normal((B, L, D_A)).astype(np.float32) * mask[..., None]
  start = np.array([rng.integers(n) for n in LENGTHS], np.int32)
  return {'image': image, 'audio': audio, 'mask': mask, 'start_index': start}


def _random_variables(model, inputs, seed=1):
  """Variables of `model` with every entry drawn at random (numpy; no init RNG to compile).

  Weights N(0, 0.3²) (so g != ‖v‖ and biases != 0), BN statistics |N(0.5, 1)|: the
  reference must agree for any weights, not only for the initial ones.
  """
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), inputs)
  rng = np.random.default_rng(seed)
  params = jax.tree.map(
    lambda x: 0.3 * rng.standard_normal(x.shape).astype(np.float32), shapes['params']
  )
  stats = jax.tree.map(
    lambda x: np.abs(0.5 + rng.standard_normal(x.shape)).astype(np.float32),
    shapes.get('batch_stats', {}),
  )
  return {'params': params, 'batch_stats': stats}


@functools.cache
def _variables():
  # The parameters do not depend on num_steps: one step is quicker to trace.
  return _random_variables(skimming.Skimming(num_classes=C, num_steps=1, **SIZES), _inputs())


def _model_and_variables(test_index='image'):
  model = skimming.Skimming(num_classes=C, num_steps=T, test_index=test_index, **SIZES)
  return model, _variables()


def _apply(model, variables, inputs, train):
  """Eager apply: with tiny shapes, op-by-op dispatch is cheaper than compiling each variant."""
  out = model.apply(variables, inputs, train=train, mutable=['batch_stats'] if train else False)
  return out[0] if train else out


@pytest.mark.slow
def test_module_is_jittable():
  model, variables = _model_and_variables()
  inputs = _inputs(seed=1)
  logits, aux = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, inputs)
  eager_logits, eager_aux = _apply(model, variables, inputs, train=False)
  np.testing.assert_allclose(logits, eager_logits, atol=1e-5)
  np.testing.assert_array_equal(aux['image_indices'], eager_aux['image_indices'])


def test_train_mode_soft_rollout_equals_numpy_reference():
  model, variables = _model_and_variables()
  inputs = _inputs()
  logits, aux = _apply(model, variables, inputs, train=True)
  ref_logits, ref_preds, ref_picks = np_rollout(
    variables, inputs['image'], inputs['audio'], inputs['mask'], inputs['start_index'], True
  )
  np.testing.assert_allclose(logits, ref_logits, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(aux['step_logits'], ref_preds, atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(aux['image_indices'], ref_picks[:, :, 0])
  np.testing.assert_array_equal(aux['audio_indices'], ref_picks[:, :, 1])
  # m_t at t' = T is the summary; the soft rollout moved away from the mean start.
  np.testing.assert_allclose(aux['running_logits'][:, -1], logits, atol=1e-6)
  assert not np.allclose(aux['features'][:, 0], aux['features'][:, 1], atol=1e-3)


@pytest.mark.parametrize('test_index', skimming.TEST_INDEX)
def test_eval_mode_hard_rollout_equals_numpy_reference(test_index):
  model, variables = _model_and_variables(test_index)
  inputs = _inputs(seed=2)
  logits, aux = _apply(model, variables, inputs, train=False)
  ref_logits, ref_preds, ref_picks = np_rollout(
    variables,
    inputs['image'],
    inputs['audio'],
    inputs['mask'],
    inputs['start_index'],
    False,
    test_index,
  )
  np.testing.assert_array_equal(aux['image_indices'], ref_picks[:, :, 0])
  np.testing.assert_array_equal(aux['audio_indices'], ref_picks[:, :, 1])
  np.testing.assert_allclose(logits, ref_logits, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(aux['step_logits'], ref_preds, atol=1e-5, rtol=1e-5)


def test_hard_indices_never_repeat_and_never_pad():
  model, variables = _model_and_variables()
  for seed in range(3):
    inputs = _inputs(seed=10 + seed)
    _, aux = _apply(model, variables, inputs, train=False)
    for b, n in enumerate(LENGTHS):
      picks = np.asarray(aux['image_indices'][b])
      assert len(set(picks.tolist())) == T, picks
      assert picks.max() < n, (picks, n)
      assert inputs['start_index'][b] not in picks


def test_image_test_index_uses_the_image_argmax_for_both_banks():
  model, variables = _model_and_variables()
  _, aux = _apply(model, variables, _inputs(seed=3), train=False)
  np.testing.assert_array_equal(aux['image_indices'], aux['audio_indices'])


def test_padding_does_not_change_a_videos_hard_selection():
  """The same video in a longer padded bucket picks the same pairs (eval BN uses running stats)."""
  model, variables = _model_and_variables()
  inputs = _inputs(seed=4)
  _, aux = _apply(model, variables, inputs, train=False)
  longer = {
    k: np.pad(v, [(0, 0), (0, 7)] + [(0, 0)] * (v.ndim - 2)) if k != 'start_index' else v
    for k, v in inputs.items()
  }
  logits_long, aux_long = _apply(model, variables, longer, train=False)
  np.testing.assert_array_equal(aux['image_indices'], aux_long['image_indices'])


def test_weight_norm_lstm_cell_equals_torch():
  """Against torch.nn.LSTMCell with weight_norm(dim=0) on weight_ih and weight_hh (i, f, g, o)."""
  cell = skimming.WeightNormLSTMCell(hidden=6)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 5)).astype(np.float32)
  h = rng.standard_normal((2, 6)).astype(np.float32)
  c = rng.standard_normal((2, 6)).astype(np.float32)
  params = cell.init(jax.random.key(1), x, (h, c))['params']
  params = jax.tree.map(lambda p: np.asarray(p) + rng.uniform(0.1, 0.5, p.shape), params)
  ours = cell.apply({'params': params}, x, (h, c))

  ref = torch.nn.LSTMCell(5, 6)
  ref = torch.nn.utils.parametrizations.weight_norm(ref, 'weight_ih', dim=0)
  ref = torch.nn.utils.parametrizations.weight_norm(ref, 'weight_hh', dim=0)
  with torch.no_grad():
    for name in ('ih', 'hh'):
      pw = getattr(ref.parametrizations, f'weight_{name}')
      pw.original0.copy_(torch.tensor(params[f'{name}_g'][:, None], dtype=torch.float32))
      pw.original1.copy_(torch.tensor(params[f'{name}_v'].T, dtype=torch.float32))
      getattr(ref, f'bias_{name}').copy_(torch.tensor(params[f'{name}_bias'], dtype=torch.float32))
    th, tc = ref(torch.tensor(x), (torch.tensor(h), torch.tensor(c)))
  np.testing.assert_allclose(ours[0], th.numpy(), atol=1e-5)
  np.testing.assert_allclose(ours[1], tc.numpy(), atol=1e-5)


def test_lstm_cell_init_matches_the_spec():
  """g starts at ‖v‖ (effective weight v), biases at 0, v within PyTorch's ±1/√hidden."""
  cell = skimming.WeightNormLSTMCell(hidden=16)
  x = jnp.zeros((1, 8))
  params = cell.init(jax.random.key(0), x, (jnp.zeros((1, 16)),) * 2)['params']
  np.testing.assert_allclose(params['ih_g'], np.linalg.norm(params['ih_v'], axis=0), rtol=1e-6)
  assert params['ih_v'].shape == (8, 64) and params['hh_v'].shape == (16, 64)
  assert np.abs(params['hh_v']).max() <= 0.25 and np.all(params['hh_bias'] == 0)


@pytest.mark.parametrize('length', [7, 80, 213])
@pytest.mark.parametrize('factor', [1, 2, 5, 10])
def test_torch_compat_interpolation_equals_torch(length, factor):
  """Same source coordinates as torch (float32); the blend's rounding differs by ~1 ulp."""
  rng = np.random.default_rng(length * factor)
  bank = rng.standard_normal((2, length, 3)).astype(np.float32)
  sub = skimming.subsample_bank(bank, factor)
  assert sub.shape[1] == -(-length // factor)
  ours = skimming.interpolate_bank(sub, length, 'torch_compat')
  ref = torch.nn.functional.interpolate(
    torch.tensor(sub).permute(0, 2, 1), size=length, mode='linear', align_corners=False
  ).permute(0, 2, 1)
  np.testing.assert_allclose(ours, ref.numpy(), atol=1e-5, rtol=0)


def test_exact_grid_interpolation_keeps_the_sampled_points():
  bank = np.arange(11, dtype=np.float32)[None, :, None] ** 2
  out = skimming.interpolate_bank(skimming.subsample_bank(bank, 5), 11, 'exact_grid', 5)
  np.testing.assert_allclose(out[0, ::5, 0], [0, 25, 100])
  np.testing.assert_allclose(out[0, 1, 0], 5.0)  # 0.8 * 0 + 0.2 * 25
  np.testing.assert_allclose(out[0, 7, 0], 55.0)  # 0.6 * 25 + 0.4 * 100


def test_sparse_banks_reapply_the_mask():
  mask = np.array([[1] * 6 + [0] * 4], np.float32)
  bank = np.ones((1, 10, 2), np.float32) * mask[..., None]
  image, audio = skimming.sparse_banks(bank, bank, mask, 4)
  np.testing.assert_array_equal(image[0, 6:], 0)
  # torch_compat leaks the padding zeros into valid positions near the end (spec §3.4).
  np.testing.assert_allclose(image[0, 5], 0.85, rtol=1e-6)  # x = 1.15: 0.85 * 1 + 0.15 * 0


def test_non_recurrent_baseline_takes_the_top_attention_positions_at_test():
  model = skimming.NonRecurrentSkimming(
    num_classes=C, num_picks=3, key_dim=8, fusion_hidden=12, feature_dim=10
  )
  inputs = {k: v for k, v in _inputs(seed=5).items() if k != 'start_index'}
  variables = _random_variables(model, inputs)
  logits, aux = _apply(model, variables, inputs, train=False)
  w = np.asarray(aux['weights'])
  np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-5)
  for b, n in enumerate(LENGTHS):
    assert np.all(w[b, n:] == 0)
    np.testing.assert_array_equal(np.sort(aux['indices'][b]), np.sort(np.argsort(-w[b])[:3]))
  p = _np(variables['params'])
  fused = _dense(
    p['fusion']['fc2'],
    np.maximum(
      _dense(p['fusion']['fc1'], np.concatenate([inputs['image'], inputs['audio']], -1)), 0
    ),
  )
  picked = np.take_along_axis(fused, np.asarray(aux['indices'])[..., None], 1).mean(1)
  np.testing.assert_allclose(logits, _dense(p['classifier'], picked), atol=1e-5)
  soft, _ = _apply(model, variables, inputs, train=True)
  assert not np.allclose(soft, logits, atol=1e-3)


def test_sequence_lstm_baseline_reads_h_at_the_last_valid_pair():
  """Whatever fills the padding, h_N (and so the logits) is read at the last valid pair."""
  model = skimming.SequenceLSTM(num_classes=C, hidden=8, fusion_hidden=12, feature_dim=10)
  inputs = {k: v for k, v in _inputs(seed=6).items() if k != 'start_index'}
  variables = _random_variables(model, inputs)
  logits, _ = _apply(model, variables, inputs, train=False)
  garbage = dict(inputs)
  pad = inputs['mask'][..., None] == 0
  garbage['image'] = np.where(pad, 5.0, inputs['image'])
  garbage['audio'] = np.where(pad, -3.0, inputs['audio'])
  np.testing.assert_allclose(logits, _apply(model, variables, garbage, False)[0], atol=1e-5)
  # The full-length video's logits do depend on its last pair.
  changed = dict(inputs)
  changed['image'] = inputs['image'].copy()
  changed['image'][0, L - 1] += 1.0
  assert not np.allclose(_apply(model, variables, changed, False)[0][0], logits[0], atol=1e-4)


def np_single_bank(variables, features, banks, mask, start, clip, steps, hard, train):
  """Spec §3.6 in numpy: one bank, LSTM on the features, the loop stops once all is masked."""
  p, s = _np(variables['params']), _np(variables['batch_stats'])
  features, banks, mask = (np.asarray(a, np.float64) for a in (features, banks, mask))
  keys = np.maximum(_bn(p['key_bn'], s.get('key_bn'), _dense(p['key'], features), train), 0)
  x = (features * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  h = c = np.zeros((len(x), SIZES['hidden']))
  rows = np.arange(len(x))
  previous, mask = start, mask.copy()
  soft, picks, preds = [], [], []
  for _ in range(steps):
    mask[rows, previous] = 0
    h, c = np_lstm(p['lstm'], x, h, c)
    preds.append(_dense(p['prediction_fc'], h))
    q = _dense(p['query_fc1'], h)
    q = _dense(p['query_fc2'], np.maximum(_bn(p['query_bn'], s.get('query_bn'), q, train), 0))
    score = np.einsum('bld,bd->bl', keys, q) / np.sqrt(keys.shape[-1])
    w = _softmax(score * mask + (1 - mask) * -1e35)
    previous = w.argmax(-1)
    soft.append(np.einsum('bl,bld->bd', w, banks))
    picks.append(previous)
    x = banks[rows, previous] if hard else soft[-1]
    if mask.sum() == 0:
      break
  logits = _dense(p['classifier'], np.mean(soft, 0))
  scores = np.mean([clip[rows, i] for i in picks], 0)
  return logits, np.stack(picks, 1), scores, np.stack(preds, 1)


@pytest.mark.slow
@pytest.mark.parametrize('hard,train', [(False, True), (True, False)])
def test_single_bank_skimming_equals_numpy_reference(hard, train):
  """Keys from the full features, soft features to the classifier, the early exit (8 steps,
  6 positions: the loop stops after step 6), and the expensive predictions at the argmaxes."""
  steps, length = 8, 6
  model = skimming.SingleBankSkimming(
    num_classes=C, num_steps=steps, hidden=SIZES['hidden'], key_dim=8, hard_inputs=hard
  )
  rng = np.random.default_rng(9)
  mask = (np.arange(length)[None] < np.array([[6], [4]])).astype(np.float32)
  features = rng.standard_normal((2, length, 6)).astype(np.float32) * mask[..., None]
  banks = features + 0.1 * rng.standard_normal(features.shape).astype(np.float32)
  clip = rng.uniform(size=(2, length, C)).astype(np.float32)
  inputs = {
    'features': features,
    'banks': banks,
    'mask': mask,
    'clip_predictions': clip,
    'start_index': np.array([2, 1], np.int32),
  }
  variables = _random_variables(model.clone(num_steps=1), inputs, seed=3)
  logits, aux = _apply(model, variables, inputs, train=train)
  ref_logits, ref_picks, ref_scores, ref_preds = np_single_bank(
    variables, features, banks, mask, inputs['start_index'], clip, steps, hard, train
  )
  taken = ref_picks.shape[1]
  assert taken == 6 and float(aux['steps']) == taken
  np.testing.assert_array_equal(aux['indices'][:, :taken], ref_picks)
  np.testing.assert_allclose(logits, ref_logits, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(aux['recognition_scores'], ref_scores, atol=1e-6)
  np.testing.assert_allclose(aux['step_logits'][:, :taken], ref_preds, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_queries_keys_and_step_predictor_start_as_the_official_code():
  """Weights N(0, 0.02), the keys' BN scales N(1, 0.02), LSTM biases 0 (spec §3.2 [code])."""
  model = skimming.Skimming(num_classes=3, num_steps=1, hidden=256, key_dim=128, feature_dim=8)
  inputs = {
    'image': jax.ShapeDtypeStruct((2, 4, 128), np.float32),
    'audio': jax.ShapeDtypeStruct((2, 4, 128), np.float32),
    'mask': jax.ShapeDtypeStruct((2, 4), np.float32),
    'start_index': jax.ShapeDtypeStruct((2,), np.int32),
  }
  init = jax.jit(functools.partial(model.clone(num_steps=1).init, train=False))
  params = init(jax.random.key(0), {k: np.ones(v.shape, v.dtype) for k, v in inputs.items()})
  params = params['params']
  for name in ('image_query_fc1', 'audio_query_fc2', 'image_key', 'prediction_fc'):
    assert abs(float(np.std(params[name]['kernel'])) - 0.02) < 0.002, name
  scale = np.asarray(params['audio_key_bn']['scale'])
  assert abs(scale.mean() - 1) < 0.01 and 0.01 < scale.std() < 0.03
  assert np.all(params['lstm']['ih_bias'] == 0) and np.all(params['lstm']['hh_bias'] == 0)


@pytest.mark.parametrize('train', [True, False])
def test_single_modality_indexing_equals_numpy_reference(train):
  """index_modalities='audio': one query and key; its attention indexes both banks."""
  model = skimming.Skimming(num_classes=C, num_steps=T, index_modalities='audio', **SIZES)
  inputs = _inputs(seed=8)
  variables = _random_variables(model.clone(num_steps=1), inputs, seed=2)
  assert 'image_query_fc1' not in variables['params'] and 'modality_fc' not in variables['params']
  logits, aux = _apply(model, variables, inputs, train=train)
  ref_logits, ref_preds, ref_picks = np_rollout(
    variables,
    inputs['image'],
    inputs['audio'],
    inputs['mask'],
    inputs['start_index'],
    train,
    mods=('audio',),
  )
  np.testing.assert_allclose(logits, ref_logits, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(aux['step_logits'], ref_preds, atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(aux['audio_indices'], ref_picks[:, :, 1])
  np.testing.assert_array_equal(aux['image_indices'], aux['audio_indices'])
  np.testing.assert_array_equal(aux['modality_scores'][..., 1], 1.0)
