"""Plain `torch.nn` stand-ins for torchvision's `resnet18` and `r2plus1d_18`.

torchvision cannot be imported beside this CPU torch build, so the tests build the two
networks here, written from torchvision's documented architecture (not copied) with exactly
its state-dict key names: `conv1`, `bn1`, `layer<k>.<i>.{conv1,bn1,conv2,bn2,downsample.0/1}`,
`fc` for ResNet-18; `stem.{0,1,3,4}`, `layer<k>.<i>.conv{1,2}.0.{0,1,3}`, `conv{1,2}.1`,
`downsample.{0,1}`, `fc` for R(2+1)D-18. `randomise_batchnorm` gives every BN non-trivial
affine parameters and running statistics so that each mapped tensor matters.
"""

import torch
from torch import nn


class BasicBlock2d(nn.Module):
  def __init__(self, inplanes: int, planes: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = None
    if stride != 1 or inplanes != planes:
      self.downsample = nn.Sequential(
        nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
      )

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
  """torchvision `resnet18`; `in_channels=1, stem_stride=1` is the audio stream's trunk."""

  def __init__(self, num_classes=1000, in_channels=3, stem_stride=2, widths=(64, 128, 256, 512)):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stem_stride, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(widths[0])
    inplanes = widths[0]
    for k, width in enumerate(widths):
      stride = 1 if k == 0 else 2
      blocks = [BasicBlock2d(inplanes, width, stride), BasicBlock2d(width, width, 1)]
      setattr(self, f'layer{k + 1}', nn.Sequential(*blocks))
      inplanes = width
    self.fc = nn.Linear(widths[-1], num_classes)

  def features(self, x):
    x = torch.relu(self.bn1(self.conv1(x)))
    x = nn.functional.max_pool2d(x, 3, 2, 1)
    for k in range(1, 5):
      x = getattr(self, f'layer{k}')(x)
    return x

  def forward(self, x):
    return self.fc(self.features(x).mean(dim=(2, 3)))


def _midplanes(inplanes, planes):
  return (inplanes * planes * 27) // (inplanes * 9 + 3 * planes)


def _conv2plus1d(inplanes, planes, mid, stride):
  return nn.Sequential(
    nn.Conv3d(inplanes, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False),
    nn.BatchNorm3d(mid),
    nn.ReLU(),
    nn.Conv3d(mid, planes, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False),
  )


class BasicBlock3d(nn.Module):
  def __init__(self, inplanes, planes, stride):
    super().__init__()
    mid = _midplanes(inplanes, planes)
    self.conv1 = nn.Sequential(
      _conv2plus1d(inplanes, planes, mid, stride), nn.BatchNorm3d(planes), nn.ReLU()
    )
    self.conv2 = nn.Sequential(_conv2plus1d(planes, planes, mid, 1), nn.BatchNorm3d(planes))
    self.downsample = None
    if stride != 1 or inplanes != planes:
      self.downsample = nn.Sequential(
        nn.Conv3d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm3d(planes)
      )

  def forward(self, x):
    y = self.conv2(self.conv1(x))
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class R2Plus1D18(nn.Module):
  def __init__(self, num_classes=400):
    super().__init__()
    self.stem = nn.Sequential(
      nn.Conv3d(3, 45, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False),
      nn.BatchNorm3d(45),
      nn.ReLU(),
      nn.Conv3d(45, 64, (3, 1, 1), 1, (1, 0, 0), bias=False),
      nn.BatchNorm3d(64),
      nn.ReLU(),
    )
    inplanes = 64
    for k, width in enumerate((64, 128, 256, 512)):
      stride = 1 if k == 0 else 2
      blocks = [BasicBlock3d(inplanes, width, stride), BasicBlock3d(width, width, 1)]
      setattr(self, f'layer{k + 1}', nn.Sequential(*blocks))
      inplanes = width
    self.fc = nn.Linear(512, num_classes)

  def forward(self, x):
    x = self.stem(x)
    for k in range(1, 5):
      x = getattr(self, f'layer{k}')(x)
    return self.fc(x.mean(dim=(2, 3, 4)))


def randomise_batchnorm(module: nn.Module, seed: int) -> nn.Module:
  gen = torch.Generator().manual_seed(seed)
  for m in module.modules():
    if isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d):
      n = m.num_features
      m.weight.data = 0.5 + torch.rand(n, generator=gen)
      m.bias.data = 0.1 * torch.randn(n, generator=gen)
      m.running_mean.data = 0.1 * torch.randn(n, generator=gen)
      m.running_var.data = 0.5 + torch.rand(n, generator=gen)
  return module.eval()
