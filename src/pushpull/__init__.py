"""pushpull: inhibition-augmented ConvNets and robustness benchmarks (-C / -P)."""

from .layers import PushPullConv2d, pull_kernel, pull_kernel_size, push_pull_conv2d, push_pull_conv2d_reference

__version__ = "0.1.0"

__all__ = [
    "PushPullConv2d",
    "pull_kernel",
    "pull_kernel_size",
    "push_pull_conv2d",
    "push_pull_conv2d_reference",
    "__version__",
]
