"""The authors' training recipe inside the model (issue 12): DropPathway per BN group, what
the AVS heads see, how positives and negatives pair up, and the test-time head."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avsf_jax import losses, models
from avsf_jax.models import avslowfast, fusion, heads, layers

T, ALPHA, CROP, AUDIO = 2, 4, 32, (32, 16)


def tiny(**overrides):
  """A narrow AVSlowFast with laterals everywhere and audio fused at res3 and res4."""
  fields = dict(
    num_classes=5,
    depth=14,
    slow_width=8,
    beta_inv=4,
    alpha=ALPHA,
    fusion_kernel=3,
    lateral_junctions=('pool1', 'res2', 'res3', 'res4'),
    audio_fusion_junctions=('res3', 'res4'),
    audio_fusion_inner=4,
    avs_dim=4,
    bn_group_size=0,
  )
  fields.update(overrides)
  return models.AVSlowFast(**fields)


def inputs(batch=4, seed=0):
  rng = np.random.default_rng(seed)
  return {
    'slow': jnp.asarray(rng.normal(size=(batch, T, CROP, CROP, 3)), jnp.float32),
    'fast': jnp.asarray(rng.normal(size=(batch, T * ALPHA, CROP, CROP, 3)), jnp.float32),
    'audio': jnp.asarray(rng.normal(size=(batch, *AUDIO, 1)), jnp.float32),
  }


def random_variables(model, x, seed=0):
  """Random params and unit BN statistics of the right shapes, without compiling `init`."""
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map(
    lambda s: jnp.asarray(rng.normal(scale=0.3, size=s.shape), s.dtype), shapes['params']
  )
  stats = jax.tree_util.tree_map_with_path(
    lambda p, s: jnp.full(s.shape, 1.0 if 'var' in jax.tree_util.keystr(p) else 0.0, s.dtype),
    shapes['batch_stats'],
  )
  return {'params': params, 'batch_stats': stats}


# -- DropPathway per BN group (item 3) ------------------------------------------------------


def test_per_group_drop_pathway_draws_once_per_bn_group():
  """One decision per group of `bn_group_size` clips, repeated over the group's clips; group
  g's decision is Bernoulli(1 - rate) under the step key folded with g."""
  draw = jax.jit(
    functools.partial(
      avslowfast.drop_pathway_keep, batch=32, rate=0.5, mode='per_group', group_size=8
    )
  )
  mixed = 0
  keeps = []
  for step in range(40):
    rng = jax.random.fold_in(jax.random.key(3), step)
    keep = np.asarray(draw(rng))
    assert keep.shape == (32,) and keep.dtype == bool
    groups = keep.reshape(4, 8)
    assert np.all(groups == groups[:, :1])  # constant within each BN group
    expected = [bool(jax.random.bernoulli(jax.random.fold_in(rng, g), 0.5)) for g in range(4)]
    np.testing.assert_array_equal(groups[:, 0], expected)
    mixed += 0 < groups[:, 0].sum() < 4
    keeps.append(groups[:, 0])
  assert mixed > 10  # groups decide independently (a global draw never mixes)
  assert np.mean(keeps) == pytest.approx(0.5, abs=0.15)
  # P_d = 0.8: about one group in five keeps its audio laterals.
  rate = np.mean(
    [
      np.asarray(
        avslowfast.drop_pathway_keep(
          jax.random.key(s), batch=64, rate=0.8, mode='per_group', group_size=8
        )
      )[::8]
      for s in range(25)
    ]
  )
  assert rate == pytest.approx(0.2, abs=0.08)
  # bn_group_size 0 (whole-batch BN): one group, one decision for every clip.
  whole = np.asarray(
    avslowfast.drop_pathway_keep(
      jax.random.key(0), batch=6, rate=0.5, mode='per_group', group_size=0
    )
  )
  assert whole.all() or not whole.any()
  with pytest.raises(ValueError, match='multiple of bn_group_size'):
    avslowfast.drop_pathway_keep(
      jax.random.key(0), batch=12, rate=0.5, mode='per_group', group_size=8
    )


# -- Pairing positives with negatives (item 6) ----------------------------------------------


