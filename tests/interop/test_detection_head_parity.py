"""The RoI head against PyTorchVideo 0.1.5's own detection head modules.

`create_slowfast_with_roi_head` ends in a `PoolConcatPathway` (AvgPool3d over each pathway's
whole time axis, concatenated along channels) and `create_res_roi_pooling_head` (RoIAlign,
MaxPool2d(7, stride 1), dropout, Linear, Sigmoid). Both are built here with PyTorchVideo's
code, so the test checks our order of operations, pathway concatenation order and the
`proj` -> `projection` weight mapping. torchvision cannot be imported here, so PyTorchVideo's
RoIAlign (torchvision's, `aligned=False`) is played by a torch module that runs the numpy
transcription of torchvision's kernel from `tests/models/test_roi_align.py`.
"""

import sys
import types

import jax
import numpy as np
import torch

from avsf_jax.models import detection_head
from tests.models.test_roi_align import _reference_roi_align

if 'torchvision' not in sys.modules:
  _tv = types.ModuleType('torchvision')
  _tv.ops = types.ModuleType('torchvision.ops')
  _tv.ops.RoIAlign = object
  sys.modules['torchvision'] = _tv
  sys.modules['torchvision.ops'] = _tv.ops

from pytorchvideo.models.head import create_res_roi_pooling_head  # noqa: E402
from pytorchvideo.models.slowfast import PoolConcatPathway  # noqa: E402


class _ReferenceRoIAlign(torch.nn.Module):
  """torchvision.ops.RoIAlign's interface (aligned=False default), numpy reference inside."""

  def __init__(self, output_size, spatial_scale, sampling_ratio, aligned=False):
    super().__init__()
    self.size, self.scale, self.ratio, self.aligned = (
      output_size[0],
      spatial_scale,
      sampling_ratio,
      aligned,
    )

  def forward(self, x, rois):
    maps = x.numpy().transpose(0, 2, 3, 1)  # (N, H, W, C)
    out = [
      _reference_roi_align(maps[int(r[0])], r[1:], self.size, self.scale, self.ratio, self.aligned)
      for r in rois.numpy()
    ]
    return torch.from_numpy(np.stack(out).transpose(0, 3, 1, 2)).float()


def test_head_matches_pytorchvideo_detection_head():
  rng = np.random.default_rng(0)
  slow = rng.normal(size=(2, 2, 6, 8, 16)).astype(np.float32)  # (N, T, H, W, C)
  fast = rng.normal(size=(2, 8, 6, 8, 2)).astype(np.float32)
  boxes = np.array(
    [
      [[8.0, 8.0, 60.0, 90.0], [70.0, 10.0, 127.0, 50.0]],
      [[-10.0, 30.0, 40.0, 100.0], [20.0, 20.0, 21.0, 21.0]],
    ],
    np.float32,
  )
  num_classes = 80
  concat = PoolConcatPathway(
    retain_list=False,
    pool=torch.nn.ModuleList([torch.nn.AvgPool3d((2, 1, 1)), torch.nn.AvgPool3d((8, 1, 1))]),
  )
  ptv_head = create_res_roi_pooling_head(
    in_features=18,
    out_features=num_classes,
    pool=None,
    resolution=(7, 7),
    spatial_scale=1.0 / 16.0,
    sampling_ratio=0,
    roi=_ReferenceRoIAlign,
    activation=torch.nn.Sigmoid,
  ).eval()
  torch.manual_seed(0)
  torch.nn.init.normal_(ptv_head.proj.weight, std=0.3)
  torch.nn.init.normal_(ptv_head.proj.bias, std=0.3)
  rois = torch.from_numpy(
    np.concatenate(
      [np.concatenate([np.full((2, 1), n, np.float32), boxes[n]], axis=1) for n in range(2)]
    )
  )
  with torch.no_grad():
    features = concat([torch.from_numpy(x.transpose(0, 4, 1, 2, 3)) for x in (slow, fast)])
    expected = ptv_head(features, rois).reshape(2, 2, num_classes).numpy()

  head = detection_head.RoIHead(num_classes=num_classes, dropout_rate=0.5, aligned=False)
  params = {
    'projection': {
      'kernel': ptv_head.proj.weight.detach().numpy().T,
      'bias': ptv_head.proj.bias.detach().numpy(),
    }
  }
  logits = jax.jit(head.apply, static_argnames='train')(
    {'params': params}, {'slow': slow, 'fast': fast}, boxes, train=False
  )
  np.testing.assert_allclose(jax.nn.sigmoid(logits), expected, atol=1e-4)
  assert np.ptp(expected) > 0.3  # the scores spread: the comparison is not of constants
