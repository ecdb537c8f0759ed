"""Training with the paper's recipes: one CPU, one GPU (AMP, channels_last) or many (torchrun + DDP).

``fit`` is the loop over any model and datasets; ``train`` builds those from a model
name, a recipe and a data folder, and saves the final model with its normalisation.

A run folder holds ``config.json`` (what was asked), ``checkpoint.pt`` (written
atomically at every epoch's end, every ``checkpoint_minutes`` and when a run stops early),
``metrics.csv`` (one row per epoch), ``tb/`` (TensorBoard, when installed) and finally
``model.safetensors`` + ``model.json``. Calling again with the same folder continues from
``checkpoint.pt`` exactly: model, optimiser, schedule, gradient scaler, the position inside
the epoch and every random generator are restored. SIGINT (Ctrl-C) and SIGTERM finish the
current step, write the checkpoint and stop.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .._files import write_json
from ..recipes import Recipe, default_recipe, load_recipe
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .distributed import DistContext, all_gather_object, all_reduce, available_cpus, process_group
from .epoch_log import COLUMNS, Meter, evaluate_loss, tensorboard, write_metrics
from .loaders import EpochSeeded, default_workers, epoch_indices, make_loader, training_subset
from .stopping import RESUME_HINT, StopRequest, stop_on_signals

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
# Recipe fields a resumed run may change: it can be extended, not altered.
RESUMABLE_CHANGES = {"epochs", "description"}


@dataclass
class TrainResult:
    """The trained model and its history; ``stopped_by`` says why an unfinished run stopped.

    ``stopped_by``: ``"SIGINT"`` or ``"SIGTERM"`` (the signal's name), ``"max_steps"``, or None
    when every epoch ran. ``model_path``: the saved model (after the last epoch, or at ``max_steps``).
    """

    model: nn.Module
    history: list[dict[str, float]]
    out: Path
    finished: bool
    model_path: Path | None = None
    stopped_by: str | None = None


def resolve_device(device: str | torch.device | None, ctx: DistContext) -> torch.device:
    """``cuda:<local rank>`` when CUDA is available (or asked for), else the CPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", ctx.local_rank)
    return device


def _set_determinism(deterministic: bool, device: torch.device) -> None:
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic


def fit(
    model: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    recipe: Recipe,
    out: str | Path,
    *,
    device: str | torch.device | None = None,
    workers: int | None = None,
    amp: bool | None = None,
    channels_last: bool | None = None,
    sync_bn: bool = False,
    seed: int = 0,
    deterministic: bool = False,
    checkpoint_minutes: float = 10.0,
    max_steps: int | None = None,
    limit: int | None = None,
    resume: bool = True,
    progress: bool = True,
    config: dict[str, Any] | None = None,
    save_final: Callable[[nn.Module, list[dict[str, float]], int, bool], Path] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_set`` (yielding (image, label)) with ``recipe``; evaluate on ``test_set`` every epoch.

    Calling it again with the same ``out`` continues from ``out/checkpoint.pt`` (``resume=False``
    refuses a folder that has one); the recipe (except more ``epochs``), ``seed`` and ``limit``
    must be those of the checkpoint. ``limit`` trains on that many images evenly strided over
    ``train_set`` (image ``k * N // limit``; the test set stays whole). ``workers`` defaults to
    :func:`~pushpull.engine.loaders.default_workers`. ``amp`` and ``channels_last`` default to on
    for CUDA, off on the CPU. Under torchrun the recipe's ``batch_size`` is split over the
    processes. ``max_steps`` stops once that many optimiser steps have run in total (for
    time-limited jobs, or a quick look); SIGINT/SIGTERM stop after the current step. Both
    write the checkpoint first. ``config`` is written to ``out/config.json`` once the
    checkpoint's settings are checked. ``save_final(model, history, global_step, finished)``
    is called on rank 0 with the (unwrapped) model after the last epoch and at ``max_steps``.
    """
    workers = default_workers() if workers is None else workers
    with process_group(str(device) if device is not None else None) as ctx, warnings.catch_warnings():
        # torch repeats this for every loader; said once below instead.
        warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
        if workers > available_cpus():
            _log(ctx, f"workers={workers} is more than the {available_cpus()} CPUs available: loading may be slow "
                      f"(default: {default_workers()})")
        run = _Run(model, train_set, test_set, recipe, Path(out), ctx, device=device, workers=workers, amp=amp,
                   channels_last=channels_last, sync_bn=sync_bn, seed=seed, deterministic=deterministic,
                   limit=limit, resume=resume, progress=progress)
        if config is not None and ctx.is_main:
            write_json(run.out / "config.json", config)
        try:
            with stop_on_signals() as stop:
                stopped_by = run.epochs(stop, max_steps, checkpoint_minutes)
        finally:
            run.close()
    finished = stopped_by is None
    model_path = None
    if save_final is not None and ctx.is_main and stopped_by in (None, "max_steps"):
        model_path = save_final(run.model, run.history, run.global_step, finished)
    return TrainResult(run.model, run.history, run.out, finished=finished, model_path=model_path,
                       stopped_by=stopped_by)


class _Run:
    """One training run: model, optimiser, schedule, scaler and position, and the steps that advance them."""

    def __init__(self, model: nn.Module, train_set: Dataset, test_set: Dataset, recipe: Recipe, out: Path,
                 ctx: DistContext, *, device: str | torch.device | None, workers: int, amp: bool | None,
                 channels_last: bool | None, sync_bn: bool, seed: int, deterministic: bool, limit: int | None,
                 resume: bool, progress: bool):
        self.ctx = ctx
        self.device = resolve_device(device, ctx)
        cuda = self.device.type == "cuda"
        if recipe.batch_size % ctx.world_size:
            raise ValueError(f"batch_size {recipe.batch_size} is not divisible by the {ctx.world_size} processes")
        self.recipe, self.out, self.seed, self.workers, self.progress = recipe, out, seed, workers, progress
        self.batch_size = recipe.batch_size // ctx.world_size
        self.pin = cuda
        _set_determinism(deterministic, self.device)
        torch.manual_seed(seed + ctx.rank)

        self.memory_format = torch.channels_last if (cuda if channels_last is None else channels_last) \
            else torch.preserve_format
        model = model.to(self.device, memory_format=self.memory_format)
        if sync_bn and ctx.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                         nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, list(recipe.milestones), recipe.gamma)
        amp = cuda if amp is None else amp
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp and cuda)
        dtype = torch.float16 if cuda else torch.bfloat16
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=dtype)) if amp else nullcontext
        if limit is not None and limit > len(train_set):  # type: ignore[arg-type]
            _log(ctx, f"limit {limit} is more than the {len(train_set)} training images: training on all of them")  # type: ignore[arg-type]
        # What the checkpoint must share with a run that continues it (besides the recipe).
        self.settings = {"seed": seed, "limit": limit}
        self.train_data, self.test_set = EpochSeeded(training_subset(train_set, limit), seed), test_set

        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.history: list[dict[str, float]] = []
        self.meter = Meter()
        self.checkpoint_path = out / CHECKPOINT
        self.saved_step: int | None = None  # global_step of the last checkpoint written or read
        if resume and self.checkpoint_path.exists():
            self._restore(load_checkpoint(self.checkpoint_path))
            _log(ctx, f"resuming {out} at epoch {self.epoch} step {self.step_in_epoch}")
        elif self.checkpoint_path.exists():
            raise FileExistsError(f"{self.checkpoint_path} exists: resume it (the default), "
                                  "or choose another output folder")
        out.mkdir(parents=True, exist_ok=True)
        # Wrapped after restoring, so DDP's initial broadcast carries the resumed weights.
        self.net = nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index] if cuda else None) \
            if ctx.enabled else model
        self.writer = tensorboard(out / "tb", self.epoch) if ctx.is_main else None

    def epochs(self, stop: StopRequest, max_steps: int | None, checkpoint_minutes: float) -> str | None:
        """Run the epochs left; None when all are done, else why it stopped early (after a checkpoint)."""
        if self.epoch >= self.recipe.epochs:
            _log(self.ctx, f"{self.out}: all {self.recipe.epochs} epochs are done")
        last_save = time.monotonic()
        while self.epoch < self.recipe.epochs:
            _, reason = self._poll(stop, max_steps, 0.0)  # a signal during the evaluation, or max_steps at the end
            if reason:
                return self._stop(reason)
            indices = epoch_indices(self.train_data, self.epoch, self.seed, self.ctx)
            steps_in_epoch = -(-len(indices) // self.batch_size)
            self.train_data.set_epoch(self.epoch)
            loader = make_loader(self.train_data, indices[self.step_in_epoch * self.batch_size:], self.batch_size,
                                 self.workers, self.pin)
            lr = self.optimizer.param_groups[0]["lr"]
            bar = tqdm(total=len(indices) * self.ctx.world_size, unit="img",
                       initial=self.step_in_epoch * self.batch_size * self.ctx.world_size,
                       desc=f"epoch {self.epoch + 1}/{self.recipe.epochs}", dynamic_ncols=True, leave=False,
                       disable=not (self.progress and self.ctx.is_main))
            self.net.train()
            tic, seen = time.perf_counter(), 0
            for images, target in loader:
                self._step(images, target)
                seen += len(target)
                bar.update(len(target) * self.ctx.world_size)
                if self.step_in_epoch % 20 == 1 and not bar.disable:
                    bar.set_postfix(loss=f"{float(self.meter.loss) / self.meter.count:.3f}",
                                    err=f"{float(self.meter.wrong) / self.meter.count:.3f}", lr=f"{lr:.3g}",
                                    refresh=False)
                due, reason = self._poll(stop, max_steps, time.monotonic() - last_save - checkpoint_minutes * 60)
                if reason and self.step_in_epoch < steps_in_epoch:
                    bar.close()
                    return self._stop(reason)
                if due:
                    self.checkpoint()
                    last_save = time.monotonic()
            bar.close()
            self._end_epoch(lr, seconds=time.perf_counter() - tic, seen=seen)
            last_save = time.monotonic()
        return None

    def _poll(self, stop: StopRequest, max_steps: int | None, overdue_seconds: float) -> tuple[bool, str | None]:
        """(checkpoint due, reason to stop or None), agreed by all processes (collective)."""
        code = signal.Signals[stop.signal].value if stop.signal else 0
        capped = max_steps is not None and self.global_step >= max_steps
        due, code, capped = all_reduce([float(overdue_seconds >= 0), float(code), float(capped)], self.ctx, op="max")
        reason = signal.Signals(int(code)).name if code else "max_steps" if capped else None
        return bool(due), reason

    def _stop(self, reason: str) -> str:
        """Checkpoint (unless the last one is current) and say how to continue."""
        if self.saved_step != self.global_step:
            self.checkpoint()
        if reason == "max_steps":
            why, hint = f"max_steps={self.global_step}", "rerun with a larger --max-steps (or none) to continue"
        else:
            why, hint = reason, RESUME_HINT
        _log(self.ctx, f"stopped ({why}) at epoch {self.epoch} step {self.step_in_epoch}; checkpoint "
                       f"{self.checkpoint_path} saved: {hint}")
        return reason

    def _step(self, images: torch.Tensor, target: torch.Tensor) -> None:
        images = images.to(self.device, non_blocking=self.pin, memory_format=self.memory_format)
        target = target.to(self.device, non_blocking=self.pin)
        with self.autocast():
            logits = self.net(images)
            loss = F.cross_entropy(logits, target)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.meter.add(logits, target, loss)
        self.step_in_epoch += 1
        self.global_step += 1

    def _end_epoch(self, lr: float, seconds: float, seen: int) -> None:
        """Evaluate, step the schedule, checkpoint, log the epoch's row."""
        train_loss, train_error = self.meter.means(self.ctx)
        test_loss, test_error = evaluate_loss(self.net, self.test_set, self.batch_size, self.device, self.ctx,
                                              workers=self.workers, memory_format=self.memory_format,
                                              autocast=self.autocast)
        self.scheduler.step()
        row = {"epoch": self.epoch + 1, "lr": lr, "train_loss": train_loss, "train_error": train_error,
               "test_loss": test_loss, "test_error": test_error, "epoch_seconds": seconds,
               "images_per_second": seen * self.ctx.world_size / max(seconds, 1e-9)}
        self.history.append(row)
        self.epoch, self.step_in_epoch, self.meter = self.epoch + 1, 0, Meter()
        self.checkpoint()
        if not self.ctx.is_main:
            return
        write_metrics(self.out / METRICS, self.history)
        if self.writer is not None:
            for key in COLUMNS[1:]:
                self.writer.add_scalar(key, row[key], row["epoch"])
            self.writer.flush()
        _log(self.ctx, f"epoch {row['epoch']}/{self.recipe.epochs}  lr {lr:.4g}  train loss {train_loss:.4f} "
                       f"error {100 * train_error:.2f}%  test loss {test_loss:.4f} error {100 * test_error:.2f}%  "
                       f"{row['images_per_second']:.0f} img/s")

    def checkpoint(self) -> None:
        """Everything needed to continue exactly (collective: every process calls it; rank 0 writes)."""
        rngs = all_gather_object(rng_state(), self.ctx)
        meter = self.meter.sums(self.ctx)
        if self.ctx.is_main:
            save_checkpoint({
                "recipe": self.recipe.to_dict(), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rngs, "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch, "global_step": self.global_step, "history": self.history,
                "meter": meter, "world_size": self.ctx.world_size, "settings": self.settings,
            }, self.checkpoint_path)
        self.saved_step = self.global_step

    def _restore(self, ckpt: dict[str, Any]) -> None:
        saved = ckpt["recipe"]
        changed = sorted(k for k, v in self.recipe.to_dict().items()
                         if saved.get(k) != v and k not in RESUMABLE_CHANGES)
        if changed:
            raise ValueError(f"cannot resume {self.checkpoint_path} with a different recipe: " + ", ".join(
                f"{k} was {saved.get(k)!r}, now {getattr(self.recipe, k)!r}" for k in changed)
                + "; choose another output folder to start afresh")
        settings = ckpt.get("settings", {})  # absent from checkpoints written before settings were recorded
        changed = [k for k, v in self.settings.items() if k in settings and settings[k] != v]
        if changed:
            raise ValueError(f"cannot resume {self.checkpoint_path} with a different " + ", ".join(
                f"{k}: was {settings[k]}, now {self.settings[k]}" for k in changed)
                + "; choose another output folder to start afresh")
        if ckpt["world_size"] != self.ctx.world_size and ckpt["step_in_epoch"]:
            raise ValueError(f"the checkpoint was written mid-epoch by {ckpt['world_size']} processes; "
                             f"resume it with the same number of processes (now {self.ctx.world_size})")
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError:
            raise ValueError(f"{self.checkpoint_path} holds the weights of another model; choose another output "
                             "folder to start afresh") from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step_in_epoch, self.global_step = ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]
        self.history = ckpt["history"]
        self.saved_step = self.global_step
        if self.ctx.is_main:  # the epoch's sums so far, over all processes: counted once
            self.meter = Meter(*ckpt["meter"])
        if ckpt["world_size"] == self.ctx.world_size:
            set_rng_state(ckpt["rng"][self.ctx.rank])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _log(ctx: DistContext, message: str) -> None:
    if ctx.is_main:
        tqdm.write(message, file=sys.stderr)


def train(
    model: str | nn.Module,
    recipe: str | Path | Recipe | None = None,
    data: str | Path | None = None,
    out: str | Path = "runs/train",
    *,
    model_kwargs: dict[str, Any] | None = None,
    download: bool = False,
    seed: int = 0,
    **options: Any,
) -> TrainResult:
    """Train a model of the zoo (by name) or any ``nn.Module`` with a recipe of the paper.

    ``recipe``: a shipped name (``pushpull.recipes.list_recipes()``), a JSON path or a
    :class:`Recipe`; by default the paper's recipe for the model. Recipe fields can be
    overridden by keyword (``epochs=10, lr=0.05``); the other keywords are those of
    :func:`fit` (``device``, ``workers``, ``limit``, ``max_steps``, ``amp``, ...). ``data``: the
    CIFAR root (python layout) or the ImageNet root (``train/`` and ``val/`` class folders).
    Calling it again with the same ``out`` continues the run. The final model (or the model
    at ``max_steps``) is saved as ``out/model.safetensors`` with its metadata
    (``pushpull.models.load_model`` and ``pushpull eval`` read it).
    """
    recipe_fields = set(Recipe.__dataclass_fields__)
    overrides = {k: options.pop(k) for k in list(options) if k in recipe_fields}
    if isinstance(model, str):
        from ..models import model_info

        model_info(model)  # a mistyped name fails (with close matches) before any data is read
    if recipe is None:
        if not isinstance(model, str):
            raise ValueError("give a recipe when training a custom nn.Module")
        recipe = default_recipe(model)
    recipe = load_recipe(recipe, **overrides)
    if data is None and recipe.dataset != "digits":
        raise ValueError("data: give the dataset folder (CIFAR python layout, or ImageNet train/ and val/)")
    train_set, test_set, num_classes, (mean, std) = build_datasets(recipe, data, download=download)
    model_kwargs = {"num_classes": num_classes, **(model_kwargs or {})}
    out = Path(out)
    if isinstance(model, str):
        from ..models import create_model

        name = model
        torch.manual_seed(seed)
        model = create_model(name, **model_kwargs)
    else:
        name = None

    def save_final(trained: nn.Module, history: list[dict[str, float]], global_step: int, finished: bool) -> Path:
        path = out / "model.safetensors"
        if name is None:
            from safetensors.torch import save_model

            save_model(trained, str(path))
            return path
        from ..models import save_model as save_zoo_model

        source = f"pushpull train, recipe {recipe.name} v{recipe.version}"
        save_zoo_model(trained.cpu(), path, name=name, model_kwargs=model_kwargs, mean=list(mean), std=list(std),
                       source=source if finished else f"{source}, stopped at step {global_step} (max_steps)",
                       extra={"recipe": recipe.to_dict(), "seed": seed, "limit": options.get("limit"),
                              "steps": global_step, "finished": finished, "history": history})
        return path

    config = {"model": name or type(model).__name__, "model_kwargs": model_kwargs, "recipe": recipe.to_dict(),
              "data": str(data), "seed": seed, "options": {k: str(v) for k, v in options.items()},
              "normalization": {"mean": list(mean), "std": list(std)}}
    return fit(model, train_set, test_set, recipe, out, seed=seed, config=config, save_final=save_final, **options)


def build_datasets(recipe: Recipe, data: str | Path, download: bool = False) -> tuple[Dataset, Dataset, int, tuple]:
    """(train set, test set, number of classes, (mean, std)) of ``recipe.dataset`` under ``data``."""
    if recipe.dataset == "digits":  # ships with scikit-learn: no folder needed
        from ..data.digits import digits_datasets

        train_set, test_set, normalization = digits_datasets(recipe)
        return train_set, test_set, 10, normalization
    if recipe.dataset == "imagenet":
        from ..data.constants import IMAGENET_MEAN, IMAGENET_STD
        from ..data.imagenet import imagenet_datasets

        if download:
            raise ValueError("ImageNet cannot be downloaded automatically: point data at its train/ and val/ folders")
        train_set, test_set = imagenet_datasets(data, recipe)
        return train_set, test_set, len(train_set.classes), (IMAGENET_MEAN, IMAGENET_STD)
    from ..data.cifar import cifar_datasets, cifar_normalization

    train_set, test_set = cifar_datasets(data, recipe, download=download)
    return train_set, test_set, 100 if recipe.dataset == "cifar100" else 10, cifar_normalization(recipe.dataset)
