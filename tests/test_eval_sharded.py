"""``pushpull eval`` over processes (torchrun, gloo on the CPU) and job-array shards: the one-process file, exactly.

The reference is one process evaluating in this test process; the sharded runs are real
``torchrun`` process groups (a standalone group of 2, and a two-"node" group started as two
torchrun agents meeting at a c10d rendezvous on this machine) and ``--shard K/N`` tasks
merged with ``pushpull merge-results``. Results files must be equal in every field but
``created``. Starting torchrun costs seconds: one 2-process run is in the default suite,
the rest are ``slow``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import pushpull
from pushpull import create_model
from pushpull.cli import main
from pushpull.data.constants import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from pushpull.engine.batches import Normalize
from pushpull.engine.evaluate import evaluate
from pushpull.models import save_model

N_TEST = 8
TIMEOUT = 300


pytestmark = pytest.mark.usefixtures("one_thread")


def centred(model: nn.Module, images: np.ndarray, mean, std) -> nn.Module:
    """Shift the last layer's bias by the mean logits of ``images``: an untrained model then predicts many classes."""
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        linear.bias.sub_(model.eval()(Normalize(mean, std)(images)).mean(0))
    return model


@pytest.fixture(scope="module")
def cifar(tmp_path_factory, fake_cifar10):
    """A fake CIFAR-10 test split and a saved resnet20 whose predictions vary over it."""
    root = tmp_path_factory.mktemp("cifar")
    data = fake_cifar10(root / "data", n_test=N_TEST)
    torch.manual_seed(0)
    model = centred(create_model("resnet20"), data.images, CIFAR10_MEAN, CIFAR10_STD)
    path = save_model(model, root / "model.safetensors", name="resnet20", mean=CIFAR10_MEAN, std=CIFAR10_STD,
                      source="test")
    return root, path


