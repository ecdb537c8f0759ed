"""An AlexNet for CIFAR: the normalisation baseline of the paper's CIFAR tables.

Neither the paper nor the original push-pull code gives its definition (only its clean
error, 13.87%). This is AlexNet's layer plan (five convs of 64/192/384/256/256 channels,
three max-pools, two dropout-regularised fully connected layers) scaled to 32x32 inputs:
a 5x5 stride-1 stem instead of 11x11 stride 4, 3x3/2 max-pools, BatchNorm after every
conv so it trains with the CIFAR ResNet recipe, and 1024-unit hidden layers.
``-pp`` replaces the first conv; it is also the only conv before the first pooling, so
there is no separate ``-b1``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.blur import BlurPool2d
from ._common import apply_variant, he_init


def _pool(aa: int) -> nn.Module:
    return nn.Sequential(nn.MaxPool2d(3, 1, 1), BlurPool2d(aa, 2)) if aa else nn.MaxPool2d(3, 2, 1)


class AlexNetCifar(nn.Module):
    def __init__(self, num_classes: int = 10, drop_rate: float = 0.5, aa: int = 0) -> None:
        super().__init__()
        layers: list[tuple[str, nn.Module]] = []
        plan = [(3, 64, 5, True), (64, 192, 5, True), (192, 384, 3, False), (384, 256, 3, False), (256, 256, 3, True)]
        for i, (cin, cout, k, pool) in enumerate(plan, 1):
            layers += [(f"conv{i}", nn.Conv2d(cin, cout, k, 1, k // 2, bias=False)),
                       (f"bn{i}", nn.BatchNorm2d(cout)), (f"relu{i}", nn.ReLU(inplace=True))]
            if pool:
                layers.append((f"pool{i}", _pool(aa)))
        self.features = nn.Sequential(OrderedDict(layers))
        self.classifier = nn.Sequential(
            nn.Dropout(drop_rate), nn.Linear(256 * 4 * 4, 1024), nn.ReLU(inplace=True),
            nn.Dropout(drop_rate), nn.Linear(1024, 1024), nn.ReLU(inplace=True),
            nn.Linear(1024, num_classes),
        )
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        if x.shape[-2:] != (4, 4):  # 32 px inputs arrive at 4x4; pool other sizes to it
            x = F.adaptive_avg_pool2d(x, 4)
        return self.classifier(x.flatten(1))


def alexnet_cifar(*, variant: str = "plain", num_classes: int = 10, drop_rate: float = 0.5, aa: int = 0,
                  **pushpull_kwargs) -> AlexNetCifar:
    model = AlexNetCifar(num_classes, drop_rate, aa)
    return apply_variant(model, variant, ["features.conv1"], lambda name: False, **pushpull_kwargs)
