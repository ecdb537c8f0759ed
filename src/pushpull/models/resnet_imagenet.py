"""ResNet-18/50 for ImageNet: torchvision's ResNet, with push-pull and anti-aliasing as options.

``-pp`` replaces the 7x7 stem; ``-b1`` also the K>1 convs of ``layer1`` (both 3x3 convs
of each BasicBlock; only the middle 3x3 of each Bottleneck). Anti-aliasing follows the
CIFAR rule: every strided conv of the body becomes ``blur(stride) -> conv(stride 1)``
(down-sampling shortcuts too) and the stem's max-pool ``max-pool(stride 1) -> blur(2)``
(Zhang 2019's MaxBlurPool); the stem conv keeps its stride.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from ..layers.blur import BlurPool2d, blurred
from ._common import apply_variant
from .convert import replace_module

BLOCKS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]), 50: (Bottleneck, [3, 4, 6, 3]),
          101: (Bottleneck, [3, 4, 23, 3]), 152: (Bottleneck, [3, 8, 36, 3])}


def antialias_resnet(model: ResNet, aa: int) -> ResNet:
    """Insert blur filters before every down-sampling of a torchvision ResNet body (in place)."""
    model.maxpool = nn.Sequential(nn.MaxPool2d(3, 1, 1), BlurPool2d(aa, 2))
    for name, conv in list(model.named_modules()):
        if isinstance(conv, nn.Conv2d) and name != "conv1" and conv.stride != (1, 1):
            stride = conv.stride[0]
            conv.stride = (1, 1)
            replace_module(model, name, blurred(conv, aa, stride))
    return model


def resnet_imagenet(depth: int, *, variant: str = "plain", num_classes: int = 1000, aa: int = 0,
                    **pushpull_kwargs) -> ResNet:
    if depth not in BLOCKS:
        raise ValueError(f"ResNet-ImageNet depth must be one of {sorted(BLOCKS)}, got {depth}")
    block, layers = BLOCKS[depth]
    model = ResNet(block, layers, num_classes=num_classes)
    if aa:
        antialias_resnet(model, aa)
    return apply_variant(model, variant, ["conv1"], lambda name: name.startswith("layer1."), **pushpull_kwargs)
