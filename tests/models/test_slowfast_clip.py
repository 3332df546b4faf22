"""`ltl_models.SlowFastClip`: a project SlowFast as a Listen to Look clip teacher."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avsf_jax.models import build, ltl_models, presets


def _backbone(**changes):
  backbone = presets.model_config('slowfast_4x16', 14).to_dict()
  del backbone['num_classes']
  backbone.update(slow_width=8, alpha=2, bn_group_size=0, dropout_rate=0.0, dtype='float32')
  backbone.update(changes)
  return backbone


@pytest.mark.slow
def test_slowfast_clip_is_the_backbone_on_strided_and_full_frames():
  """Same variables: the wrapper's logits are AVSlowFast's on {'slow': every alpha-th frame,
  'fast': all frames}, and its descriptor is the pathways' pool5 features concatenated."""
  clip = ltl_models.build({'name': 'slowfast_clip', 'num_classes': 5, 'backbone': _backbone()})
  video = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 32, 32, 3))
  variables = clip.init(jax.random.PRNGKey(1), {'video': video}, train=False)
  logits, aux = clip.apply(variables, {'video': video}, train=False)

  net = build.build_model({**_backbone(), 'num_classes': 5})
  inner = {c: v['net'] for c, v in variables.items()}
  want_logits, want_aux = net.apply(inner, {'slow': video[:, ::2], 'fast': video}, train=False)
  np.testing.assert_allclose(logits, want_logits, rtol=1e-6, atol=1e-6)
  want_pooled = np.concatenate([want_aux['pooled']['slow'], want_aux['pooled']['fast']], -1)
  np.testing.assert_allclose(aux['pooled'], want_pooled, rtol=1e-6, atol=1e-6)
  # D = Slow 8 x 32 + Fast (8 / beta_inv 8 = 1) x 32 pool5 channels.
  assert aux['pooled'].shape == (2, 288)


@pytest.mark.slow
def test_slow_only_clip_reads_every_alpha_th_frame():
  """A Slow-only backbone sees frames 0, alpha, 2 alpha, ...: changing an odd frame changes
  nothing, changing an even one changes the descriptor."""
  clip = ltl_models.build(
    {'name': 'slowfast_clip', 'num_classes': 3, 'backbone': _backbone(pathways=('slow',))}
  )
  video = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 32, 32, 3))
  variables = clip.init(jax.random.PRNGKey(1), {'video': video}, train=False)
  _, base = clip.apply(variables, {'video': video}, train=False)
  _, odd = clip.apply(variables, {'video': video.at[:, 3].add(1.0)}, train=False)
  _, even = clip.apply(variables, {'video': video.at[:, 4].add(1.0)}, train=False)
  np.testing.assert_array_equal(odd['pooled'], base['pooled'])
  assert np.abs(np.asarray(even['pooled']) - np.asarray(base['pooled'])).max() > 1e-3


def test_slowfast_clip_rejects_audio_and_uneven_frames():
  clip = ltl_models.build(
    {
      'name': 'slowfast_clip',
      'num_classes': 3,
      'backbone': _backbone(pathways=('slow', 'fast', 'audio')),
    }
  )
  with pytest.raises(ValueError, match='visual only'):
    clip.init(jax.random.PRNGKey(0), {'video': jnp.zeros((1, 8, 32, 32, 3))}, train=False)
  clip = ltl_models.build({'name': 'slowfast_clip', 'num_classes': 3, 'backbone': _backbone()})
  with pytest.raises(ValueError, match='7 frames do not split'):
    clip.init(jax.random.PRNGKey(0), {'video': jnp.zeros((1, 7, 32, 32, 3))}, train=False)
  with pytest.raises(KeyError, match="lack 'video'"):
    clip.init(jax.random.PRNGKey(0), {'image': jnp.zeros((1, 32, 32, 3))}, train=False)
