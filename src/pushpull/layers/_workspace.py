"""Memory of the compiled paths reused from call to call: per-thread scratch, and leased buffers.

A fresh tensor of tens of megabytes costs its page faults on every call (glibc hands large blocks
back to the system when they are freed), which on the ImageNet stem cost as much as the arithmetic
done in them. Two ways to keep such memory:

* :func:`scratch`: the same buffer for a thread's every request, for what no one reads once the
  call that asked for it returns (never outputs, nor what autograd saves). One per thread, dtype,
  device and inference mode, of at most ``config.WORKSPACE_MAX_BYTES``.
* :func:`lease`: a tensor of exactly the asked size that may be kept (saved for a backward): a pooled
  one is handed out again only once nothing else refers to its memory, so a buffer still held by a
  graph (not yet run backward, ``retain_graph``, a second forward before the first backward) is never
  reused. The pool keeps the most recently leased buffers: at most ``config.LEASE_POOL_SIZE`` of them,
  ``config.LEASE_POOL_BYTES`` in all, each of at most ``config.LEASE_MAX_BYTES``.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

from .config import LEASE_MAX_BYTES, LEASE_POOL_BYTES, LEASE_POOL_SIZE, WORKSPACE_MAX_BYTES

_local = threading.local()
_pool: list[Tensor] = []  # most recently leased last
_pool_lock = threading.Lock()


def scratch(numel: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A flat, contiguous buffer of ``numel`` elements, reused by this thread's next request."""
    if numel * dtype.itemsize > WORKSPACE_MAX_BYTES:
        return torch.empty(numel, dtype=dtype, device=device)
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    key = (dtype, device, torch.is_inference_mode_enabled())
    buf = buffers.get(key)
    if buf is None or buf.numel() < numel:
        buf = buffers[key] = torch.empty(numel, dtype=dtype, device=device)
    return buf[:numel]


def _unreferenced(buf: Tensor) -> bool:
    """Whether only the pool refers to ``buf``'s memory (its tensor, and the storage object made to ask)."""
    return torch._C._storage_Use_Count(buf.untyped_storage()._cdata) <= 2


_can_count = hasattr(torch._C, "_storage_Use_Count")


def leasable(numel: int, dtype: torch.dtype) -> bool:
    """Whether :func:`lease` pools a tensor of ``numel`` elements (larger ones are fresh tensors)."""
    return _can_count and numel * dtype.itemsize <= LEASE_MAX_BYTES


def lease(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialised tensor of ``shape``, from the pool when one of that size is free (see the module)."""
    numel = 1
    for size in shape:
        numel *= size
    if not leasable(numel, dtype):
        return torch.empty(shape, dtype=dtype, device=device)
    inference = torch.is_inference_mode_enabled()
    with _pool_lock:
        for i, buf in enumerate(_pool):
            if (buf.numel() == numel and buf.dtype == dtype and buf.device == device
                    and buf.is_inference() == inference and _unreferenced(buf)):
                _pool.append(_pool.pop(i))
                return _on(buf, shape)
        buf = torch.empty(numel, dtype=dtype, device=device)
        _pool.append(buf)
        while len(_pool) > LEASE_POOL_SIZE or sum(b.numel() * b.element_size() for b in _pool) > LEASE_POOL_BYTES:
            _pool.pop(0)  # the least recently leased (if still held, its holder keeps it)
        return _on(buf, shape)


def _on(buf: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A tensor of ``shape`` on ``buf``'s memory that is not a view of it (outputs may be modified in place)."""
    return torch.empty(0, dtype=buf.dtype, device=buf.device).set_(buf.untyped_storage(), 0, shape)
