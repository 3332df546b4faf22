"""avsf_jax.models.detection_head: per-box logits against a numpy composition of the spec's
steps (time average, the loop RoIAlign reference, 7x7 max, concat, FC)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avsf_jax.models import detection_head
from tests.models.test_roi_align import _reference_roi_align

_BOXES = np.array(
  [
    [[8.0, 8.0, 60.0, 90.0], [70.0, 10.0, 120.0, 50.0], [0.0, 0.0, 0.0, 0.0]],
    [[-10.0, 30.0, 40.0, 100.0], [20.0, 20.0, 21.0, 21.0], [50.0, 40.0, 100.0, 80.0]],
  ],
  np.float32,
)


def _features(audio: bool):
  rng = np.random.default_rng(0)
  features = {
    'slow': rng.normal(size=(2, 2, 6, 8, 8)).astype(np.float32),
    'fast': rng.normal(size=(2, 4, 6, 8, 2)).astype(np.float32),
  }
  if audio:
    features['audio'] = rng.normal(size=(2, 5, 3, 4)).astype(np.float32)
  return features


def _reference(features, boxes, params, aligned, audio):
  per_box = []
  for p in ('slow', 'fast'):
    frames = features[p].astype(np.float64).mean(axis=1)
    per_box.append(
      np.array(
        [
          [_reference_roi_align(frames[n], b, 7, 1 / 16, 0, aligned).max(axis=(0, 1)) for b in clip]
          for n, clip in enumerate(boxes)
        ]
      )
    )
  if audio:
    pooled = features['audio'].astype(np.float64).mean(axis=(1, 2))
    per_box.append(np.broadcast_to(pooled[:, None], (*boxes.shape[:2], pooled.shape[-1])))
  x = np.concatenate(per_box, axis=-1)
  return x @ np.asarray(params['projection']['kernel']) + np.asarray(params['projection']['bias'])


@pytest.mark.parametrize(
  'aligned, audio_mode, with_audio',
  [(True, 'concat', False), (False, 'concat', True), (True, 'laterals_only', True)],
)
def test_logits_match_the_spec_composition(aligned, audio_mode, with_audio):
  features = _features(with_audio)
  head = detection_head.RoIHead(num_classes=5, dropout_rate=0.5, aligned=aligned, audio=audio_mode)
  variables = jax.jit(head.init, static_argnames='train')(
    jax.random.key(0), features, _BOXES, train=False
  )
  params = jax.tree.map(np.asarray, variables['params'])
  concat_audio = with_audio and audio_mode == 'concat'
  # Slow 8 + Fast 2 channels (+ audio 4 when concatenated) -> 5 classes.
  assert params['projection']['kernel'].shape == (14 if concat_audio else 10, 5)
  # Give the bias a value so the test sees it (it is initialised to zero).
  params['projection']['bias'] = np.linspace(-1, 1, 5).astype(np.float32)
  logits = jax.jit(head.apply, static_argnames='train')(
    {'params': params}, features, _BOXES, train=False
  )
  assert logits.shape == (2, 3, 5) and logits.dtype == jnp.float32
  expected = _reference(features, _BOXES, params, aligned, concat_audio)
  np.testing.assert_allclose(logits, expected, atol=2e-5)


def test_fc_init_is_normal_001_with_zero_bias():
  head = detection_head.RoIHead(num_classes=80, dropout_rate=0.5)
  features = {
    'slow': jnp.zeros((1, 1, 2, 2, 2048)),
    'fast': jnp.zeros((1, 1, 2, 2, 256)),
    'audio': jnp.zeros((1, 1, 1, 1024)),
  }
  params = jax.eval_shape(
    lambda: head.init(jax.random.key(0), features, jnp.zeros((1, 1, 4)), train=False)
  )['params']
  # Spec 2.2 / 2.4: 2304 visual + 1024 audio = 3328 inputs.
  assert params['projection']['kernel'].shape == (3328, 80)
  init = jax.jit(lambda f: head.init(jax.random.key(0), f, jnp.zeros((1, 1, 4)), train=False))
  real = init({k: v[..., :64] for k, v in features.items()})['params']['projection']
  assert float(np.std(real['kernel'])) == pytest.approx(0.01, rel=0.05)
  assert not np.any(real['bias'])


def test_dropout_is_active_only_in_training():
  features = _features(False)
  head = detection_head.RoIHead(num_classes=5, dropout_rate=0.5)
  init = jax.jit(head.init, static_argnames='train')
  apply = jax.jit(head.apply, static_argnames='train')
  variables = init(jax.random.key(0), features, _BOXES, train=False)
  evals = [apply(variables, features, _BOXES, train=False) for _ in range(2)]
  np.testing.assert_array_equal(evals[0], evals[1])
  trained = apply(variables, features, _BOXES, train=True, rngs={'dropout': jax.random.key(1)})
  assert not np.allclose(trained, evals[0])


def test_rejects_missing_pathways_and_unknown_audio_mode():
  features = _features(False)
  with pytest.raises(ValueError, match=r"missing pathways \['fast'\]"):
    detection_head.RoIHead(5, 0.5).init(
      jax.random.key(0), {'slow': features['slow']}, _BOXES, train=False
    )
  with pytest.raises(ValueError, match='audio: expected one of'):
    detection_head.RoIHead(5, 0.5, audio='late').init(
      jax.random.key(0), features, _BOXES, train=False
    )


def test_is_a_linen_module():
  assert issubclass(detection_head.RoIHead, nn.Module)
