"""DenseNet-BC for CIFAR (Huang et al. 2017), as in the original push-pull code.

A 3x3 stem to 2k channels (24 for k=12; 24 also for k=24, as the original code) with no
BN/ReLU after it; three dense blocks of (L-4)/6 bottleneck layers
(BN-ReLU-1x1 conv to 4k, BN-ReLU-3x3 conv to k, concatenated); transitions
BN-ReLU-1x1 conv (compression 0.5)-AvgPool 2; head BN (``norm_final``)-ReLU-global
average pooling-linear. Module names match the original checkpoints. With anti-aliasing
the transitions' average pooling becomes a blur with stride 2 (Zhang 2019).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.blur import BlurPool2d
from ._common import apply_variant, he_init


class DenseLayer(nn.Module):
    def __init__(self, in_features: int, growth_rate: int, bn_size: int, drop_rate: float) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_features, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.relu1(self.norm1(x)))
        out = self.conv2(self.relu2(self.norm2(out)))
        return F.dropout(out, self.drop_rate, self.training)


class DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers: int, in_features: int, growth_rate: int, bn_size: int, drop_rate: float) -> None:
        super().__init__({f"denselayer{i + 1}": DenseLayer(in_features + i * growth_rate, growth_rate, bn_size,
                                                           drop_rate) for i in range(num_layers)})

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, in_features: int, out_features: int, aa: int = 0) -> None:
        super().__init__(OrderedDict(
            norm=nn.BatchNorm2d(in_features),
            relu=nn.ReLU(inplace=True),
            conv=nn.Conv2d(in_features, out_features, 1, bias=False),
            pool=BlurPool2d(aa, 2) if aa else nn.AvgPool2d(2, 2),
        ))


class DenseNetCifar(nn.Module):
    """DenseNet-BC-``depth``-``growth_rate`` for 32x32 inputs."""

    def __init__(self, depth: int = 40, growth_rate: int = 12, num_classes: int = 10, compression: float = 0.5,
                 num_init_features: int = 24, bn_size: int = 4, drop_rate: float = 0.0, aa: int = 0) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"DenseNet-BC depth must be 6n+4 (40, 100, ...), got {depth}")
        if not 0 < compression <= 1:
            raise ValueError(f"compression must be in (0, 1], got {compression}")
        num_layers = (depth - 4) // 6
        self.features = nn.Sequential(OrderedDict(conv0=nn.Conv2d(3, num_init_features, 3, 1, 1, bias=False)))
        features = num_init_features
        for i in range(3):
            self.features.add_module(f"denseblock{i + 1}",
                                     DenseBlock(num_layers, features, growth_rate, bn_size, drop_rate))
            features += num_layers * growth_rate
            if i < 2:
                out = int(features * compression)
                self.features.add_module(f"transition{i + 1}", Transition(features, out, aa))
                features = out
        self.features.add_module("norm_final", nn.BatchNorm2d(features))
        self.classifier = nn.Linear(features, num_classes)
        he_init(self)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.features(x))
        return self.classifier(F.adaptive_avg_pool2d(out, 1).flatten(1))


def densenet_cifar(depth: int, growth_rate: int, *, variant: str = "plain", num_classes: int = 10,
                   drop_rate: float = 0.0, aa: int = 0, **pushpull_kwargs) -> DenseNetCifar:
    """DenseNet-BC; ``-pp`` replaces ``features.conv0``, ``-b1`` also each 3x3 ``conv2`` of dense block 1."""
    model = DenseNetCifar(depth, growth_rate, num_classes, drop_rate=drop_rate, aa=aa)
    return apply_variant(model, variant, ["features.conv0"], lambda name: name.startswith("features.denseblock1."),
                         **pushpull_kwargs)
