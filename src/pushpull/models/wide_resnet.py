"""Wide residual networks for CIFAR (Zagoruyko & Komodakis 2016), pre-activation.

WRN-d-k: a 3x3 stem to 16 channels, three groups of (d-4)/6 pre-activation blocks with
16k/32k/64k channels (the 2nd and 3rd start with stride 2), BN-ReLU, global average
pooling, a linear layer. A block is BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3; when the
width changes the shortcut is a 1x1 conv of the pre-activated input.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._common import apply_variant, conv_downsample, he_init


class WideBasic(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1, drop_rate: float = 0.0, aa: int = 0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv_downsample(inplanes, planes, 3, stride, aa)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut = None
        if stride != 1 or inplanes != planes:
            self.shortcut = conv_downsample(inplanes, planes, 1, stride, aa)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(pre)
        out = self.relu(self.bn2(self.conv1(pre)))
        out = F.dropout(out, self.drop_rate, self.training)
        return self.conv2(out) + identity


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` for 32x32 inputs."""

    def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10, drop_rate: float = 0.0,
                 aa: int = 0) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4 (16, 22, 28, 40, ...), got {depth}")
        if widen_factor < 1:
            raise ValueError(f"widen_factor must be >= 1, got {widen_factor}")
        blocks = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.inplanes = 16
        self.layer1 = self._make_layer(widths[0], blocks, 1, drop_rate, aa)
        self.layer2 = self._make_layer(widths[1], blocks, 2, drop_rate, aa)
        self.layer3 = self._make_layer(widths[2], blocks, 2, drop_rate, aa)
        self.bn = nn.BatchNorm2d(widths[2])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)
        he_init(self)
        nn.init.zeros_(self.fc.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int, drop_rate: float, aa: int) -> nn.Sequential:
        layers = [WideBasic(self.inplanes, planes, stride, drop_rate, aa)]
        self.inplanes = planes
        layers += [WideBasic(planes, planes, 1, drop_rate) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = self.relu(self.bn(x))
        return self.fc(self.avgpool(x).flatten(1))


def wide_resnet(depth: int, widen_factor: int, *, variant: str = "plain", num_classes: int = 10,
                drop_rate: float = 0.0, aa: int = 0, **pushpull_kwargs) -> WideResNet:
    """WRN-d-k; ``-pp`` replaces ``conv1``, ``-b1`` also the 3x3 convs of ``layer1`` (its 1x1 shortcut stays)."""
    model = WideResNet(depth, widen_factor, num_classes, drop_rate, aa)
    return apply_variant(model, variant, ["conv1"], lambda name: name.startswith("layer1."), **pushpull_kwargs)
