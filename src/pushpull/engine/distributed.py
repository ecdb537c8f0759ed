"""Data-parallel context from ``torchrun``'s environment (RANK, WORLD_SIZE, LOCAL_RANK), and shards.

Without those variables everything degrades to one process: the same training code runs
on a laptop CPU, one GPU, or many GPUs on many nodes. A :class:`Shard` is the slice of a
job one process does: its torchrun rank, its ``--shard K/N`` of a job array, or both
(shard K of N, each run by a torchrun group of W processes, is shard K*W + rank of N*W).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, shows progress bars and writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


@dataclass(frozen=True)
class Shard:
    """Slice ``index`` (0-based) of ``count`` equal contiguous slices of a job's items."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: expected K/N with 0 <= K < N (K counts from 0)")

    @property
    def whole(self) -> bool:
        return self.count == 1

    def bounds(self, total: int) -> tuple[int, int]:
        """[start, stop) of this shard among ``total`` items: the same for every process, sizes differ by <= 1."""
        return self.index * total // self.count, (self.index + 1) * total // self.count

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"K/N"`` -> Shard(K, N); e.g. ``--shard $SLURM_ARRAY_TASK_ID/8`` with ``--array=0-7``."""
    index, sep, count = text.partition("/")
    try:
        return Shard(int(index), int(count if sep else ""))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected K/N with 0 <= K < N (K counts from 0)") from None


def process_shard(ctx: DistContext, array_shard: Shard = Shard()) -> Shard:
    """This process's slice: its torchrun rank within ``array_shard`` (``--shard K/N``, whole by default)."""
    return Shard(array_shard.index * ctx.world_size + ctx.rank, array_shard.count * ctx.world_size)


def init_distributed(device: str | None = None) -> DistContext:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU); one process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    ctx = DistContext(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
        if use_cuda:
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return ctx


@contextmanager
def process_group(device: str | None = None) -> Iterator[DistContext]:
    """:func:`init_distributed` for the length of a block; a group it created is destroyed on the way out.

    Also after an error, so a failed run leaves no half-open group (and no hanging peers) behind;
    a group the caller created before is left to the caller.
    """
    created = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    ctx = init_distributed(device)
    try:
        yield ctx
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def all_reduce(values: list[float], ctx: DistContext, op: str = "sum") -> list[float]:
    """Element-wise sum (or max) of a few numbers over all processes."""
    if not ctx.enabled:
        return list(values)
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.float64, device=backend_device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor.tolist()


def all_gather_object(obj: object, ctx: DistContext) -> list[object]:
    """Every process's ``obj``, in rank order (one-element list without distribution)."""
    if not ctx.enabled:
        return [obj]
    out: list[object] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    """Wait until every process gets here (nothing to wait for alone)."""
    if ctx.enabled:
        dist.barrier()


class GlobalCount:
    """A count every process adds to without waiting for the others: rank 0's progress bar shows the whole job.

    torch.distributed's own store adds atomically; every process must make its counts in the
    same order (each gets the next key).
    """

    _keys = itertools.count()

    def __init__(self, ctx: DistContext, start: int = 0) -> None:
        self.value, self._start = start, start
        self._store = dist.distributed_c10d._get_default_store() if ctx.enabled else None
        self._key = f"pushpull/count/{next(GlobalCount._keys)}"

    def add(self, n: int) -> int:
        """Add ``n``; the count of all processes so far."""
        self.value = self._start + self._store.add(self._key, n) if self._store else self.value + n
        return self.value


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: what a container or ``taskset`` allows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cores_per_process() -> int:
    """This process's share of the CPUs: the available ones over the processes torchrun started on this
    node (``LOCAL_WORLD_SIZE``), at least one. Sizes every worker pool (decoding, generation, loading)."""
    return max(1, available_cpus() // max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1))
