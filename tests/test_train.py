"""Training loop: schedule, exact resume, data-parallel equivalence, checkpoint safety."""

from __future__ import annotations

import random
import socket

import numpy as np
import pytest
import torch
from torch import nn

from pushpull.data.cifar import ImageArrayDataset, cifar_transform
from pushpull.engine.checkpoint import load_checkpoint
from pushpull.engine.train import fit
from pushpull.recipes import load_recipe

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def tiny_data(n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), rng.integers(0, 4, n)


def tiny_sets(recipe, n: int = 48):
    images, labels = tiny_data(n)
    train = ImageArrayDataset(images, labels, cifar_transform(recipe, MEAN, STD))
    test = ImageArrayDataset(images[:16], labels[:16], cifar_transform(None, MEAN, STD))
    return train, test


def tiny_model(norm: bool = True, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 6, 3, padding=1)]
    layers += [nn.BatchNorm2d(6), nn.Dropout(0.2)] if norm else []
    return nn.Sequential(*layers, nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 4))


# Augmentation that draws random numbers (crop, flip, cutout), a two-milestone schedule.
RECIPE = load_recipe("cifar-wrn-cutout", epochs=3, batch_size=16, crop_size=16, cutout=6, milestones=[1, 2])


def run(out, max_steps=None, resume=False, **kw):
    train, test = tiny_sets(RECIPE)
    return fit(tiny_model(), train, test, RECIPE, out, max_steps=max_steps, resume=resume, progress=False,
               deterministic=True, **kw)


def scramble_global_rngs() -> None:
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_lr_follows_the_paper_schedule(tmp_path):
    result = run(tmp_path / "run")
    assert result.finished and len(result.history) == 3
    # lr of 0-based epoch e is lr * 0.1 ** (#milestones <= e): 0.1, then 0.01 from epoch 1, 0.001 from epoch 2.
    assert [row["lr"] for row in result.history] == pytest.approx([0.1, 0.01, 0.001], rel=1e-12)
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    csv_rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert csv_rows[0].split(",")[:6] == ["epoch", "lr", "train_loss", "train_error", "test_loss", "test_error"]
    assert len(csv_rows) == 4


def test_paper_schedules_have_no_off_by_one():
    resnet = load_recipe("cifar-resnet")
    expected = {0: 0.1, 79: 0.1, 80: 0.01, 119: 0.01, 120: 1e-3, 159: 1e-3, 160: 1e-4, 199: 1e-4}
    for epoch, lr in expected.items():
        assert resnet.lr_at(epoch) == pytest.approx(lr, rel=1e-12)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=resnet.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(resnet.milestones), resnet.gamma)
    for epoch in range(resnet.epochs):  # the loop's order: train epoch `epoch` at the current lr, then step
        assert optimizer.param_groups[0]["lr"] == pytest.approx(resnet.lr_at(epoch), rel=1e-12), epoch
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize("stop_at", [2, 3, 6], ids=["mid-epoch", "end-of-epoch", "second-epoch-boundary"])
def test_interrupted_and_resumed_run_ends_with_identical_weights(tmp_path, stop_at):
    reference = run(tmp_path / "straight")
    interrupted = run(tmp_path / "resumed", max_steps=stop_at)  # 3 steps per epoch
    assert not interrupted.finished
    saved = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert (saved["epoch"], saved["step_in_epoch"]) == divmod(stop_at, 3)
    scramble_global_rngs()  # a new process would start from other generator states
    resumed = run(tmp_path / "resumed", resume=True)
    assert resumed.finished
    assert_same_weights(reference.model, resumed.model)
    for a, b in zip(reference.history, resumed.history):
        for key in ("lr", "train_loss", "train_error", "test_loss", "test_error"):
            assert a[key] == pytest.approx(b[key], rel=1e-12, abs=1e-12), key


def test_existing_run_is_never_overwritten_and_resume_checks_the_recipe(tmp_path):
    run(tmp_path / "run", max_steps=1)
    with pytest.raises(FileExistsError, match="resume"):
        run(tmp_path / "run")
    train, test = tiny_sets(RECIPE)
    with pytest.raises(ValueError, match="lr was 0.1, now 0.5"):
        fit(tiny_model(), train, test, RECIPE.replace(lr=0.5), tmp_path / "run", resume=True, progress=False)
    # Extending the run (more epochs) is allowed.
    longer = fit(tiny_model(), train, test, RECIPE.replace(epochs=4), tmp_path / "run", resume=True, progress=False)
    assert longer.finished and len(longer.history) == 4


def test_loader_workers_do_not_change_the_result(tmp_path):
    a = run(tmp_path / "w0", workers=0)
    b = run(tmp_path / "w2", workers=2)
    assert_same_weights(a.model, b.model)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    recipe = RECIPE.replace(epochs=1, batch_size=8)
    train, test = tiny_sets(recipe, n=16)  # 2 steps of 2 x 4 images
    result = fit(tiny_model(norm=False, seed=rank), train, test, recipe, out, progress=False, device="cpu")
    torch.save(result.model.state_dict(), f"{out}/rank{rank}.pt")
    torch.save(result.history, f"{out}/history{rank}.pt")
    dist.destroy_process_group()


def test_two_gloo_processes_end_identical_and_match_one_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "ddp" / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "ddp" / "rank1.pt", weights_only=True)
    # Rank 1 started from other weights (seed=1): DDP's broadcast and gradient averaging make them equal.
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    assert (tmp_path / "ddp" / "checkpoint.pt").exists() and (tmp_path / "ddp" / "metrics.csv").exists()

    # One process with the same global batch sees the same images per step: same weights up to summation order.
    recipe = RECIPE.replace(epochs=1, batch_size=8)
    train, test = tiny_sets(recipe, n=16)
    single = fit(tiny_model(norm=False, seed=0), train, test, recipe, tmp_path / "single", progress=False)
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(rank0[key], value, rtol=1e-5, atol=1e-6)
    ddp_history = torch.load(tmp_path / "ddp" / "history0.pt", weights_only=True)
    assert ddp_history[0]["test_error"] == pytest.approx(single.history[0]["test_error"])
    assert ddp_history[0]["train_loss"] == pytest.approx(single.history[0]["train_loss"], rel=1e-5)


class _TermAt(torch.utils.data.Dataset):
    """Sends this process SIGTERM (as a cluster scheduler pre-empting the job would) when item ``index`` is loaded."""

    def __init__(self, dataset, index: int):
        self.dataset, self.index, self.sent = dataset, index, False

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        if i == self.index and not self.sent:
            import os
            import signal

            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        return self.dataset[i]


def test_sigterm_checkpoints_and_stops_then_resumes_exactly(tmp_path):
    reference = run(tmp_path / "straight")
    train, test = tiny_sets(RECIPE)
    stopped = fit(tiny_model(), _TermAt(train, index=5), test, RECIPE, tmp_path / "run", progress=False,
                  deterministic=True)
    assert not stopped.finished
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert saved["epoch"] <= 1 and saved["global_step"] <= 3  # within the first epoch, or at its end
    resumed = run(tmp_path / "run", resume=True)
    assert_same_weights(reference.model, resumed.model)


def test_tensorboard_events_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run(tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    scalars = events.Scalars("test_error")
    assert [e.step for e in scalars] == [1, 2, 3]
    assert [e.value for e in scalars] == pytest.approx([row["test_error"] for row in result.history])