def cifar_args(cifar, out: Path, *extra: str) -> list[str]:
    """Clean, a corruption generated on the fly, a noise and a motion perturbation generated on the fly."""
    root, model = cifar
    return [str(model), "--data", str(root / "data"), "--benchmark", "cifar10-c,cifar10-p",
            "--corruptions", "gaussian_noise", "--severities", "3", "--perturbations", "gaussian_noise,translate",
            "--batch-size", "5", "--device", "cpu", "--no-progress", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def reference(cifar, tmp_path_factory):
    """The one-process results file (in this process)."""
    out = tmp_path_factory.mktemp("one") / "r.json"
    assert main(["eval", *cifar_args(cifar, out)]) == 0
    return out


def assert_same_results(path: Path, reference: Path) -> None:
    """Equal results files, ``created`` (the start time) apart; equal CSV twins."""
    got, want = (json.loads(p.read_text()) for p in (path, reference))
    assert got.pop("created") and want.pop("created")
    assert got == want
    assert path.with_suffix(".csv").read_text() == reference.with_suffix(".csv").read_text()


def environment() -> dict[str, str]:
    """This checkout's package first on the path; one thread per process (torchrun's default for >1 process)."""
    src = str(Path(pushpull.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def torchrun(launch: list[str], command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", *launch, *command], env=environment(),
                          cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)


def eval_on_two(args: list[str]) -> subprocess.CompletedProcess:
    """``pushpull eval ARGS`` as a standalone torchrun group of 2 processes."""
    return torchrun(["--standalone", "--nproc-per-node", "2"], ["-m", "pushpull", "eval", *args])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(command: list[str], cwd: Path | None = None) -> list[subprocess.CompletedProcess]:
    """``command`` on a simulated two-node job: two torchrun agents (1 process each) at one c10d rendezvous."""
    port = free_port()
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node",
                                "1", "--node-rank", str(rank), "--rdzv-backend", "c10d", "--rdzv-endpoint",
                                f"127.0.0.1:{port}", *command], env=environment(), cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    try:
        done = [(agent, *agent.communicate(timeout=TIMEOUT)) for agent in agents]
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
    return [subprocess.CompletedProcess(agent.args, agent.returncode, out, err) for agent, out, err in done]


# ----------------------------------------------------------------------------- torchrun


def test_two_processes_write_the_one_process_file(cifar, reference, tmp_path):
    run = eval_on_two(cifar_args(cifar, tmp_path / "r.json"))
    assert run.returncode == 0, run.stderr
    assert_same_results(tmp_path / "r.json", reference)
    assert run.stdout.count("results: ") == 1  # rank 0 alone reports
    results = json.loads(reference.read_text())
    assert results["perturbations"]["translate"]["flips"] > 0 and 0 < results["clean"]["wrong"] < N_TEST


@pytest.mark.slow
def test_a_resumed_run_under_torchrun_keeps_what_was_saved(cifar, reference, tmp_path):
    out = tmp_path / "r.json"
    first = cifar_args(cifar, out)
    first[first.index("--perturbations") + 1] = "translate"
    assert main(["eval", *first]) == 0  # one process saved clean, the corruption and translate
    saved = json.loads(out.read_text())
    saved["perturbations"]["translate"]["n"] = -1  # a mark: a unit evaluated again would lose it
    out.write_text(json.dumps(saved))
    run = eval_on_two(cifar_args(cifar, out))
    assert run.returncode == 0, run.stderr
    resumed, want = json.loads(out.read_text()), json.loads(reference.read_text())
    assert resumed["perturbations"]["translate"]["n"] == -1  # carried, not redone
    assert resumed["perturbations"]["gaussian_noise"] == want["perturbations"]["gaussian_noise"]
    assert resumed["clean"] == want["clean"] and resumed["corruptions"] == want["corruptions"]
    other = cifar_args(cifar, out, "--seed", "1")  # another run's file: both ranks stop, one line each
    run = eval_on_two(other)
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.startswith("pushpull eval: error:")]
    assert len(lines) == 2 and all("holds results of a different run" in line for line in lines), run.stderr


@pytest.mark.slow
def test_a_simulated_two_node_eval_writes_the_one_process_file(cifar, reference, tmp_path):
    runs = two_nodes(["-m", "pushpull", "eval", *cifar_args(cifar, tmp_path / "r.json")])
    assert all(run.returncode == 0 for run in runs), [run.stderr for run in runs]
    assert_same_results(tmp_path / "r.json", reference)
    assert sorted(run.stdout.count("results: ") for run in runs) == [0, 1]  # one group: its rank 0 alone reports


TRAIN_WORKER = """
import os
import sys
import torch
sys.path.insert(0, {tests!r})
from test_train import RECIPE, tiny_model, tiny_sets
from pushpull.engine.train import fit

recipe = RECIPE.replace(epochs=2, batch_size=8, milestones=[1])
train, test = tiny_sets(recipe, n=24)
result = fit(tiny_model(norm=False), train, test, recipe, sys.argv[1], workers=0, progress=False, device="cpu")
if os.environ.get("RANK", "0") == "0":
    torch.save({{"weights": result.model.state_dict(), "history": result.history,
                "world_size": int(os.environ.get("WORLD_SIZE", "1"))}}, sys.argv[2])
"""


@pytest.mark.slow
def test_a_simulated_two_node_training_matches_one_process(tmp_path):
    """What engine.train guarantees: the same images per global step, so the same weights up to summation order.

    The model has no BatchNorm: per-process batch statistics differ from one process's unless
    BatchNorm is synchronised (``--sync-bn``), which PyTorch supports on GPUs only.
    """
    script = tmp_path / "worker.py"
    script.write_text(TRAIN_WORKER.format(tests=str(Path(__file__).parent)))
    runs = two_nodes([str(script), str(tmp_path / "two"), str(tmp_path / "two.pt")], cwd=tmp_path)
    assert all(run.returncode == 0 for run in runs), [run.stderr for run in runs]
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one"), str(tmp_path / "one.pt")],
                         env=environment(), capture_output=True, text=True, timeout=TIMEOUT)
    assert one.returncode == 0, one.stderr
    two, one = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("two", "one"))
    assert (two["world_size"], one["world_size"]) == (2, 1)
    for key, value in one["weights"].items():
        torch.testing.assert_close(two["weights"][key], value, rtol=1e-5, atol=1e-6)
    assert [row["test_error"] for row in two["history"]] == [row["test_error"] for row in one["history"]]
    for a, b in zip(two["history"], one["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


# ----------------------------------------------------------------------------- ImageNet-style folder


@pytest.fixture(scope="module")
def photo_model(photo_imagenet, tmp_path_factory):
    from pushpull.data.generate import load_resized

    files = sorted(photo_imagenet.glob("*/*.JPEG"))
    torch.manual_seed(0)
    model = centred(create_model("resnet18", num_classes=3), np.stack([load_resized(f, 224) for f in files]),
                    IMAGENET_MEAN, IMAGENET_STD)
    return save_model(model, tmp_path_factory.mktemp("photo-model") / "r18.safetensors", name="resnet18",
                      model_kwargs={"num_classes": 3}, mean=IMAGENET_MEAN, std=IMAGENET_STD, source="test")


def photo_args(model: Path, data: Path, out: Path) -> list[str]:
    return [str(model), "--data", str(data), "--benchmark", "imagenet-c", "--corruptions", "motion_blur",
            "--severities", "2", "--batch-size", "4", "--device", "cpu", "--no-progress", "--out", str(out)]


@pytest.mark.slow
def test_two_processes_on_a_photo_folder_write_the_one_process_file(photo_imagenet, photo_model, tmp_path):
    assert main(["eval", *photo_args(photo_model, photo_imagenet, tmp_path / "one.json")]) == 0
    run = eval_on_two(photo_args(photo_model, photo_imagenet, tmp_path / "two.json"))
    assert run.returncode == 0, run.stderr
    assert_same_results(tmp_path / "two.json", tmp_path / "one.json")
    for k in (0, 1):
        assert main(["eval", *photo_args(photo_model, photo_imagenet, tmp_path / "sh.json"), "--shard", f"{k}/2"]) == 0
    parts = [str(tmp_path / f"sh.shard-{k}-of-2.json") for k in (0, 1)]
    assert main(["merge-results", *parts, "--out", str(tmp_path / "merged.json")]) == 0
    assert_same_results(tmp_path / "merged.json", tmp_path / "one.json")


@pytest.mark.slow
def test_a_damaged_photo_stops_every_process_with_its_name(photo_imagenet, photo_model, tmp_path):
    val = tmp_path / "val"
    shutil.copytree(photo_imagenet, val)
    broken = sorted(val.glob("*/*.JPEG"))[-1]  # in rank 1's half
    broken.write_bytes(broken.read_bytes()[:3000])
    run = eval_on_two(photo_args(photo_model, val, tmp_path / "r.json"))
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.startswith("pushpull eval: error:")]
    assert len(lines) == 2 and all(f"cannot decode {broken}" in line for line in lines), run.stderr
    assert any("rank 1: " in line for line in lines)  # rank 0 says whose image it was


# ----------------------------------------------------------------------------- job arrays


def tiny_model(images: np.ndarray) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(32, 10))
    return centred(model, images, CIFAR10_MEAN, CIFAR10_STD)


