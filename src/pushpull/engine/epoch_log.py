"""What a run records per epoch: running loss/error sums, the test-set loss, ``metrics.csv`` and TensorBoard."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .._files import atomic_write
from .distributed import DistContext, all_reduce
from .loaders import eval_loader

COLUMNS = ("epoch", "lr", "train_loss", "train_error", "test_loss", "test_error", "epoch_seconds", "images_per_second")


class Meter:
    """Running sums of one epoch (loss x images, wrong predictions, images), kept on the device (no syncs)."""

    def __init__(self, loss: float = 0.0, wrong: float = 0.0, count: float = 0.0):
        self.loss, self.wrong, self.count = loss, wrong, count

    def add(self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None:
        n = target.numel()
        self.loss = self.loss + loss.detach().double() * n
        self.wrong = self.wrong + (logits.detach().argmax(1) != target).sum()
        self.count += n

    def sums(self, ctx: DistContext) -> list[float]:
        """[loss sum, wrong, count] over all processes."""
        return all_reduce([float(self.loss), float(self.wrong), float(self.count)], ctx)

    def means(self, ctx: DistContext) -> tuple[float, float]:
        """(mean loss, error) over all processes."""
        loss, wrong, count = self.sums(ctx)
        return loss / max(count, 1), wrong / max(count, 1)


@torch.no_grad()
def evaluate_loss(model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device, ctx: DistContext,
                  *, workers: int = 0, memory_format: torch.memory_format = torch.preserve_format,
                  autocast: Callable[[], Any] = nullcontext) -> tuple[float, float]:
    """(mean cross-entropy, top-1 error) of ``model`` on ``dataset``, each process taking every N-th image."""
    model.eval()
    meter = Meter()
    for images, target in eval_loader(dataset, batch_size, workers, device.type == "cuda", ctx):
        images = images.to(device, memory_format=memory_format)
        target = target.to(device)
        with autocast():
            logits = model(images)
        meter.add(logits, target, F.cross_entropy(logits.float(), target))
    return meter.means(ctx)


def write_metrics(path: Path, history: Sequence[dict[str, float]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write(path, buffer.getvalue())


def tensorboard(folder: Path, start_epoch: int) -> Any:
    """A SummaryWriter when the optional ``tensorboard`` package is installed, else None (CSV is always written)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder), purge_step=start_epoch + 1 if start_epoch else None)
