"""Listen to Look's student Phi and teacher R(2+1)D-18: shapes, variants and paper cost figures.

Full-size figures come from abstract tracing (`jax.eval_shape`, `stats.model_stats`), so
nothing big is compiled. Paper figures (spec listen_to_look.md 2.1-2.2): image stream 0.485
GMACs on 112x112, audio stream 0.612 on 101x40, one pair 1.098, teacher 40.52 on 16x112x112.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avsf_jax.models import basic_resnet, imgaud, r2plus1d, stats

IMAGE = np.zeros((1, 112, 112, 3), np.float32)
AUDIO = np.zeros((1, 101, 40, 1), np.float32)
VIDEO = np.zeros((1, 16, 112, 112, 3), np.float32)


class _Only(nn.Module):
  """One stream as a model of a mapping, so that `stats` counts it alone."""

  stream: nn.Module
  key: str

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    return self.stream(inputs[self.key], train=train)


def _abstract_apply(model, inputs, **kwargs):
  def forward():
    variables = model.init(jax.random.key(0), inputs, train=False)
    return model.apply(variables, inputs, train=False, **kwargs)

  return jax.eval_shape(forward)


def test_trunk_maps_at_paper_sizes():
  def res5(stem_stride, x):
    trunk = basic_resnet.BasicResNet(stem_stride=stem_stride)
    return jax.eval_shape(lambda: trunk.init_with_output(jax.random.key(0), x, train=False)[0])

  assert res5(2, IMAGE).shape == (1, 4, 4, 512)
  assert res5(1, AUDIO).shape == (1, 7, 3, 512)


def test_student_outputs_and_descriptor_widths():
  inputs = {'image': np.zeros((3, 112, 112, 3), np.float32), 'audio': np.zeros((3, 101, 40, 1))}
  logits, aux = _abstract_apply(imgaud.ImageAudioNet(num_classes=7, embed_dim=96), inputs)
  assert logits.shape == (3, 7)
  assert {k: v.shape for k, v in aux.items()} == {
    'image': (3, 512),
    'audio': (3, 512),
    'fused': (3, 96),
  }
  assert all(v.dtype == jnp.float32 for v in (logits, *aux.values()))


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  model = imgaud.ImageAudioNet(num_classes=7, dtype=jnp.bfloat16)
  inputs = {'image': IMAGE, 'audio': AUDIO}
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), inputs, train=False))
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  logits, aux = _abstract_apply(model, inputs)
  assert all(v.dtype == jnp.float32 for v in (logits, *aux.values()))


def test_teacher_res5_is_2x7x7_and_descriptor_512():
  model = r2plus1d.R2Plus1D()
  (logits, aux), state = _abstract_apply(
    model,
    {'video': VIDEO},
    capture_intermediates=lambda m, _: m.name == 'layer4_block1',
    mutable=['intermediates'],
  )
  (res5,) = state['intermediates']['layer4_block1']['__call__']
  assert res5.shape == (1, 2, 7, 7, 512)
  assert aux['pooled'].shape == (1, 512) and logits.shape == (1, 400)


def test_teacher_stem_stride_4_quarters_the_full_rate_maps():
  """The demo's tiny teacher: a 16 x 48 x 48 clip with stem stride 4 leaves a 12 x 12 stem map
  (stride 2: 24 x 24) and a 2 x 2 x 2 res5 map."""
  fields = {'num_classes': 8, 'widths': (16, 16, 32, 64), 'stage_blocks': (1,) * 4, 'stem_mid': 16}
  video = jnp.zeros((1, 16, 48, 48, 3))
  for stride, stem, res5 in ((2, 24, 3), (4, 12, 2)):
    model = r2plus1d.R2Plus1D(**fields, stem_stride=stride)
    _, state = _abstract_apply(
      model,
      {'video': video},
      capture_intermediates=lambda m, _: m.name in ('stem_spatial', 'layer4_block0'),
      mutable=['intermediates'],
    )
    (stem_map,) = state['intermediates']['stem_spatial']['__call__']
    (res5_map,) = state['intermediates']['layer4_block0']['__call__']
    assert stem_map.shape == (1, 16, stem, stem, 16)
    assert res5_map.shape == (1, 2, res5, res5, 64)


def test_midplanes_follow_torchvision_rule():
  # (in*out*27) // (in*9 + 3*out) for each distinct (in, out) of R(2+1)D-18.
  pairs = [(64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
  assert [r2plus1d.midplanes(i, o) for i, o in pairs] == [144, 230, 288, 460, 576, 921, 1152]


def test_variants_feed_psi_their_streams_only():
  def params(modalities):
    model = imgaud.ImageAudioNet(num_classes=5, modalities=modalities)
    inputs = {'image': IMAGE, 'audio': AUDIO}
    return jax.eval_shape(lambda: model.init(jax.random.key(0), inputs, train=False))['params']

  both, image, audio = params(('image', 'audio')), params(('image',)), params(('audio',))
  assert set(both) == {'image_stream', 'audio_stream', 'fusion', 'classifier'}
  assert set(image) == {'image_stream', 'fusion', 'classifier'}
  assert set(audio) == {'audio_stream', 'fusion', 'classifier'}
  assert both['fusion']['fc1']['kernel'].shape == (1024, 1024)
  assert image['fusion']['fc1']['kernel'].shape == (512, 1024)
  assert audio['audio_stream']['freq_conv1x1']['kernel'].shape == (3, 1)
  assert both['audio_stream']['trunk']['conv1']['kernel'].shape == (7, 7, 1, 64)


def test_bad_modalities_and_missing_inputs_are_named():
  with pytest.raises(ValueError, match='modalities'):
    _abstract_apply(imgaud.ImageAudioNet(5, modalities=('audio', 'image')), {'image': IMAGE})
  with pytest.raises(KeyError, match='audio'):
    _abstract_apply(imgaud.ImageAudioNet(5), {'image': IMAGE})
  with pytest.raises(ValueError, match=r'AudioStream.*\(N, time, freq, 1\)'):
    _abstract_apply(imgaud.ImageAudioNet(5, modalities=('audio',)), {'audio': AUDIO[..., 0]})


def test_gmacs_match_the_paper():
  def gflops(model, inputs):
    return stats.model_stats(model, inputs)['gflops']

  image = gflops(_Only(imgaud.ImageStream(), 'image'), {'image': IMAGE})
  audio = gflops(_Only(imgaud.AudioStream(), 'audio'), {'audio': AUDIO})
  pair = gflops(imgaud.ImageAudioNet(num_classes=400), {'image': IMAGE, 'audio': AUDIO})
  teacher = gflops(r2plus1d.R2Plus1D(num_classes=400), {'video': VIDEO})
  assert image == pytest.approx(0.485, rel=5e-3)
  assert audio == pytest.approx(0.612, rel=5e-3)
  assert pair == pytest.approx(1.098, rel=5e-3)
  assert teacher == pytest.approx(40.52, rel=5e-3)
  assert teacher / pair == pytest.approx(36.9, rel=5e-3)


def test_parameter_counts_match_torchvision():
  # resnet18: 11,689,512 with its 512 -> 1000 FC (513,000); r2plus1d_18: 31,505,325.
  trunk = stats.model_stats(_Only(imgaud.ImageStream(), 'image'), {'image': IMAGE})['params']
  teacher = stats.model_stats(r2plus1d.R2Plus1D(num_classes=400), {'video': VIDEO})['params']
  assert trunk == 11_689_512 - 513_000
  assert teacher == 31_505_325


def test_psi_init_is_normal_002_with_torch_default_biases():
  fusion = imgaud.Fusion(hidden=1024, features=512)
  params = jax.jit(functools.partial(fusion.init, jax.random.key(0)))([jnp.zeros((1, 1024))])
  kernel = np.asarray(params['params']['fc1']['kernel'])
  assert kernel.std() == pytest.approx(0.02, rel=0.01)
  assert abs(kernel.mean()) < 1e-4
  bias = np.asarray(params['params']['fc2']['bias'])
  assert np.abs(bias).max() <= 1.0 / np.sqrt(1024) and bias.std() > 0.5 / np.sqrt(3 * 1024)
