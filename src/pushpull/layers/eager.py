"""Ordinary eager tensors: the only ones the layer's caches may keep and its native kernels may read.

Fake tensors (``FakeTensorMode``, FLOP counts), meta tensors, functional and ``torch.func``
wrapped tensors, and whatever is computed under a dispatch mode or while traced or compiled
have no memory of their own, or belong to one tracing session. A cache that keeps one hands
it to the next, unrelated call ("Mixing fake modes"), and a kernel that reads its data
pointer crashes the process. Tensors built in inference mode cannot enter a later training
graph, so cached ones are built outside it.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from typing import Callable, TypeVar

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from .config import use_plain_ops

_PLAIN_TYPES = (Tensor, torch.nn.Parameter)
Builder = TypeVar("Builder", bound=Callable[..., Tensor])


def eager_context() -> bool:
    """Whether this is plain eager execution: no dispatch mode (fake tensors, FLOP counter), no
    tracer, compiler, exporter or ``torch.func`` transform."""
    return _get_current_dispatch_mode() is None and not use_plain_ops()


def is_eager_tensor(t: object) -> bool:
    """Whether ``t`` is a plain, strided tensor with real memory (not fake, meta, functional or wrapped)."""
    return (isinstance(t, Tensor) and type(t) in _PLAIN_TYPES and t.layout == torch.strided and not t.is_meta
            and not torch._is_functional_tensor(t)
            and not torch._C._functorch.is_functorch_wrapped_tensor(t))


def eager_call(*args: object) -> bool:
    """Whether this is eager execution and every tensor among ``args`` is an eager tensor."""
    return eager_context() and all(is_eager_tensor(a) for a in args if isinstance(a, Tensor))


def eager_cache(maxsize: int = 64) -> Callable[[Builder], Builder]:
    """Memoise a tensor-building function of hashable arguments, keeping only eager tensors.

    Outside eager execution, or for the meta device, it builds afresh and keeps nothing; the
    kept tensors are built with inference mode off, so they serve training too.
    """
    def decorate(build: Builder) -> Builder:
        entries: OrderedDict = OrderedDict()
        lock = threading.Lock()

        @functools.wraps(build)
        def cached(*args):
            if not eager_context() or any(isinstance(a, torch.device) and a.type == "meta" for a in args):
                return build(*args)
            with lock:
                if args in entries:
                    entries.move_to_end(args)
                    return entries[args]
            with torch.inference_mode(False):
                value = build(*args)
            if is_eager_tensor(value):
                with lock:
                    entries[args] = value
                    if len(entries) > maxsize:
                        entries.popitem(last=False)
            return value

        cached.cache_clear = entries.clear  # type: ignore[attr-defined]
        return cached  # type: ignore[return-value]
    return decorate