@pytest.fixture(scope="module")
def job(cifar, fake_cifar10):
    """The library's form of :func:`cifar_args`, with a tiny model (cheap enough to run many times)."""
    data = cifar[0] / "data"
    from pushpull.data.cifar import load_cifar

    return tiny_model(load_cifar(data)[0]), dict(
        data=data, benchmarks="cifar10-c,cifar10-p", corruptions=["gaussian_noise"], severities=[3],
        perturbations=["gaussian_noise", "translate"], batch_size=5, device="cpu", progress=False)


@pytest.fixture(scope="module")
def whole(job, tmp_path_factory):
    """The tiny model's one-process results file."""
    model, kw = job
    out = tmp_path_factory.mktemp("whole") / "r.json"
    evaluate(model, out=out, **kw)
    return out


@pytest.fixture(scope="module")
def parts(job, tmp_path_factory):
    """The partial files of shards 0/2 and 1/2 (each task given the same out)."""
    from pushpull.engine.distributed import Shard

    model, kw = job
    folder = tmp_path_factory.mktemp("parts")
    for k in (0, 1):
        evaluate(model, out=folder / "r.json", shard=Shard(k, 2), **kw)
    return [folder / f"r.shard-{k}-of-2.json" for k in (0, 1)]


def test_shards_merge_into_the_one_process_file(parts, whole, tmp_path, capsys):
    for k, part in enumerate(parts):
        saved = json.loads(part.read_text())
        assert saved["shard"] == {"index": k, "count": 2} and saved["complete"] and saved["summary"] is None
        assert saved["clean"]["n"] == N_TEST // 2 and not part.with_suffix(".csv").exists()
    assert main(["merge-results", *map(str, parts[::-1]), "--out", str(tmp_path / "r.json")]) == 0
    assert_same_results(tmp_path / "r.json", whole)
    assert "(from 2 shards)" in capsys.readouterr().out
    results = json.loads(whole.read_text())
    assert results["perturbations"]["translate"]["flips"] > 0 and 0 < results["clean"]["wrong"] < N_TEST


