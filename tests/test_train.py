"""Training loop: schedule, exact resume, data-parallel equivalence, checkpoint safety."""

from __future__ import annotations

import os
import random
import signal
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


def run(out, max_steps=None, resume=True, workers=0, **kw):
    train, test = tiny_sets(RECIPE)
    return fit(tiny_model(), train, test, RECIPE, out, max_steps=max_steps, resume=resume, progress=False,
               deterministic=True, workers=workers, **kw)


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
    resumed = run(tmp_path / "resumed")
    assert resumed.finished
    assert_same_weights(reference.model, resumed.model)
    for a, b in zip(reference.history, resumed.history):
        for key in ("lr", "train_loss", "train_error", "test_loss", "test_error"):
            assert a[key] == pytest.approx(b[key], rel=1e-12, abs=1e-12), key


def test_existing_run_is_never_overwritten_and_resume_checks_the_recipe(tmp_path):
    run(tmp_path / "run", max_steps=1)
    with pytest.raises(FileExistsError, match="resume"):
        run(tmp_path / "run", resume=False)
    train, test = tiny_sets(RECIPE)
    with pytest.raises(ValueError, match="lr was 0.1, now 0.5"):
        fit(tiny_model(), train, test, RECIPE.replace(lr=0.5), tmp_path / "run", resume=True, workers=0, progress=False)
    # Extending the run (more epochs) is allowed.
    longer = fit(tiny_model(), train, test, RECIPE.replace(epochs=4), tmp_path / "run", resume=True, workers=0,
                 progress=False)
    assert longer.finished and len(longer.history) == 4
    again = fit(tiny_model(), train, test, RECIPE.replace(epochs=4), tmp_path / "run", workers=0, progress=False)
    assert again.finished and again.history == longer.history  # nothing left to train
    assert_same_weights(again.model, longer.model)
    with pytest.raises(ValueError, match="weights of another model"):
        fit(tiny_model(norm=False), train, test, RECIPE.replace(epochs=4), tmp_path / "run", workers=0,
            progress=False)


def test_loader_workers_do_not_change_the_result(tmp_path):
    a = run(tmp_path / "w0", workers=0)
    b = run(tmp_path / "w2", workers=2)
    assert_same_weights(a.model, b.model)


def _free_port() -> int:
    """A free port whose successor is free too (the DDP test needs two groups in turn)."""
    while True:
        with socket.socket() as s, socket.socket() as t:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            try:
                t.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    recipe = RECIPE.replace(epochs=1, batch_size=8)
    train, test = tiny_sets(recipe, n=16)  # 2 steps of 2 x 4 images
    with pytest.raises(ValueError, match="not divisible"):  # an error too leaves no process group behind
        fit(tiny_model(), train, test, recipe.replace(batch_size=7), f"{out}-bad", workers=0, progress=False,
            device="cpu")
    assert not dist.is_initialized()
    os.environ["MASTER_PORT"] = str(port + 1)
    result = fit(tiny_model(norm=False, seed=rank), train, test, recipe, out, workers=0, progress=False, device="cpu")
    assert not dist.is_initialized()  # fit destroys the group it created
    torch.save(result.model.state_dict(), f"{out}/rank{rank}.pt")
    torch.save(result.history, f"{out}/history{rank}.pt")


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
    single = fit(tiny_model(norm=False, seed=0), train, test, recipe, tmp_path / "single", workers=0, progress=False)
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(rank0[key], value, rtol=1e-5, atol=1e-6)
    ddp_history = torch.load(tmp_path / "ddp" / "history0.pt", weights_only=True)
    assert ddp_history[0]["test_error"] == pytest.approx(single.history[0]["test_error"])
    assert ddp_history[0]["train_loss"] == pytest.approx(single.history[0]["train_loss"], rel=1e-5)


