"""``make-c`` / ``make-p`` split over processes write the same bytes as one process.

Two gloo processes under torchrun on the CPU, and job-array tasks (``--shard K/N``, then
``--merge`` for the CIFAR layouts), against one in-process run; missing, killed and damaged
shards. The torchrun runs take several seconds to start: all but one are ``slow``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pushpull
from pushpull.cli import main

CIFAR_C = ["--corruptions", "contrast,gaussian_noise", "--severities", "1,3", "--limit", "20"]
CIFAR_P = ["--perturbations", "translate,gaussian_noise", "--limit", "10"]
IMAGENET_C = ["--corruptions", "brightness,pixelate", "--severities", "4"]
FOLDER_C = ["--corruptions", "fog,shot_noise", "--severities", "2", "--format", "jpeg"]


@pytest.fixture(scope="module")
def cifar(tmp_path_factory, fake_cifar10) -> Path:
    return fake_cifar10(tmp_path_factory.mktemp("cifar"), n_test=30, labels=np.arange(30) // 3, seed=5).root


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def generate(command: str, dataset: str, data: Path, out: Path, options: list[str], *extra: str) -> int:
    """One in-process run of ``pushpull <command>``."""
    return main([command, "--dataset", dataset, "--data", str(data), "--out", str(out), *options, "--workers", "1",
                 "--no-progress", *extra])


def torchrun(command: str, dataset: str, data: Path, out: Path, options: list[str], *extra: str,
             nproc: int = 2, progress: bool = False) -> subprocess.CompletedProcess:
    """``pushpull <command>`` in ``nproc`` gloo processes started by torchrun (standalone: a free local port)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(pushpull.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")]))
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", "pushpull", command, "--dataset", dataset, "--data", str(data), "--out", str(out), *options,
            *([] if progress else ["--no-progress"]), *extra]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, cifar, photo_imagenet):
    """The reference outputs: each set made by one process, made on first use."""
    made: dict[str, dict[str, bytes]] = {}
    sets = {"cifar-c": ("make-c", "cifar10", cifar, CIFAR_C), "cifar-p": ("make-p", "cifar10", cifar, CIFAR_P),
            "imagenet-c": ("make-c", "imagenet", photo_imagenet, IMAGENET_C),
            "folder-c": ("make-c", "folder", photo_imagenet, FOLDER_C)}

    def get(name: str) -> dict[str, bytes]:
        if name not in made:
            command, dataset, data, options = sets[name]
            out = tmp_path_factory.mktemp(name)
            assert generate(command, dataset, data, out, options) == 0
            made[name] = files(out)
        return made[name]

    return get


def test_two_torchrun_processes_write_the_bytes_of_one(cifar, one_process, tmp_path):
    run = torchrun("make-c", "cifar10", cifar, tmp_path, CIFAR_C, progress=True)
    assert run.returncode == 0, run.stderr
    assert files(tmp_path) == one_process("cifar-c")  # the .npy files, labels and manifest; no chunks left
    assert run.stdout.count("2 corruptions x 2 severities x 20 images") == 1  # said once, by rank 0
    assert "| 80/80 [" in run.stderr and "/40 [" not in run.stderr  # one bar: both processes' images