def test_the_shard_option_writes_partial_results_and_says_how_to_merge(cifar, tmp_path, capsys):
    assert main(["eval", *cifar_args(cifar, tmp_path / "r.json", "--shard", "1/2")]) == 0
    out = capsys.readouterr().out
    assert f"partial results of shard 1/2: {tmp_path / 'r.shard-1-of-2.json'}" in out
    assert f"pushpull merge-results {tmp_path / 'r.shard-*-of-2.json'} --out {tmp_path / 'r.json'}" in out
    assert json.loads((tmp_path / "r.shard-1-of-2.json").read_text())["clean"]["n"] == N_TEST - N_TEST // 2


def test_a_shard_resumes_its_own_finished_units(job, tmp_path):
    from pushpull.engine.distributed import Shard

    model, kw = job
    evaluate(model, out=tmp_path / "r.json", shard=Shard(1, 2), **kw)
    part = tmp_path / "r.shard-1-of-2.json"
    saved = json.loads(part.read_text())
    saved["clean"]["n"] = -1  # a mark: a unit evaluated again would lose it
    part.write_text(json.dumps(saved))
    evaluate(model, out=tmp_path / "r.json", shard=Shard(1, 2), **{**kw, "corruptions": ["gaussian_noise", "fog"]})
    resumed = json.loads(part.read_text())
    assert resumed["clean"]["n"] == -1 and set(resumed["corruptions"]) == {"gaussian_noise", "fog"}


def _edited(path: Path, tmp_path: Path, name: str, edit) -> Path:  # noqa: ANN001
    data = json.loads(path.read_text())
    edit(data)
    (tmp_path / name).write_text(json.dumps(data))
    return tmp_path / name


