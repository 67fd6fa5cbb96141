"""A bottleneck ResNet v1.5 (ResNet-50/101/152) in plain PyTorch, written for this project from He et al. 2015
(Table 1) with the v1.5 change (the stride of a downsampling block on its 3x3 convolution): the peer's network where
torchvision is not installed. Same layers, parameter count (ResNet-50: 25,557,032) and multiply-adds as
torchvision's resnet50; the weight initialisation differs, which a timing does not see.
"""
from __future__ import annotations

DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def build(torch, depth: int = 50, num_classes: int = 1000):
  """The bottleneck ResNet of `depth` as a torch.nn.Module."""
  nn = torch.nn
  F = torch.nn.functional
  if depth not in DEPTHS:
    raise ValueError(f"bottleneck ResNet depth must be one of {sorted(DEPTHS)}, got {depth}")

  def conv_bn(cin, cout, kernel, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout))

  class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride):
      super().__init__()
      cout = 4 * width
      self.branch = nn.Sequential(conv_bn(cin, width, 1), nn.ReLU(inplace=True),
                                  conv_bn(width, width, 3, stride), nn.ReLU(inplace=True),
                                  conv_bn(width, cout, 1))
      self.projection = conv_bn(cin, cout, 1, stride) if stride > 1 or cin != cout else None

    def forward(self, x):
      shortcut = x if self.projection is None else self.projection(x)
      return F.relu(self.branch(x) + shortcut)

  class ResNet(nn.Module):
    def __init__(self):
      super().__init__()
      self.stem = nn.Sequential(conv_bn(3, 64, 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
      layers, cin = [], 64
      for stage, blocks in enumerate(DEPTHS[depth]):
        width = 64 * 2 ** stage
        for j in range(blocks):
          layers.append(Bottleneck(cin, width, 2 if stage > 0 and j == 0 else 1))
          cin = 4 * width
      self.blocks = nn.Sequential(*layers)
      self.fc = nn.Linear(cin, num_classes)
      for m in self.modules():
        if isinstance(m, nn.Conv2d):
          nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
      return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))

  return ResNet()
