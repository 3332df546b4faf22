"""torchvision `resnet18` / `r2plus1d_18` state dicts, converted, give the reference outputs.

torchvision cannot be imported beside this CPU torch build: the reference networks are
written in plain `torch.nn` in `torchvision_reference.py` from torchvision's documented
architecture, with its exact state-dict key names, random weights and random (non-trivial) BN
affine parameters and running statistics. Outputs are compared in eval mode; logits must
agree within 1e-4 of the largest logit.
"""

import functools

import jax
import numpy as np
import pytest
import torch

from avsf_jax.interop import convert, torchvision_weights
from avsf_jax.models import imgaud, r2plus1d
from tests.interop import torchvision_reference as ref


def _max_rel_error(ours, theirs):
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  return np.abs(ours - theirs).max() / np.abs(theirs).max()


@pytest.fixture(scope='module')
def imagenet_resnet18():
  torch.manual_seed(0)
  return ref.randomise_batchnorm(ref.ResNet18(), seed=1)


def _student(modalities):
  model = imgaud.ImageAudioNet(num_classes=5, modalities=modalities)
  inputs = {
    'image': np.zeros((1, 64, 64, 3), np.float32),
    'audio': np.zeros((1, 33, 40, 1), np.float32),
  }
  return model, _random_variables(model, inputs, seed=0)


def _apply(model, variables, inputs):
  """Eval-mode forward, jitted: one compilation is several times faster than op-by-op."""
  return jax.jit(functools.partial(model.apply, train=False))(variables, inputs)


def _random_variables(model, inputs, seed):
  """Variables shaped like `model.init`'s, drawn in numpy: `init` compiles one random op per
  parameter, which costs seconds for a ResNet-18."""
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), inputs, train=False))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda a: rng.normal(0.0, 0.05, a.shape).astype(np.float32), abstract)


def test_image_stream_matches_torch_resnet18(imagenet_resnet18):
  model, variables = _student(('image',))
  variables = torchvision_weights.imgaud_from_resnet18(variables, imagenet_resnet18.state_dict())
  image = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
  _, aux = _apply(model, variables, {'image': image})
  with torch.no_grad():
    x = torch.from_numpy(image).permute(0, 3, 1, 2)
    z_ref = imagenet_resnet18.features(x).mean(dim=(2, 3)).numpy()
    logits_ref = imagenet_resnet18(x).numpy()
  assert _max_rel_error(aux['image'], z_ref) < 1e-5
  fc = imagenet_resnet18.fc
  logits = np.asarray(aux['image']) @ fc.weight.detach().numpy().T + fc.bias.detach().numpy()
  assert _max_rel_error(logits, logits_ref) < 1e-4


def test_audio_stream_with_rgb_mean_conv1_matches_torch(imagenet_resnet18):
  """The 1-channel, stride-1 audio trunk; then the 1x1 frequency sum and the max over time.

  33 (not 101) time frames keep the test fast; 40 frequency bins end as 3 positions as in the
  paper's 101x40 input.
  """
  model, variables = _student(('audio',))
  state = imagenet_resnet18.state_dict()
  variables = torchvision_weights.imgaud_from_resnet18(variables, state, audio_conv1='rgb_mean')
  audio_ref = ref.ResNet18(in_channels=1, stem_stride=1)
  audio_state = dict(state)
  audio_state['conv1.weight'] = state['conv1.weight'].mean(dim=1, keepdim=True)
  audio_ref.load_state_dict(audio_state)
  audio_ref.eval()

  spectrogram = np.random.default_rng(1).normal(size=(2, 33, 40, 1)).astype(np.float32)
  _, aux = _apply(model, variables, {'audio': spectrogram})
  with torch.no_grad():
    res5 = audio_ref.features(torch.from_numpy(spectrogram).permute(0, 3, 1, 2)).numpy()
  assert res5.shape == (2, 512, 3, 3)
  freq = variables['params']['audio_stream']['freq_conv1x1']
  w, b = np.asarray(freq['kernel'])[:, 0], np.asarray(freq['bias'])[0]
  z_ref = (np.einsum('nctf,f->nct', res5, w) + b).max(axis=2)
  assert _max_rel_error(aux['audio'], z_ref) < 1e-5


def test_audio_conv1_init_keeps_the_model_kernel(imagenet_resnet18):
  model, variables = _student(('image', 'audio'))
  state = imagenet_resnet18.state_dict()
  converted = torchvision_weights.imgaud_from_resnet18(variables, state)
  audio = converted['params']['audio_stream']['trunk']
  np.testing.assert_array_equal(
    audio['conv1']['kernel'], variables['params']['audio_stream']['trunk']['conv1']['kernel']
  )
  np.testing.assert_allclose(audio['bn1']['scale'], state['bn1.weight'].numpy())
  np.testing.assert_allclose(
    converted['batch_stats']['audio_stream']['trunk']['layer4_block1']['bn2']['var'],
    state['layer4.1.bn2.running_var'].numpy(),
  )
  # ImageNet kernel (O, I, h, w) -> ours (h, w, I, O) for the image stream.
  np.testing.assert_allclose(
    converted['params']['image_stream']['trunk']['conv1']['kernel'],
    state['conv1.weight'].numpy().transpose(2, 3, 1, 0),
  )
  # Psi and the classifier keep their init.
  np.testing.assert_array_equal(
    converted['params']['fusion']['fc1']['kernel'], variables['params']['fusion']['fc1']['kernel']
  )


def test_resnet18_conversion_names_a_missing_tensor(imagenet_resnet18):
  _, variables = _student(('image',))
  state = dict(imagenet_resnet18.state_dict())
  del state['layer3.0.downsample.1.running_mean']
  with pytest.raises(convert.ConversionError, match=r'layer3\.0\.downsample\.1\.running_mean'):
    torchvision_weights.imgaud_from_resnet18(variables, state)


@pytest.mark.slow
def test_r2plus1d_18_matches_torch():
  torch.manual_seed(2)
  reference = ref.randomise_batchnorm(ref.R2Plus1D18(num_classes=400), seed=3)
  model = r2plus1d.R2Plus1D(num_classes=400)
  video = np.random.default_rng(2).normal(size=(2, 4, 32, 32, 3)).astype(np.float32)
  abstract = jax.eval_shape(
    lambda: model.init(jax.random.key(0), {'video': video[:1]}, train=False)
  )
  variables = torchvision_weights.r2plus1d_18(reference.state_dict(), abstract)
  logits, aux = _apply(model, variables, {'video': video})
  with torch.no_grad():
    logits_ref = reference(torch.from_numpy(video).permute(0, 4, 1, 2, 3)).numpy()
  assert aux['pooled'].shape == (2, 512)
  assert _max_rel_error(logits, logits_ref) < 1e-4