@pytest.mark.parametrize("case, message", [
    ("weights", "is not of the same evaluation as {first}: its weights (weights_sha256) differ"),
    ("seed", "is not of the same evaluation as {first}: its benchmarks differ"),
    ("flip rule", "is not of the same evaluation as {first}: its settings differ"),
    ("twice", "and {first} are both shard 0/2"),
    ("missing", "shard 1/2 missing: the 2 shards' partial files are all needed"),
    ("unfinished", "shard 1/2 is unfinished; rerun its `pushpull eval ... --shard 1/2`"),
    ("other count", "is shard 1/3 but {first} is of 2 shards"),
    ("whole results", "holds whole results, not a shard's"),
])
def test_merge_refuses_shards_that_do_not_make_one_job(parts, whole, tmp_path, case, message, capsys):
    first, second = parts
    if case == "weights":
        second = _edited(second, tmp_path, "w.json", lambda d: d["model"].update(weights_sha256="0" * 64))
    elif case == "seed":
        second = _edited(second, tmp_path, "s.json", lambda d: d["benchmarks"]["cifar10-c"].update(seed=1))
    elif case == "flip rule":
        second = _edited(second, tmp_path, "f.json", lambda d: d["settings"].update(flip_rule="consecutive"))
    elif case == "unfinished":
        second = _edited(second, tmp_path, "u.json", lambda d: d.update(complete=False))
    elif case == "other count":
        second = _edited(second, tmp_path, "c.json", lambda d: d["shard"].update(count=3))
    given = {"twice": [first, first], "missing": [first], "whole results": [first, whole]}.get(case, [first, second])
    code = main(["merge-results", *map(str, given), "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert message.format(first=first) in err, err
    if case not in ("missing", "twice"):
        assert str(given[1]) in err  # names the file
    assert not (tmp_path / "r.json").exists()


def test_a_whole_run_refuses_to_resume_from_a_partial_file(job, parts, tmp_path):
    model, kw = job
    shutil.copy(parts[0], tmp_path / "r.json")
    with pytest.raises(ValueError, match="holds the results of shard 0/2, not of a whole run"):
        evaluate(model, out=tmp_path / "r.json", **kw)


def test_more_shards_than_images_still_merge(job, tmp_path):
    from pushpull.engine.distributed import Shard

    model, kw = job
    kw = {**kw, "limit": 2}
    for k in range(3):  # 2 images over 3 shards: one shard holds none
        evaluate(model, out=tmp_path / "r.json", shard=Shard(k, 3), **kw)
    assert main(["merge-results", *(str(tmp_path / f"r.shard-{k}-of-3.json") for k in range(3)),
                 "--out", str(tmp_path / "merged.json")]) == 0
    whole = evaluate(model, out=tmp_path / "whole.json", **kw)
    assert_same_results(tmp_path / "merged.json", tmp_path / "whole.json")
    assert whole["clean"]["n"] == 2


def test_numbers_do_not_depend_on_how_the_images_are_batched(job):
    """Counts, not per-batch float means, are added: any split of the images gives the same digits."""
    model, kw = job
    runs = [evaluate(model, **{**kw, "batch_size": b}) for b in (1, 7, 256)]
    for run in runs[1:]:
        for key in ("clean", "corruptions", "perturbations", "summary"):
            assert run[key] == runs[0][key], key


def test_a_partial_file_keeps_the_baseline_as_it_was_loaded():
    from pushpull.baselines import Baseline, builtin_baselines, load_baseline

    for name in builtin_baselines():
        baseline = load_baseline(name)
        assert Baseline.from_dict(json.loads(json.dumps(baseline.to_dict()))) == baseline, name


def test_the_decode_pool_takes_this_process_share_of_the_cpus(photo_imagenet, monkeypatch):
    import pushpull.data.sources as sources

    pools, real = [], sources.ThreadPoolExecutor
    monkeypatch.setattr(sources, "ThreadPoolExecutor", lambda workers: pools.append(workers) or real(workers))
    monkeypatch.setattr("pushpull.engine.distributed.available_cpus", lambda: 16)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun's 4 processes on this node: 4 CPUs each
    model = nn.Sequential(nn.Conv2d(3, 4, 8, stride=8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    evaluate(model, data=photo_imagenet, benchmarks="imagenet-c", corruptions=[], limit=2, progress=False)
    assert pools == [4]