def test_avs_pairing_keeps_each_clip_with_its_own_negative():
  """Why our positive/negative batching is right and the authors' reshape is not.

  The authors' loader returns each clip's (positive, negative) audio as an (N, 2, ...)
  array, reshaped to (2N, ...) for the audio pathway: clip-major, so rows alternate
  a0+, a0-, a1+, a1-, ...; the features are then split into halves, [:N] taken as the
  positives of the N visual clips and [N:] as the negatives. The halves of a clip-major
  array are not the positives and negatives: visual clip i is matched with row i, which is
  clip i // 2's positive or negative audio. Ours joins in BN-group blocks (`_join_blocks`)
  and splits with the exact inverse (`_split_blocks`), so clip i meets its own positive
  and its own negative, and every BN group holds only positives or only negatives.
  """
  n, group = 8, 2
  clip = np.arange(n, dtype=np.float32)
  positive, negative = clip, clip + 0.5  # the label says the clip and the kind (x.5: negative)
  authors = np.stack([positive, negative], axis=1).reshape(2 * n)
  theirs_pos, theirs_neg = authors[:n], authors[n:]
  np.testing.assert_array_equal(theirs_pos, [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5])
  assert np.sum(theirs_pos == positive) == 1  # only clip 0 meets its own positive
  assert np.sum(theirs_neg == negative) == 1  # only clip 7 meets its own negative
  assert np.sum(np.floor(theirs_pos) != clip) == n - 1  # others meet another clip's audio
  joined = avslowfast._join_blocks(jnp.asarray(positive), jnp.asarray(negative), group)
  np.testing.assert_array_equal(
    joined, [0, 1, 0.5, 1.5, 2, 3, 2.5, 3.5, 4, 5, 4.5, 5.5, 6, 7, 6.5, 7.5]
  )
  ours_pos, ours_neg = avslowfast._split_blocks(joined, group)
  np.testing.assert_array_equal(ours_pos, positive)
  np.testing.assert_array_equal(ours_neg, negative)
  groups = np.asarray(joined).reshape(-1, group)
  assert all(len(set(np.mod(g, 1.0))) == 1 for g in groups)  # pure BN groups
  # With the authors' layout, a pair of identical embeddings for a clip and its own audio
  # (distance 0, loss 0) turns into a non-zero loss: the reshape breaks the supervision.
  emb = jnp.asarray(np.eye(n, 4, dtype=np.float32)[np.arange(n) % 4] * 0.5)
  wrong = jnp.asarray(np.asarray(emb)[np.floor(theirs_pos).astype(int)])
  right = jnp.asarray(np.asarray(emb)[np.asarray(ours_pos).astype(int)])
  far = -emb
  assert float(losses.avs_contrastive(emb, right, far, margin=0.99)) < 1e-9
  assert float(losses.avs_contrastive(emb, wrong, far, margin=0.99)) > 0.1


# -- What the AVS heads see (item 2) --------------------------------------------------------


@pytest.mark.slow
def test_avs_fusion_inputs_train_the_fusion_convs():
  """avs_inputs='fusion' (the authors' code): at res3 the visual side is Slow with the
  Fast->Slow lateral concatenated, before audio is added; the audio side is the A->FS
  fusion convs' output pooled over time; pool5 has a loss-only fusion block. With every
  lateral dropped (P_d = 1) the classifier never sees the fusion convs, yet the AVS loss
  trains them. ('pooled' AVS inputs read only the pooled pathway features: the fusion convs
  would get no AVS gradient.)"""
  # Audio and laterals join at res3 only, so the compiled backward pass stays small.
  model = tiny(
    avs_inputs='fusion',
    drop_pathway_rate=1.0,
    lateral_junctions=('res3',),
    audio_fusion_junctions=('res3',),
    avs_junctions=('res3', 'pool5'),
  )
  x = inputs(batch=2)
  x['audio_negative'] = jnp.roll(x['audio'], 1, axis=0)
  variables = random_variables(model, x)
  params = variables['params']
  trained = ('audio_to_slowfast_res3', 'avs_pool5_fusion')

  def avs_loss(blocks):
    (_, aux), state = model.apply(
      {'params': {**params, **blocks}, 'batch_stats': variables['batch_stats']},
      x,
      train=True,
      rngs={'dropout': jax.random.key(0), 'drop_pathway': jax.random.key(1)},
      mutable=['batch_stats', 'intermediates'],
    )
    loss, _ = losses.avs_total(aux['avs'], margin=0.99, pair_mask=None, duplicate_distance=0.0)
    return loss, (aux, state['intermediates'])

  grads, (aux, inter) = jax.jit(jax.grad(avs_loss, has_aux=True))({k: params[k] for k in trained})
  assert float(jnp.max(aux['drop_pathway_keep'])) == 0.0
  for block in trained:
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads[block])) > 1e-6

  # Recompute the res3 embeddings from the stage outputs with the blocks' own parameters.
  conv = layers.Conv
  norm = functools.partial(layers.BatchNorm, use_running_average=False, group_size=0)

  def run(module, name, *args):
    out, _ = module.apply(
      {'params': params[name], 'batch_stats': variables['batch_stats'][name]},
      *args,
      mutable=['batch_stats'],
    )
    return out

  def project(name, v):
    return fusion.AVSProjection(4).apply({'params': params[name]}, v)

  slow, fast = inter['slow_res3_out'][0], inter['fast_res3_out'][0]
  lateral = fusion.FastToSlow('time_strided_conv', ALPHA, 3, 2, conv, norm)
  visual = run(lateral, 'fast_to_slow_res3', slow, fast)  # Slow + lateral, no audio yet
  assert visual.shape[-1] == 64 + 32  # res3: Slow 64 + lateral 2 x Fast 16
  fused = run(
    fusion.AudioToVisual(visual.shape[-1], 4, 5, T, conv, norm),
    'audio_to_slowfast_res3',
    inter['audio_res3_out'][0],  # positives and negatives, joined
  )
  pos, neg = avslowfast._split_blocks(fused.mean(axis=1), 0)
  entry = aux['avs']['res3']
  np.testing.assert_allclose(
    entry['visual'], project('avs_res3_visual', visual.mean(axis=(1, 2, 3))), atol=1e-5
  )
  np.testing.assert_allclose(entry['audio'], project('avs_res3_audio', pos), atol=1e-5)
  np.testing.assert_allclose(entry['audio_negative'], project('avs_res3_audio', neg), atol=1e-5)


