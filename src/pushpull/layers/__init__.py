"""Small composable layers: the push-pull convolution and its helpers."""

from .pushpull import PushPullConv2d, pull_kernel, pull_kernel_size, push_pull_conv2d, push_pull_conv2d_reference

__all__ = ["PushPullConv2d", "pull_kernel", "pull_kernel_size", "push_pull_conv2d", "push_pull_conv2d_reference"]
