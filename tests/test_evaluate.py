"""The evaluation pipeline against plain forward passes, on small stand-in data; errors; resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from pushpull import metrics
from pushpull.cli import main
from pushpull.data.constants import CIFAR10_MEAN, CIFAR10_STD
from pushpull.data.streams import STREAM_RULE
from pushpull.engine.evaluate import evaluate, strided_indices
from pushpull.models import load_model

N, T = 24, 5


pytestmark = pytest.mark.usefixtures("one_thread")


C_NAMES, P_NAMES = ["gaussian_noise", "fog"], ["shot_noise", "rotate"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory, fake_cifar10):
    """A fake CIFAR-10 test split (N images) with -C and -P folders in the official layout."""
    rng = np.random.default_rng(0)
    root, images, labels = fake_cifar10(tmp_path_factory.mktemp("bench"), n_test=N, seed=rng)
    (root / "C").mkdir()
    (root / "P").mkdir()
    np.save(root / "C" / "labels.npy", np.tile(labels, 5).astype(np.uint8))
    for name in C_NAMES:
        np.save(root / "C" / f"{name}.npy", rng.integers(0, 256, (5 * N, 32, 32, 3), dtype=np.uint8))
    for name in P_NAMES:
        seqs = np.repeat(images[:, None], T, axis=1).astype(np.int16)
        seqs[:, 1:] += rng.integers(-60, 60, seqs[:, 1:].shape, dtype=np.int16)  # some predictions flip
        np.save(root / "P" / f"{name}.npy", seqs.clip(0, 255).astype(np.uint8))
    return root, images, labels


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, 10)).eval()


def plain_logits(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """The obvious path: scale to [0, 1], subtract the mean, divide by the std, one forward."""
    x = torch.tensor(images, dtype=torch.float32).permute(0, 3, 1, 2) / 255
    x = (x - torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(x).numpy()


def run(bench, model, **kw):
    root = bench[0]
    args = dict(data=root, c_dir=root / "C", p_dir=root / "P", corruptions=C_NAMES, perturbations=P_NAMES,
                batch_size=7, progress=False)
    return evaluate(model, **{**args, **kw})


def test_strided_indices():
    assert strided_indices(10, 4).tolist() == [0, 2, 5, 7]
    assert strided_indices(5, None).tolist() == list(range(5))
    assert strided_indices(5, 9).tolist() == list(range(5))


def test_errors_and_flips_equal_plain_forward(bench):
    root, images, labels = bench
    model = tiny_model()
    res = run(bench, model, flip_rule="hendrycks")
    assert res["clean"]["error"] == metrics.error_rate(plain_logits(model, images).argmax(1), labels)
    for name in C_NAMES:
        array = np.load(root / "C" / f"{name}.npy")
        for s in range(1, 6):
            want = metrics.error_rate(plain_logits(model, array[(s - 1) * N:s * N]).argmax(1), labels)
            assert res["corruptions"][name]["errors"][str(s)] == pytest.approx(want)
    for name in P_NAMES:
        seqs = np.load(root / "P" / f"{name}.npy")
        logits = plain_logits(model, seqs.reshape(-1, 32, 32, 3)).reshape(N, T, 10)
        noise = name == "shot_noise"
        entry = res["perturbations"][name]
        assert entry["flip_probability"] == pytest.approx(metrics.flip_probability(logits.argmax(-1), noise=noise))
        assert entry["top5_distance"] == pytest.approx(metrics.top5_distance(logits, noise=noise))
    assert res["complete"] and res["benchmarks"]["cifar10-c"]["source"] == "disk"
    assert res["summary"]["baseline"] == "alexnet-cifar10"
    assert res["summary"]["mCE"] is None  # 2 of the 15 corruptions: no mean claimed
    # the noise rule matters: consecutive frames give a different FP on the noise sequence
    res_c = run(bench, model, flip_rule="consecutive", perturbations=["shot_noise"], corruptions=[])
    seqs = np.load(root / "P" / "shot_noise.npy")
    preds = plain_logits(model, seqs.reshape(-1, 32, 32, 3)).reshape(N, T, 10).argmax(-1)
    assert res_c["perturbations"]["shot_noise"]["flip_probability"] == pytest.approx(
        metrics.flip_probability(preds, noise=True, rule="consecutive"))


def test_limit_evaluates_the_strided_subset(bench):
    root, images, labels = bench
    model = tiny_model()
    res = run(bench, model, limit=8, perturbations=[], benchmarks="cifar10-c")
    idx = strided_indices(N, 8)
    assert res["clean"]["n"] == 8 and res["data"]["num_evaluated"] == 8 and res["data"]["limit"] == 8
    assert res["clean"]["error"] == metrics.error_rate(plain_logits(model, images[idx]).argmax(1), labels[idx])
    array = np.load(root / "C" / "fog.npy")
    want = metrics.error_rate(plain_logits(model, array[2 * N + idx]).argmax(1), labels[idx])
    assert res["corruptions"]["fog"]["errors"]["3"] == pytest.approx(want)


def test_folder_made_with_limit_evaluates_the_images_it_holds(bench, tmp_path):
    """make-c --limit M writes rows for test images floor(k * N / M): only those are evaluated."""
    root, images, labels = bench
    held = strided_indices(N, 12)
    sub = tmp_path / "C12"
    sub.mkdir()
    full = np.load(root / "C" / "fog.npy")
    np.save(sub / "fog.npy", np.concatenate([full[s * N + held] for s in range(5)]))
    np.save(sub / "labels.npy", np.tile(labels[held], 5).astype(np.uint8))
    model = tiny_model()
    res = run(bench, model, c_dir=sub, corruptions=["fog"], benchmarks="cifar10-c", limit=6)
    idx = held[strided_indices(12, 6)]
    assert res["data"]["num_evaluated"] == 6
    assert res["clean"]["error"] == metrics.error_rate(plain_logits(model, images[idx]).argmax(1), labels[idx])
    want = metrics.error_rate(plain_logits(model, full[3 * N + idx]).argmax(1), labels[idx])
    assert res["corruptions"]["fog"]["errors"]["4"] == pytest.approx(want)


class Interrupting(nn.Module):
    """Counts forward calls and raises at call ``fail_at`` (a stand-in for Ctrl-C or a crash)."""

    def __init__(self, inner: nn.Module, fail_at: int | None = None) -> None:
        super().__init__()
        self.inner, self.fail_at, self.calls = inner, fail_at, 0

    def forward(self, x):  # noqa: ANN001, ANN201
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return self.inner(x)


def test_partial_results_are_saved_and_resumed(bench, tmp_path):
    out = tmp_path / "r.json"
    full = run(bench, Interrupting(tiny_model()))
    batches_per_set = -(-N // 7)
    broken = Interrupting(tiny_model(), fail_at=3 * batches_per_set + 2)  # inside the 4th set (gaussian s3)
    with pytest.raises(KeyboardInterrupt):
        run(bench, broken, out=out)
    partial = json.loads(out.read_text())
    assert not partial["complete"] and partial["clean"] is not None
    assert list(partial["corruptions"]["gaussian_noise"]["errors"]) == ["1", "2"]
    assert out.with_suffix(".csv").read_text().startswith("metric,name,severity,value\nerror,clean,")
    resumed = Interrupting(tiny_model())
    res = run(bench, resumed, out=out)
    assert resumed.calls == full_calls(bench) - 3 * batches_per_set
    for key in ("clean", "corruptions", "perturbations"):
        assert res[key] == full[key]
    assert json.loads(out.read_text())["complete"]
    with pytest.raises(ValueError, match="different run"):
        run(bench, tiny_model(seed=1), out=out)  # other weights: refuse to mix results


def test_rerun_with_more_corruptions_extends_the_file(bench, tmp_path):
    out = tmp_path / "r.json"
    run(bench, Interrupting(tiny_model()), out=out, corruptions=["fog"], perturbations=["rotate"])
    counting = Interrupting(tiny_model())
    res = run(bench, counting, out=out, corruptions=["gaussian_noise"], perturbations=["rotate"])
    assert counting.calls == 5 * -(-N // 7)  # only the new corruption's 5 severities
    assert set(res["corruptions"]) == {"fog", "gaussian_noise"}
    assert res["benchmarks"]["cifar10-c"]["corruptions"] == ["fog", "gaussian_noise"]
    with pytest.raises(FileNotFoundError, match="neither a built-in"):
        run(bench, tiny_model(), baseline=tmp_path / "nope.json")  # fails before any work


def full_calls(bench) -> int:
    model = Interrupting(tiny_model())
    run(bench, model)
    return model.calls


def test_bad_inputs_give_clear_errors(bench, tmp_path):
    root = bench[0]
    with pytest.raises(FileNotFoundError, match="lacks corruption file.*snow.npy"):
        run(bench, tiny_model(), corruptions=["gaussian_noise", "snow"])
    with pytest.raises(FileNotFoundError, match=f"benchmark folder not found: {tmp_path / 'typo'}$"):
        run(bench, tiny_model(), c_dir=tmp_path / "typo")
    with pytest.raises(FileNotFoundError, match=f"benchmark folder not found: {tmp_path / 'typo'}$"):
        run(bench, tiny_model(), p_dir=tmp_path / "typo")
    with pytest.raises(ValueError, match="unknown corruption"):
        run(bench, tiny_model(), corruptions=["gaussian_nois"])
    bad = tmp_path / "C"
    bad.mkdir()
    np.save(bad / "labels.npy", np.zeros(5 * N, dtype=np.uint8))
    np.save(bad / "fog.npy", np.load(root / "C" / "fog.npy"))
    with pytest.raises(ValueError, match="does not match the clean test labels"):
        run(bench, tiny_model(), c_dir=bad, corruptions=["fog"], perturbations=[])

    class NaNModel(nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN201
            return torch.full((x.shape[0], 10), float("nan"))

    with pytest.raises(FloatingPointError, match="NaN"):
        run(bench, NaNModel())
    with pytest.raises(ValueError, match="outputs"):
        run(bench, nn.Sequential(nn.Flatten(), nn.Linear(3072, 2)))
    with pytest.raises(ValueError, match="unknown benchmark"):
        run(bench, tiny_model(), benchmarks="cifar10-x")


def test_checkpoint_that_does_not_fit_is_named(tmp_path):
    from safetensors.torch import save_file

    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 10))
    path = tmp_path / "w.safetensors"
    save_file(other.state_dict(), str(path))
    with pytest.raises(ValueError, match=r"do not fit.*wrong shapes.*0\.weight"):
        load_model(tiny_model(), weights=path, dataset="cifar10")
    torch.save({"state_dict": {f"module.{k}": v for k, v in tiny_model(3).state_dict().items()}}, tmp_path / "w.pth")
    # A DataParallel prefix and a wrapping dict are accepted.
    model = load_model(tiny_model(), weights=tmp_path / "w.pth", dataset="cifar10").model
    assert torch.equal(model[0].weight, tiny_model(3)[0].weight)


def test_cli_names_an_unknown_model(bench, tmp_path, capsys):
    from safetensors.torch import save_file

    weights = tmp_path / "tiny.safetensors"
    save_file(tiny_model().state_dict(), str(weights))
    code = main(["eval", "resnet-does-not-exist", "--weights", str(weights), "--data", str(bench[0]),
                 "--benchmark", "cifar10-c", "--out", str(tmp_path / "x.json"), "--quiet"])
    assert code != 0
    assert "resnet-does-not-exist" in capsys.readouterr().err


def test_generated_corruptions_match_the_generator_on_the_subset(bench):
    from pushpull.data.corruptions import corrupt

    root, images, labels = bench
    model = tiny_model()
    kw = dict(data=root, benchmarks="cifar10-c", corruptions=["gaussian_noise", "contrast"], severities=[2, 5],
              limit=10, seed=7, progress=False)
    res = evaluate(model, batch_size=4, **kw)
    assert res["benchmarks"]["cifar10-c"]["source"] == "generated" and res["benchmarks"]["cifar10-c"]["seed"] == 7
    idx = strided_indices(N, 10)
    for name in ("gaussian_noise", "contrast"):
        for s in (2, 5):
            corrupted = corrupt(images[idx], name, s, seed=7, indices=idx)
            want = metrics.error_rate(plain_logits(model, corrupted).argmax(1), labels[idx])
            assert res["corruptions"][name]["errors"][str(s)] == pytest.approx(want)
    again = evaluate(model, batch_size=3, **kw)  # other batching, same numbers
    assert again["corruptions"] == res["corruptions"]


def test_official_resnet20_end_to_end(shared, cifar10_root, tmp_path, capsys):
    """The CLI on an original checkpoint: clean and corrupted errors equal plain forward passes."""
    from pushpull.data.cifar import load_cifar
    from pushpull.data.corruptions import corrupt
    from pushpull.models import import_official

    folder = shared / "checkpoints" / "official-cifar10" / "resnet-20"
    out = tmp_path / "r20.json"
    code = main(["eval", str(folder), "--allow-pickle", "--data", str(cifar10_root), "--limit", "50",
                 "--corruptions", "gaussian_noise", "--severities", "1,5", "--perturbations", "translate",
                 "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    images, labels = load_cifar(cifar10_root)
    idx = strided_indices(len(labels), 50)
    model = import_official(folder / "model_best.pth.tar", allow_pickle=True)
    assert res["model"]["name"] == "resnet20" and res["model"]["normalization"]["mean"] == list(CIFAR10_MEAN)
    assert res["data"]["official"] is False and "not the official cifar10 test file" in res["data"]["notes"][0]
    assert "note: " in capsys.readouterr().err  # the JPEG copy is said to be one, not only recorded
    assert res["clean"]["error"] == metrics.error_rate(plain_logits(model, images[idx]).argmax(1), labels[idx])
    for s in (1, 5):
        corrupted = corrupt(images[idx], "gaussian_noise", s, seed=0, indices=idx)
        want = metrics.error_rate(plain_logits(model, corrupted).argmax(1), labels[idx])
        assert res["corruptions"]["gaussian_noise"]["errors"][str(s)] == pytest.approx(want)
    errors = res["corruptions"]["gaussian_noise"]["errors"]
    assert errors["5"] >= errors["1"] >= 0  # the strongest noise does not help
    assert res["summary"]["corruptions"]["gaussian_noise"]["ce_unnormalized"] == pytest.approx(
        (errors["1"] + errors["5"]) / 2)
    assert 0 <= res["perturbations"]["translate"]["flip_probability"] <= 1
    rows = out.with_suffix(".csv").read_text().splitlines()
    assert f"error,gaussian_noise,5,{errors['5']:.6f}" in rows


@pytest.fixture(scope="module")
def imagenet_val(tmp_path_factory):
    """A fake ImageNet val folder: 3 classes x 2 JPEGs of odd sizes."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagenet") / "val"
    rng = np.random.default_rng(5)
    for c, wnid in enumerate(["n01", "n02", "n03"]):
        (root / wnid).mkdir(parents=True)
        for k in range(2):
            pixels = rng.integers(0, 256, (260 + 10 * k, 300, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / wnid / f"ILSVRC2012_val_{c}{k}.JPEG", quality=90)
    return root


def test_imagenet_generated_c_equals_a_make_c_folder(imagenet_val, tmp_path):
    from pushpull.data.constants import IMAGENET_MEAN, IMAGENET_STD
    from pushpull.data.generate import load_resized, make_imagenet_c

    model = nn.Sequential(nn.Conv2d(3, 4, 8, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    kw = dict(data=imagenet_val, benchmarks="imagenet-c", corruptions=["gaussian_noise"], severities=[3],
              batch_size=4, progress=False)
    generated = evaluate(model, **kw)
    make_imagenet_c(imagenet_val, tmp_path / "C", ["gaussian_noise"], severities=[3], progress=False)
    from_disk = evaluate(model, c_dir=tmp_path / "C", **kw)
    assert generated["corruptions"] == from_disk["corruptions"]
    assert generated["model"]["normalization"]["mean"] == list(IMAGENET_MEAN)
    assert generated["summary"]["baseline"] == "alexnet-imagenet"
    files = sorted(imagenet_val.glob("*/*.JPEG"))
    x = torch.tensor(np.stack([load_resized(f, 224) for f in files]), dtype=torch.float32).permute(0, 3, 1, 2) / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        preds = model(x).argmax(1).numpy()
    assert generated["clean"]["error"] == metrics.error_rate(preds, np.repeat([0, 1, 2], 2))
    # a file missing from a later folder is named (raised on the data thread, re-raised here)
    make_imagenet_c(imagenet_val, tmp_path / "C", ["gaussian_noise"], severities=[5], progress=False)
    next((tmp_path / "C" / "gaussian_noise" / "5").glob("*/*.JPEG")).unlink()
    with pytest.raises(FileNotFoundError, match="benchmark file missing.*gaussian_noise/5/"):
        evaluate(model, **{**kw, "severities": [3, 5]}, c_dir=tmp_path / "C")


def test_official_checkpoint_in_an_unnamed_folder_needs_arch(shared, tmp_path):
    import shutil

    copy = tmp_path / "downloads" / "ckpt.pth.tar"
    copy.parent.mkdir()
    shutil.copy(shared / "checkpoints" / "official-cifar10" / "resnet-20-pp" / "model_best.pth.tar", copy)
    with pytest.raises(ValueError, match="pass the model name"):
        load_model(str(copy), allow_pickle=True)
    info = load_model(str(copy), allow_pickle=True, arch="resnet20_pp").describe()
    assert info["name"] == "resnet20_pp" and info["weights"] == str(copy) and len(info["weights_sha256"]) == 64


@pytest.mark.slow
@pytest.mark.parametrize("folder, error", [("resnet-20", 0.1906), ("resnet-20-pp", 0.1720)])
def test_official_clean_errors_on_the_full_test_set(shared, cifar10_root, folder, error):
    """The shared README's numbers: the original networks' error on all 10,000 JPEG-q75 test images."""
    res = evaluate(str(shared / "checkpoints" / "official-cifar10" / folder), allow_pickle=True, data=cifar10_root,
                   benchmarks="cifar10-c", corruptions=[], progress=False)
    assert res["clean"]["n"] == 10000
    assert res["clean"]["error"] == pytest.approx(error, abs=5e-5)


def test_every_list_argument_takes_a_list_or_a_comma_string(bench):
    """corruptions="fog,gaussian_noise" is two names, not a string split into letters (as on the CLI)."""
    as_lists = run(bench, tiny_model(), benchmarks=["cifar10-c", "cifar10-p"], corruptions=["fog", "gaussian_noise"],
                   severities=[2, 4], perturbations=["rotate"], mean=list(CIFAR10_MEAN), std=list(CIFAR10_STD))
    as_text = run(bench, tiny_model(), benchmarks="cifar10-c, cifar10-p", corruptions="fog,gaussian_noise",
                  severities="2,4", perturbations="rotate", mean=",".join(map(str, CIFAR10_MEAN)),
                  std=",".join(map(str, CIFAR10_STD)))
    for key in ("clean", "corruptions", "perturbations", "benchmarks"):
        assert as_text[key] == as_lists[key]
    assert list(as_text["corruptions"]) == ["fog", "gaussian_noise"]
    assert list(as_text["corruptions"]["fog"]["errors"]) == ["2", "4"]
    with pytest.raises(ValueError, match="did you mean 'fog'"):
        run(bench, tiny_model(), corruptions="fgo,gaussian_noise")
    with pytest.raises(ValueError, match="severities must be among .*got '1,x'"):
        run(bench, tiny_model(), severities="1,x")
    with pytest.raises(ValueError, match="severities must be among 1, 2, 3, 4, 5"):
        run(bench, tiny_model(), severities=[0, 3])
    with pytest.raises(ValueError, match="normalisation mean must be numbers .*'0.5,x,0.5'"):
        run(bench, tiny_model(), mean="0.5,x,0.5", std="0.2,0.2,0.2")


def strided_folder(folder, source, rows, kind: str, labels=None):
    """A make-c/-p --limit folder: the rows of ``source`` (a full -C/-P folder) for test images ``rows``."""
    folder.mkdir()
    for path in source.glob("*.npy"):
        array = np.load(path)
        if kind == "c":
            array = np.concatenate([array[s * N + rows] for s in range(5)])
        else:
            array = array[rows]
        np.save(folder / path.name, array)
    return folder


def test_fewer_images_than_asked_are_said_up_front_and_recorded(bench, tmp_path, capsys):
    root = bench[0]
    held_c, held_p = strided_indices(N, 12), strided_indices(N, 8)
    c12 = strided_folder(tmp_path / "C12", root / "C", held_c, "c")
    p8 = strided_folder(tmp_path / "P8", root / "P", held_p, "p")
    res = run(bench, tiny_model(), c_dir=c12, p_dir=p8, limit=10)
    common = np.intersect1d(held_c, held_p)
    assert res["data"]["num_evaluated"] == len(common) == 4
    note = res["data"]["notes"][-1]
    assert note.startswith("asked for 10 images (limit 10), evaluating 4:")
    assert f"{c12} holds 12 and {p8} holds 8 of the {N} test images; 4 are in both" in note
    assert capsys.readouterr().err.count(note) == 1  # said once, before the work
    # one folder holds fewer than asked; a limit beyond the test split; and no note when nothing is cut
    res = run(bench, tiny_model(), c_dir=c12, benchmarks="cifar10-c", limit=20)
    assert res["data"]["notes"][-1] == (f"asked for 20 images (limit 20), evaluating 12: {c12} holds 12 of the "
                                        f"{N} test images (a make-c/-p --limit folder)")
    assert run(bench, tiny_model(), limit=100)["data"]["notes"][-1].endswith(f"the test split holds {N}")
    res = run(bench, tiny_model(), c_dir=c12, benchmarks="cifar10-c")
    assert res["data"]["notes"][-1].startswith(f"asked for all {N} test images, evaluating 12:")
    res = run(bench, tiny_model(), limit=6)
    assert not any("asked for" in n for n in res["data"]["notes"])


def test_a_copy_of_cifar_that_is_not_the_official_file_is_noted(bench, monkeypatch):
    import hashlib

    from pushpull.data import sources

    res = run(bench, tiny_model(), benchmarks="cifar10-c", corruptions=["fog"])
    assert res["data"]["official"] is False
    assert "is not the official cifar10 test file" in res["data"]["notes"][0]
    test_batch = bench[0] / "cifar-10-batches-py" / "test_batch"
    official = {sources.BenchmarkDataset.CIFAR10: ("test_batch", hashlib.md5(test_batch.read_bytes()).hexdigest())}
    monkeypatch.setattr(sources, "OFFICIAL_TEST_MD5", official)
    res = run(bench, tiny_model(), benchmarks="cifar10-c", corruptions=["fog"])
    assert res["data"]["official"] is True and res["data"]["notes"] == []


def test_in_memory_arrays_evaluate_like_the_folder(bench):
    root, images, labels = bench
    from_folder = run(bench, tiny_model(), limit=10)
    from_arrays = run(bench, tiny_model(), data=(images, labels), limit=10)
    for key in ("clean", "corruptions", "perturbations"):
        assert from_arrays[key] == from_folder[key]
    assert from_arrays["data"]["root"] is None and len(from_arrays["data"]["arrays_sha256"]) == 64
    assert from_arrays["data"]["official"] is None
    with pytest.raises(ValueError, match="images must be uint8"):
        run(bench, tiny_model(), data=(images.astype(np.float32), labels))
    with pytest.raises(ValueError, match=r"labels must be integers of shape \(24,\)"):
        run(bench, tiny_model(), data=(images, labels[:5]))


def test_resume_from_a_damaged_results_file_names_it(bench, tmp_path):
    out = tmp_path / "r.json"
    out.write_text('{"format": "pushpull-robustness-res')  # cut short
    with pytest.raises(ValueError, match=f"results file {out} is not valid JSON"):
        run(bench, tiny_model(), out=out)


def test_a_damaged_labels_file_is_named(bench, tmp_path):
    import shutil

    root = tmp_path / "bench"
    shutil.copytree(bench[0], root)
    np.save(root / "P" / "labels.npy", bench[2])
    for sub in ("C", "P"):
        labels = root / sub / "labels.npy"
        whole = labels.read_bytes()
        for cut in (0, 5, 100, len(whole) - 1):  # empty, inside the magic, inside the header, inside the data
            labels.write_bytes(whole[:cut])
            with pytest.raises(ValueError, match=f"{sub}/labels.npy cannot be read") as err:
                evaluate(tiny_model(), data=root, c_dir=root / "C", p_dir=root / "P", corruptions=C_NAMES,
                         perturbations=P_NAMES, progress=False, out=tmp_path / "r.json")
            assert "pickle" not in str(err.value)  # a cut file is not one to unpickle
        labels.write_bytes(whole)


def test_an_old_results_file_without_the_new_data_fields_resumes(bench, tmp_path):
    out = tmp_path / "r.json"
    run(bench, Interrupting(tiny_model()), out=out, corruptions=["fog"], perturbations=[])
    old = json.loads(out.read_text())
    for key in ("official", "notes"):
        del old["data"][key]
    out.write_text(json.dumps(old))
    counting = Interrupting(tiny_model())
    res = run(bench, counting, out=out, corruptions=["fog"], perturbations=[])
    assert counting.calls == 0 and res["corruptions"] == old["corruptions"]


def test_resume_refuses_other_normalisation_or_an_older_stream_rule(bench, tmp_path):
    out = tmp_path / "r.json"
    model = tiny_model()
    run(bench, model, out=out, c_dir=None, corruptions=["fog"], severities=[1], perturbations=[])
    with pytest.raises(ValueError, match="different run"):  # same weights, other inputs: numbers not comparable
        run(bench, model, out=out, c_dir=None, corruptions=["fog"], severities=[1], perturbations=[], mean=[0.5] * 3, std=[0.25] * 3)
    saved = json.loads(out.read_text())
    assert saved["benchmarks"]["cifar10-c"]["stream_rule"] == STREAM_RULE
    del saved["benchmarks"]["cifar10-c"]["stream_rule"]  # as written before stream ids came from names
    out.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="different run"):
        run(bench, model, out=out, c_dir=None, corruptions=["fog"], severities=[1], perturbations=[])


def test_a_truncated_jpeg_stops_the_run_with_its_name(imagenet_val, tmp_path):
    import shutil

    val = tmp_path / "val"
    shutil.copytree(imagenet_val, val)
    broken = sorted(val.glob("*/*.JPEG"))[3]
    broken.write_bytes(broken.read_bytes()[:2000])  # an interrupted copy
    model = nn.Sequential(nn.Conv2d(3, 4, 8, stride=8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match=f"cannot decode {broken}: image file is truncated"):
        evaluate(model, data=val, benchmarks="imagenet-c", corruptions=[], batch_size=4, progress=False)
    from pushpull.data.generate import make_imagenet_c

    make_imagenet_c(imagenet_val, tmp_path / "C", ["fog"], severities=[1], progress=False)
    stored = sorted((tmp_path / "C" / "fog" / "1").glob("*/*.JPEG"))[0]
    stored.write_bytes(b"not a JPEG")
    with pytest.raises(ValueError, match=f"cannot decode {stored}: cannot identify image file"):
        evaluate(model, data=imagenet_val, benchmarks="imagenet-c", c_dir=tmp_path / "C", corruptions=["fog"],
                 severities=[1], batch_size=4, progress=False)


def test_cli_says_what_it_evaluates_and_on_which_data(bench, tmp_path, capsys):
    from safetensors.torch import save_file

    from pushpull import create_model

    weights = tmp_path / "r20.safetensors"
    save_file(create_model("resnet20").state_dict(), str(weights))
    c12 = strided_folder(tmp_path / "C12", bench[0] / "C", strided_indices(N, 12), "c")
    code = main(["eval", "resnet20", "--weights", str(weights), "--data", str(bench[0]), "--benchmark", "cifar10-c",
                 "--c-dir", str(c12), "--corruptions", "fog", "--severities", "1", "--limit", "30",
                 "--out", str(tmp_path / "r.json"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "note: asked for 30 images (limit 30), evaluating 12:" in captured.err
    assert "not the official cifar10 test file" in captured.err
    assert "(strided subset: 12 of 24) (not the official test files" in captured.out


def test_cli_names_the_results_file_as_the_run_is_labelled(bench, tmp_path, capsys, monkeypatch):
    from pushpull import create_model, save_model

    monkeypatch.chdir(tmp_path)
    for run in ("r20", "r56"):  # two training runs: each folder holds a model.safetensors
        save_model(create_model("resnet20"), tmp_path / "runs" / run / "model.safetensors", name="resnet20",
                   mean=CIFAR10_MEAN, std=CIFAR10_STD, source="unit test")
        code = main(["eval", f"runs/{run}/model.safetensors", "--data", str(bench[0]), "--benchmark", "cifar10-c",
                     "--c-dir", str(bench[0] / "C"), "--corruptions", "fog", "--severities", "1", "--quiet"])
        assert code == 0, capsys.readouterr().err
        assert (tmp_path / "results" / f"{run}.json").is_file()  # not results/model.json for both