class _SignalAt(torch.utils.data.Dataset):
    """Sends this process ``signum`` (Ctrl-C, or a scheduler pre-empting the job) at the ``call``-th item loaded."""

    def __init__(self, dataset, call: int, signum: int):
        self.dataset, self.call, self.signum, self.calls = dataset, call, signum, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        self.calls += 1
        if self.calls == self.call:
            os.kill(os.getpid(), self.signum)
        return self.dataset[i]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_in_the_first_epoch_checkpoints_after_the_step_and_resumes_exactly(tmp_path, signum):
    reference = run(tmp_path / "straight")
    train, test = tiny_sets(RECIPE)
    # Item 20 is loaded for step 2 of 3 (batches of 16, no workers): that step finishes, then the run stops.
    stopped = fit(tiny_model(), _SignalAt(train, call=20, signum=signum), test, RECIPE, tmp_path / "run",
                  workers=0, progress=False, deterministic=True)
    assert not stopped.finished and stopped.stopped_by == signal.Signals(signum).name
    assert stopped.model_path is None
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert (saved["epoch"], saved["step_in_epoch"], saved["global_step"]) == (0, 2, 2)
    assert signal.getsignal(signum) is not None and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    scramble_global_rngs()
    resumed = run(tmp_path / "run")  # the same call again continues
    assert resumed.finished and resumed.stopped_by is None
    assert_same_weights(reference.model, resumed.model)


_CTRL_C_SCRIPT = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
import torch
from test_train import RECIPE, tiny_model, tiny_sets
from pushpull.engine.train import fit

class CtrlC(torch.utils.data.Dataset):  # in the loader process: Ctrl-C reaches the terminal's whole group
    def __init__(self, dataset):
        self.dataset, self.calls = dataset, 0
    def __len__(self):
        return len(self.dataset)
    def __getitem__(self, i):
        self.calls += 1
        if self.calls == 20:
            os.killpg(os.getpgrp(), signal.SIGINT)
        return self.dataset[i]

train, test = tiny_sets(RECIPE)
result = fit(tiny_model(), CtrlC(train), test, RECIPE, sys.argv[2], workers=1, progress=False, deterministic=True)
print(result.stopped_by)
"""


def test_ctrl_c_to_the_process_group_with_loader_workers_stops_cleanly(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _CTRL_C_SCRIPT, str(Path(__file__).parent), str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120, start_new_session=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["SIGINT"]
    assert "rerun the same command to resume" in done.stderr and "Traceback" not in done.stderr
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert saved["epoch"] == 0 and 1 <= saved["step_in_epoch"] <= 2  # the worker loads up to 2 batches ahead
    resumed = run(tmp_path / "run")
    assert_same_weights(run(tmp_path / "straight").model, resumed.model)


def test_limit_trains_on_the_strided_subset_and_a_resume_must_keep_it(tmp_path):
    from pushpull.data.cifar import ImageArrayDataset
    from pushpull.data.generate import select_indices

    images, labels = tiny_data()
    keep = select_indices(len(images), 20)
    subset = ImageArrayDataset(images[keep], labels[keep], cifar_transform(RECIPE, MEAN, STD))
    _, test = tiny_sets(RECIPE)
    expected = fit(tiny_model(), subset, test, RECIPE, tmp_path / "subset", workers=0, progress=False,
                   deterministic=True)
    limited = run(tmp_path / "limited", limit=20)
    assert_same_weights(expected.model, limited.model)
    assert load_checkpoint(tmp_path / "limited" / "checkpoint.pt")["global_step"] == 3 * 2  # 20 images: 2 steps

    run(tmp_path / "other", limit=20, max_steps=1)
    with pytest.raises(ValueError, match="limit: was 20, now 24") as err:
        run(tmp_path / "other", limit=24)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="limit: was 20, now None"):
        run(tmp_path / "other")


def test_loader_workers_default_to_the_cpus_there_are(monkeypatch):
    from pushpull.engine.loaders import default_workers

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for cpus, workers in [(1, 0), (2, 1), (3, 2), (64, 4)]:
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cpus: set(range(n)), raising=False)
        assert default_workers() == workers, cpus
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # 4 torchrun processes share the 64 CPUs
    assert default_workers() == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)), raising=False)
    assert default_workers() == 1


def test_too_many_workers_is_said_once_and_the_default_says_nothing(tmp_path, monkeypatch, capsys):
    import warnings

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0}, raising=False)  # torch reads it too
    recipe = RECIPE.replace(epochs=2)
    train, test = tiny_sets(recipe)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tiny_model(), train, test, recipe, tmp_path / "default", progress=False)
        assert "worker" not in capsys.readouterr().err
        fit(tiny_model(), train, test, recipe, tmp_path / "three", workers=3, progress=False)
    assert [str(w.message) for w in caught] == []
    err = capsys.readouterr().err
    assert err.count("workers=3 is more than the 1 CPUs available") == 1, err


def test_tensorboard_events_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run(tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    scalars = events.Scalars("test_error")
    assert [e.step for e in scalars] == [1, 2, 3]
    assert [e.value for e in scalars] == pytest.approx([row["test_error"] for row in result.history])
