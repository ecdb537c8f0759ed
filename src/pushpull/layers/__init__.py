"""Small composable layers: the push-pull convolution and its helpers.

One concept a module, each importing only those above it in this list: :mod:`.config`
(the switches that choose a path), :mod:`.eager` (what caches and native kernels may
see), :mod:`._workspace` (memory reused from call to call), :mod:`.geometry` (pull size, paddings), :mod:`.resize` (the pull kernel),
:mod:`.reference` (the definition), :mod:`._fast` (fused and separable paths),
:mod:`._native` (the compiled CPU kernels), :mod:`._stacked` (the basis path's training on stacked
planes), :mod:`._basis` (the pull from basis-filtered inputs),
:mod:`.pushpull` (the dispatch and the module);
:mod:`.blur` (anti-aliasing) stands alone.
"""

from .geometry import pull_kernel_size
from .pushpull import PushPullConv2d, push_pull_conv2d
from .reference import push_pull_conv2d_reference
from .resize import pull_kernel

__all__ = ["PushPullConv2d", "pull_kernel", "pull_kernel_size", "push_pull_conv2d", "push_pull_conv2d_reference"]
