"""The switches that choose how the push-pull layer computes: the one place they live, read once.

* ``PUSHPULL_NATIVE`` (environment variable, read when this module is imported): ``0`` turns
  the native CPU kernels off. :class:`set_native` changes it at run time, for a block or for
  good; :func:`native_enabled` reads it.
* The channel thresholds at which ``impl="auto"`` changes path (measured on a 2-core CPU).
* The plain-ops rule, :func:`use_plain_ops`: while a tool records the computation, the layer
  is written in standard operations only.

Every other layers module asks here instead of reading the environment or torch's state itself.
"""

from __future__ import annotations

import os

import torch

# Input channels from which the native path also wins in inference (in training it always does).
# Measured, x -> 16 at 32x32, batch 128, 2 threads: native 4.3 / 4.3 / 4.5 / 5.3 ms against fused
# 3.4 / 4.0 / 5.5 / 11.7 ms for 3 / 4 / 6 / 16 input channels.
NATIVE_MIN_INFERENCE_CHANNELS = 5

# Input channels per group from which the separable pull beats the direct pull convolution in CPU
# inference too (in training it wins from 3 channels on). Measured on a 2-core AMD EPYC: 64 channels
# at 56x56 cost 0.6x the direct 7x7 in forward+backward, 0.75x in inference.
SEPARABLE_MIN_CHANNELS = 32

# Input channels per group up to which ``impl="auto"`` takes the pull from basis-filtered inputs
# (``_basis``) where the native path does not cover the call (strides, dilations, groups, other
# padding modes): its filtered planes have K_h·K_w times the input's channels.
BASIS_MAX_CHANNELS = 4

# Bytes of the per-image planes (the push's shifted copies and the pull's basis planes of every input
# channel) up to which the basis path's inference runs one image at a time in the compiled kernel
# (``_basis._planes_inference``): within a core's L2 cache (2 MB on the machine measured).
PLANES_MAX_BYTES = 1 << 21

# Input channels per group up to which the basis path's inference kernel beats the native path (where
# it covers the call). Measured x -> 16 at 32x32, batch 128, 1 thread (Xeon, AVX-512): 8.4 / 10.2 /
# 13.1 / 16.6 / 25.1 ms against native 18.4 / 20.2 / 21.2 / 20.0 / 20.6 ms for 3 / 4 / 6 / 8 / 12 channels.
PLANES_MAX_CHANNELS = 8

# Bytes of per-thread scratch memory kept from call to call (``_workspace``): the stacked planes of a chunk
# of images in the basis path's training (``_stacked``), which takes chunks of STACKED_CHUNK_BYTES per thread
# (the stem at 160 px: one image a thread, 10.8 MB; measured 1.1-1.2x faster than two or four).
WORKSPACE_MAX_BYTES = 1 << 26
STACKED_CHUNK_BYTES = 12 << 20
# Input channels from which the native path's backward leaves the products' adjoints to BLAS (PyTorch's
# matrix products on the maps' gradients, made MAPS_CHUNK_BYTES at a time: four 64->64 images at 40x40).
# Measured fwd+bwd on a 2-core Xeon (AVX-512), kernel vs BLAS: 1 thread, 3->16 at 32x32 b128 28 / 39 ms,
# 16->16 46 / 52 ms, 64->64 at 40x40 b16 76 / 71 ms, at 56x56 b16 164 / 138 ms; 2 threads, 64->64 41 / 39 ms
# and 81 / 76 ms (chunks of 4 MB: 46 and 79 ms; 32 MB: 42 and 76 ms).
BLAS_MIN_CHANNELS = 32
MAPS_CHUNK_BYTES = 16 << 20
# Input channels from which the native forward takes the products from BLAS too (``_native._blas_forward``),
# a chunk of images at a time, and filters them in the kernels: the kernel's products stream the whole image
# once per output channel, which falls out of a small L2 cache. Measured on a 2-core AMD EPYC (Zen 3, AVX2,
# 512 KB L2), 1 thread, kernel vs BLAS: 64->64 at 40x40 b16 inference 39.3 / 32.7 ms, fwd+bwd 104 / 96 ms;
# 32->32 at 32x32 b32 15.8 / 15.8 ms; 16->16 at 32x32 b128 20.6 / 24.4 ms.
BLAS_FORWARD_MIN_CHANNELS = 32
# ... and from this many bytes of one input image (None: half the core's L2 cache, read from sysfs). On a
# CPU whose L2 holds the image (2 MB on the Xeon measured) the kernel's products ran at MKL's speed (13 ms
# at 64->64 40x40 b16), and BLAS would only add the maps' round trip through memory.
BLAS_FORWARD_MIN_IMAGE_BYTES: int | None = None

# Leased buffers (``_workspace.lease``: outputs, masks, planes kept for a backward): the pool's size, its bytes
# in all, and the largest buffer it keeps. The basis path's training keeps a batch's basis planes for the
# backward when they fit (the stem at 160 px, batch 16: 60 MB; otherwise they are rebuilt there).
LEASE_POOL_SIZE = 8
LEASE_POOL_BYTES = 1 << 29
LEASE_MAX_BYTES = 1 << 28

_native = os.environ.get("PUSHPULL_NATIVE", "1") != "0"


def native_enabled() -> bool:
    """Whether the native kernels may be used (``PUSHPULL_NATIVE`` unless changed by :class:`set_native`)."""
    return _native


class set_native:  # noqa: N801 - used like a function, as timm's set_exportable
    """Turn the native kernels on or off: ``set_native(False)`` for good, ``with set_native(False):`` for a block."""

    def __init__(self, enabled: bool) -> None:
        global _native
        self.previous, _native = _native, bool(enabled)

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        global _native
        _native = self.previous


def use_plain_ops() -> bool:
    """True while traced, scripted, compiled, exported or under ``torch.func`` transforms.

    The fast paths' autograd nodes are opaque to those tools; the reference formulation is made
    of standard operations they all understand (and computes the same function).
    """
    return (torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()
            or torch.onnx.is_in_onnx_export() or torch._C._are_functorch_transforms_active())
