"""ResNet for CIFAR (He et al. 2015, section 4.2), as in the original push-pull code.

6n+2 layers: a 3x3 stem to 16 channels, three stages of n BasicBlocks with 16/32/64
channels (the 2nd and 3rd start with stride 2), global average pooling, a linear layer.
Down-sampling shortcuts are 1x1 conv + BN. Module names match the original checkpoints
(``conv1``, ``layer1.0.conv1``, ``layer2.0.downsample.0`` ...). With anti-aliasing a
strided conv becomes ``blur(stride 2) -> conv(stride 1)`` and the shortcut
``blur -> 1x1 conv -> BN`` (hence ``layer2.0.conv1.1`` and ``layer2.0.downsample.1``).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..layers.blur import BlurPool2d
from ._common import apply_variant, conv_downsample, he_init


class BasicBlock(nn.Module):
    """conv3x3 - BN - ReLU - conv3x3 - BN, plus the (possibly projected) input, then ReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, aa: int = 0) -> None:
        super().__init__()
        self.conv1 = conv_downsample(inplanes, planes, 3, stride, aa)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            blur = [BlurPool2d(aa, stride)] if aa and stride != 1 else []
            self.downsample = nn.Sequential(
                *blur, nn.Conv2d(inplanes, planes, 1, 1 if blur else stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs; ``aa`` is the blur filter size before down-sampling (0: none)."""

    def __init__(self, depth: int = 20, num_classes: int = 10, aa: int = 0, widths: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"ResNet-CIFAR depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
        blocks = (depth - 2) // 6
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(widths[0], blocks, 1, aa)
        self.layer2 = self._make_layer(widths[1], blocks, 2, aa)
        self.layer3 = self._make_layer(widths[2], blocks, 2, aa)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)
        he_init(self)

    def _make_layer(self, planes: int, blocks: int, stride: int, aa: int) -> nn.Sequential:
        layers = [BasicBlock(self.inplanes, planes, stride, aa)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


def resnet_cifar(depth: int, *, variant: str = "plain", num_classes: int = 10, aa: int = 0,
                 **pushpull_kwargs) -> ResNetCifar:
    """ResNet-``depth`` for CIFAR; ``-pp`` replaces ``conv1``, ``-b1`` also every conv of ``layer1``."""
    model = ResNetCifar(depth, num_classes, aa)
    return apply_variant(model, variant, ["conv1"], lambda name: name.startswith("layer1."), **pushpull_kwargs)