@pytest.mark.slow
def test_avs_input_widths_tell_the_wirings_apart():
  """Projection input widths (abstract shapes only): 'fusion' projects Slow + lateral (64 +
  32 at res3) and the fusion output (the same width); 'pooled' projects Slow + lateral + Fast
  (64 + 32 + 16) and the pooled Audio features (res3 of a 4-wide audio stem: 32)."""

  def widths(avs_inputs):
    model = tiny(avs_inputs=avs_inputs)
    shapes = jax.eval_shape(
      functools.partial(model.init, train=False), jax.random.key(0), inputs(batch=2)
    )['params']
    return {
      k: shapes[k]['dense']['kernel'].shape[0] for k in shapes if k.startswith('avs_res3')
    }, set(shapes)

  fused, names = widths('fusion')
  assert fused == {'avs_res3_visual': 96, 'avs_res3_audio': 96}
  assert 'avs_pool5_fusion' in names
  pooled, names = widths('pooled')
  assert pooled == {'avs_res3_visual': 112, 'avs_res3_audio': 32}
  assert 'avs_pool5_fusion' not in names
  with pytest.raises(ValueError, match='avs_inputs'):
    widths('both')


# -- Test-time head (item 10) ---------------------------------------------------------------


def test_window_head_averages_softmax_over_positions():
  """PySlowFast's test head: FC at every position, softmax per position, mean. The head
  returns log(mean softmax), so a softmax of its output (what the view averaging applies)
  gives that mean exactly. Averaging logits (PyTorchVideo, 'logits') differs."""
  per_position = np.array([[[4.0, 0.0, 0.0], [0.0, 0.0, 2.0]]])  # (N=1, P=2, K=3)
  features = jnp.asarray(per_position)
  identity = {'fc': {'kernel': jnp.eye(3), 'bias': jnp.zeros(3)}}
  head = heads.ClassifierHead(3, 0.0, 'softmax')
  out = head.apply({'params': identity}, features, train=False)
  e = np.exp(per_position)
  mean_softmax = (e / e.sum(-1, keepdims=True)).mean(axis=1)
  np.testing.assert_allclose(jax.nn.softmax(out), mean_softmax, rtol=1e-5)
  np.testing.assert_allclose(np.exp(out), mean_softmax, rtol=1e-5)
  # Hand values: softmax of [4,0,0] = [.9646,.0177,.0177]; of [0,0,2] = [.1065,.1065,.7870].
  np.testing.assert_allclose(mean_softmax, [[0.53553, 0.06207, 0.40240]], atol=1e-4)
  logits_head = heads.ClassifierHead(3, 0.0, 'logits')
  averaged = logits_head.apply({'params': identity}, features, train=False)
  np.testing.assert_allclose(averaged, [[2.0, 0.0, 1.0]])
  assert not np.allclose(jax.nn.softmax(averaged), mean_softmax, atol=0.05)
  sigmoid_head = heads.ClassifierHead(3, 0.0, 'sigmoid')
  multi = sigmoid_head.apply({'params': identity}, features, train=False)
  np.testing.assert_allclose(
    jax.nn.sigmoid(multi), (1 / (1 + np.exp(-per_position))).mean(axis=1), rtol=1e-5
  )
  # One position (a test view no larger than the training crop): softmax unchanged.
  single = head.apply({'params': identity}, features[:, :1], train=False)
  np.testing.assert_allclose(jax.nn.softmax(single), e[:, 0] / e[:, 0].sum(), rtol=1e-5)