def test_job_array_shards_and_merge_equal_one_process(cifar, one_process, tmp_path, capsys):
    assert generate("make-c", "cifar10", cifar, tmp_path, CIFAR_C, "--shard", "1/2") == 0
    assert "shard 1/2 done" in capsys.readouterr().out and not list(tmp_path.glob("*.npy.parts-*/0-10.npy"))
    assert generate("make-c", "cifar10", cifar, tmp_path, CIFAR_C, "--merge") == 1  # shard 0 has not run
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing the images of --shard 0/2 (contrast, gaussian_noise" in err
    assert generate("make-c", "cifar10", cifar, tmp_path, CIFAR_C, "--shard", "0/2") == 0
    assert generate("make-c", "cifar10", cifar, tmp_path, CIFAR_C, "--merge") == 0
    assert files(tmp_path) == one_process("cifar-c")


def test_a_killed_shard_is_repaired_by_rerunning_it(cifar, one_process, tmp_path, capsys, monkeypatch):
    import pushpull.data.corruptions as corruptions
    from pushpull.data.generate import select_indices

    for k in (0, 1):
        assert generate("make-c", "cifar10", cifar, tmp_path, CIFAR_C, "--shard", f"{k}/2") == 0
    chunks = sorted(tmp_path.glob("gaussian_noise.npy.parts-*/*.npy"), key=lambda p: int(p.stem.split("-")[0]))
    assert [c.name for c in chunks] == ["0-10.npy", "10-20.npy", "20-30.npy", "30-40.npy"]  # severity 1, 3 x shard 0, 1
    chunks[3].unlink()  # shard 1 was killed before its last chunk
    chunks[1].write_bytes(chunks[1].read_bytes()[:700])  # and one of its chunks is cut short, as by a full disk
    assert generate("make-c", "cifar10", cifar, tmp_path, CIFAR_C, "--merge") == 1
    err = capsys.readouterr().err
    assert f"redoing a damaged chunk: {chunks[1]} is truncated" in err
    assert "missing the images of --shard 1/2 (gaussian_noise incomplete); run --shard 1/2" in err
    made, real = [], corruptions.corrupt
    monkeypatch.setattr(corruptions, "corrupt", lambda images, name, severity, **kw: made.append(
        (name, severity, list(kw["indices"]))) or real(images, name, severity, **kw))
    assert generate("make-c", "cifar10", cifar, tmp_path, CIFAR_C, "--shard", "1/2") == 0
    mine = list(select_indices(30, 20)[10:])
    assert made == [("gaussian_noise", 1, mine), ("gaussian_noise", 3, mine)]  # only what is missing
    assert generate("make-c", "cifar10", cifar, tmp_path, CIFAR_C, "--merge") == 0
    assert files(tmp_path) == one_process("cifar-c")


def test_shards_of_other_options_or_counts_are_refused(cifar, tmp_path, capsys):
    assert generate("make-c", "cifar10", cifar, tmp_path, CIFAR_C, "--shard", "0/2") == 0
    capsys.readouterr()
    assert generate("make-c", "cifar10", cifar, tmp_path, CIFAR_C, "--shard", "1/3") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is being made in 2 shards" in err and "--shard 1/3" in err
    assert generate("make-c", "cifar10", cifar, tmp_path, [*CIFAR_C, "--seed", "1"], "--shard", "1/2") == 1
    assert "other options" in capsys.readouterr().err
    assert generate("make-c", "cifar10", cifar, tmp_path / "empty", CIFAR_C, "--merge") == 1
    err = capsys.readouterr().err
    assert "no --shard task has started here" in err and not (tmp_path / "empty").exists()  # nothing recorded


def test_a_run_resumes_the_chunks_of_a_run_split_otherwise(cifar, one_process, tmp_path):
    assert generate("make-c", "cifar10", cifar, tmp_path, CIFAR_C, "--shard", "1/2") == 0
    assert generate("make-c", "cifar10", cifar, tmp_path, CIFAR_C) == 0  # one process finishes the job
    assert {k: v for k, v in files(tmp_path).items() if k != "pushpull-shards.json"} == one_process("cifar-c")


def test_a_rerun_removes_chunks_left_beside_a_finished_file(cifar, one_process, tmp_path):
    """Two runs of one command at once: the second's chunks outlive the file the first assembled; a rerun clears them."""
    for k in (0, 1):
        assert generate("make-c", "cifar10", cifar, tmp_path, CIFAR_C, "--shard", f"{k}/2") == 0
    parts = sorted(tmp_path.glob("*.npy.parts-*"))
    assert parts
    kept = tmp_path.parent / f"{tmp_path.name}-parts"
    for folder in parts:
        shutil.copytree(folder, kept / folder.name)
    assert generate("make-c", "cifar10", cifar, tmp_path, CIFAR_C, "--merge") == 0
    for folder in parts:  # the other run's chunks, written after the merge
        shutil.copytree(kept / folder.name, folder)
    assert generate("make-c", "cifar10", cifar, tmp_path, CIFAR_C, "--merge") == 0
    assert not list(tmp_path.glob("*.npy.parts-*"))
    assert {k: v for k, v in files(tmp_path).items() if k != "pushpull-shards.json"} == one_process("cifar-c")


def test_make_p_shards_and_merge_equal_one_process(cifar, one_process, tmp_path):
    for k in (1, 0, 2):
        assert generate("make-p", "cifar10", cifar, tmp_path, CIFAR_P, "--shard", f"{k}/3") == 0
    assert generate("make-p", "cifar10", cifar, tmp_path, CIFAR_P, "--merge") == 0
    assert files(tmp_path) == one_process("cifar-p")


def test_imagenet_shards_equal_one_process(photo_imagenet, one_process, tmp_path):
    for k in (0, 1, 2):  # shard 1 on a pool of 2 worker processes
        workers = ["--workers", "2"] if k == 1 else []
        assert generate("make-c", "imagenet", photo_imagenet, tmp_path, IMAGENET_C, "--shard", f"{k}/3", *workers) == 0
    assert files(tmp_path) == one_process("imagenet-c")


def test_each_process_of_a_node_gets_its_share_of_the_cores(monkeypatch):
    from pushpull.engine.distributed import cores_per_process

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert cores_per_process() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert cores_per_process() == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert cores_per_process() == 16


def test_a_damaged_image_is_named_by_the_shard_that_reads_it(photo_imagenet, tmp_path, capsys):
    root = tmp_path / "val"
    shutil.copytree(photo_imagenet, root)
    damaged = sorted(root.rglob("*.JPEG"))[9]  # in shard 1/2 (images 6..11)
    damaged.write_bytes(damaged.read_bytes()[:3000])
    options = ["--corruptions", "brightness", "--severities", "2"]
    assert generate("make-c", "imagenet", root, tmp_path / "c", options, "--shard", "0/2") == 0
    assert generate("make-c", "imagenet", root, tmp_path / "c", [*options, "--workers", "2"], "--shard", "1/2") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot decode {damaged}" in err
    assert not list((tmp_path / "c").rglob(damaged.name))


@pytest.mark.slow
def test_two_torchrun_processes_imagenet_c(photo_imagenet, one_process, tmp_path):
    run = torchrun("make-c", "imagenet", photo_imagenet, tmp_path, IMAGENET_C)
    assert run.returncode == 0, run.stderr
    assert files(tmp_path) == one_process("imagenet-c")
    assert run.stdout.count(f"wrote {12 * 2} images under") == 1  # the global count, once


@pytest.mark.slow
def test_two_torchrun_processes_folder_c_one_bar(photo_imagenet, one_process, tmp_path):
    run = torchrun("make-c", "folder", photo_imagenet, tmp_path, FOLDER_C, progress=True)
    assert run.returncode == 0, run.stderr
    assert files(tmp_path) == one_process("folder-c")
    assert "24/24" in run.stderr and "12/12" not in run.stderr  # rank 0's bar counts both processes' files


@pytest.mark.slow
def test_two_torchrun_processes_make_p(cifar, one_process, tmp_path):
    run = torchrun("make-p", "cifar10", cifar, tmp_path, CIFAR_P)
    assert run.returncode == 0, run.stderr
    assert files(tmp_path) == one_process("cifar-p")


@pytest.mark.slow
def test_torchrun_inside_a_job_array_task(cifar, one_process, tmp_path):
    """Task 1 of 2 run by 2 processes (slices 2 and 3 of 4), task 0 by one; the merge fits them together."""
    run = torchrun("make-c", "cifar10", cifar, tmp_path, CIFAR_C, "--shard", "1/2")
    assert run.returncode == 0, run.stderr
    assert generate("make-c", "cifar10", cifar, tmp_path, CIFAR_C, "--shard", "0/2") == 0
    assert generate("make-c", "cifar10", cifar, tmp_path, CIFAR_C, "--merge") == 0
    assert files(tmp_path) == one_process("cifar-c")


@pytest.mark.slow
def test_an_error_in_one_rank_ends_the_run(photo_imagenet, tmp_path):
    root = tmp_path / "val"
    shutil.copytree(photo_imagenet, root)
    damaged = sorted(root.rglob("*.JPEG"))[9]  # rank 1's
    damaged.write_bytes(damaged.read_bytes()[:3000])
    run = torchrun("make-c", "imagenet", root, tmp_path / "c", IMAGENET_C)  # no hanging peer: ends in the timeout
    assert run.returncode != 0
    assert f"pushpull make-c: error: cannot decode {damaged}" in run.stderr


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_chunks_assemble_into_the_array_whatever_their_overlaps(tmp_path, monkeypatch, kernel_copy):
    from pushpull.data.shards import NpyChunks

    if not kernel_copy:  # a platform or filesystem pair without copy_file_range: the read-and-write way
        monkeypatch.setattr(os, "copy_file_range", lambda *a: (_ for _ in ()).throw(OSError(18, "cross-device")),
                            raising=False)
    expected = np.random.default_rng(3).integers(0, 256, (10, 31, 4, 3), dtype=np.uint8)
    target = NpyChunks(tmp_path / "x.npy", expected.shape, {"seed": 0})
    for start, stop in [(7, 10), (0, 4), (2, 7), (3, 5)]:  # runs split otherwise overlap in any way
        target.write(slice(start, stop), expected[start:stop])
    target.assemble()
    assert np.array_equal(np.load(tmp_path / "x.npy"), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]  # the chunks are gone, no temporary left


def test_job_array_tasks_with_different_names_all_reach_the_manifest(tmp_path, monkeypatch):
    """Tasks started at once, each with its own corruptions, read and rewrite the manifest: none is lost."""
    import threading
    import time

    from pushpull.data import generate
    from pushpull.data.robustness_sets import MANIFEST, read_manifest

    slow_read = generate.read_json

    def read_json(path, label=""):  # widen the window between reading the manifest and writing it back
        value = slow_read(path, label)
        time.sleep(0.02)
        return value

    monkeypatch.setattr(generate, "read_json", read_json)
    generate.claim_manifest(tmp_path, benchmark="imagenet-c", seed=0, names=["fog"])
    names = ["snow", "frost", "pixelate", "contrast", "brightness", "saturate"]
    errors = []

    def task(name):
        try:
            generate.claim_manifest(tmp_path, benchmark="imagenet-c", seed=0, names=[name])
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=task, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert read_manifest(tmp_path)["names"] == sorted(["fog", *names])
    assert {p.name for p in tmp_path.iterdir()} == {MANIFEST}  # no lock file left behind
