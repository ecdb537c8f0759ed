"""Data order and augmentation that depend only on (seed, epoch, index).

So a run gives the same batches whatever the number of loader workers, and a resumed run
(even mid-epoch) sees exactly the images the uninterrupted one would have seen. With N
processes each takes every N-th index of the epoch's permutation (DistributedSampler),
so the union of the N per-process batches is the single-process batch.

Loader workers default to what the machine gives this process (:func:`default_workers`)
and ignore SIGINT/SIGTERM, so a Ctrl-C reaches only the training process, which finishes
its step and checkpoints.
"""

from __future__ import annotations

import signal

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from ..data.generate import select_indices
from .distributed import DistContext, cores_per_process

_MASK = (1 << 63) - 1
# Loader processes per training process when there are CPUs to spare (more rarely pays for CIFAR-sized images).
MAX_DEFAULT_WORKERS = 4


def default_workers() -> int:
    """Loader processes per training process: up to 4, leaving one CPU of this process's share to it.

    On 2 CPUs that is 1 worker, on one CPU (or one each) none.
    """
    return max(0, min(MAX_DEFAULT_WORKERS, cores_per_process() - 1))


def training_subset(dataset: Dataset, limit: int | None) -> Dataset:
    """``limit`` images evenly strided over ``dataset`` (image ``k * N // limit``, as make-c/eval ``--limit``)."""
    if limit is None:
        return dataset
    return Subset(dataset, select_indices(len(dataset), limit).tolist())  # type: ignore[arg-type]


class EpochSeeded(Dataset):
    """Wrap a dataset so item ``i`` of epoch ``e`` draws its augmentation from a generator seeded by (seed, e, i).

    The global CPU generator is saved and restored around each item, so loading never
    disturbs the training process's random stream.
    """

    def __init__(self, dataset: Dataset, seed: int = 0):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        generator = torch.default_generator  # CPU only: torch.manual_seed would also seed every accelerator (slow)
        saved = generator.get_state()
        generator.manual_seed(((self.seed * 1_000_003 + self.epoch) * 2_147_483_647 + index) & _MASK)
        try:
            return self.dataset[index]
        finally:
            generator.set_state(saved)


def epoch_indices(dataset: Dataset, epoch: int, seed: int, ctx: DistContext) -> list[int]:
    """This process's share of epoch ``epoch``'s shuffled order (padded to equal shares, as DistributedSampler does)."""
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def make_loader(dataset: Dataset, indices: list[int], batch_size: int, workers: int, pin_memory: bool) -> DataLoader:
    """Batches of ``dataset`` in the order of ``indices``.

    The loader gets its own generator: creating an iterator otherwise draws from the global
    one, which a resumed run (a new iterator mid-epoch) would then see shifted.
    """
    return DataLoader(dataset, batch_size=batch_size, sampler=indices, num_workers=workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(len(indices)), worker_init_fn=_ignore_stop_signals)


def _ignore_stop_signals(_worker_id: int) -> None:
    """In a loader process: leave Ctrl-C (sent to the whole terminal group) and SIGTERM to the training process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def eval_loader(dataset: Dataset, batch_size: int, workers: int, pin_memory: bool, ctx: DistContext) -> DataLoader:
    """This process's every-N-th share of ``dataset``, unshuffled and unpadded (the shares' sums are exact)."""
    indices = list(range(ctx.rank, len(dataset), ctx.world_size))  # type: ignore[arg-type]
    return make_loader(dataset, indices, batch_size, workers, pin_memory)
