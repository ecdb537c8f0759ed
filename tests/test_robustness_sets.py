"""Official -C/-P layouts: loaders on tiny generated fixtures, clear errors, atomic and resumable writers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pushpull._files import atomic_path
from pushpull.data import generate as gen
from pushpull.data.robustness_sets import (MANIFEST, CorruptedCIFAR, CorruptedImageNet, PerturbedCIFAR, PerturbedImageNet,
                                      check_npy, read_video)

RNG = np.random.default_rng(7)


def write_cifar_c(root, names=("fog",), n=4):
    """A tiny official CIFAR-10-C folder; returns {name: array}, labels."""
    root.mkdir(parents=True, exist_ok=True)
    labels = RNG.integers(0, 10, n)
    np.save(root / "labels.npy", np.tile(labels, 5).astype(np.uint8))
    data = {}
    for name in names:
        data[name] = RNG.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8)
        np.save(root / f"{name}.npy", data[name])
    return data, labels


def test_cifar_c_loader_all_and_chosen_severities(tmp_path):
    data, labels = write_cifar_c(tmp_path)
    ds = CorruptedCIFAR(tmp_path, "fog")
    assert len(ds) == 20
    image, label = ds[13]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    assert torch.equal(image, torch.from_numpy(data["fog"][13]).permute(2, 0, 1).float() / 255)
    assert label == labels[13 % 4] and ds.severity_of(13) == 4
    two = CorruptedCIFAR(tmp_path, "fog", severities=[5, 2], transform=None)
    assert len(two) == 8 and two.severity_of(0) == 5 and two.severity_of(7) == 2
    assert torch.equal(two[1][0], torch.from_numpy(data["fog"][17]).permute(2, 0, 1))
    assert torch.equal(two[5][0], torch.from_numpy(data["fog"][5]).permute(2, 0, 1))
    assert [two[i][1] for i in range(8)] == list(labels) * 2


def test_missing_and_truncated_files_are_named(tmp_path):
    write_cifar_c(tmp_path)
    with pytest.raises(FileNotFoundError, match="snow.npy"):
        CorruptedCIFAR(tmp_path, "snow")
    path = tmp_path / "fog.npy"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="fog.npy is truncated"):
        CorruptedCIFAR(tmp_path, "fog")
    np.save(path, np.zeros((20, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        check_npy(path)
    np.save(path, np.zeros((20, 28, 28, 3), np.uint8))
    with pytest.raises(ValueError, match=r"expected shape \(\*, 32, 32, 3\)"):
        CorruptedCIFAR(tmp_path, "fog")
    path.write_bytes(b"not a numpy file at all")
    with pytest.raises(ValueError, match="not a valid .npy"):
        check_npy(path)
    np.save(path, np.zeros((21, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="severities"):
        CorruptedCIFAR(tmp_path, "fog")


def test_cifar_c_severity_not_stored(tmp_path):
    write_cifar_c(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"severities": [1, 2, 3, 4, 5]}))
    with pytest.raises(ValueError, match=r"severities \[6\]"):
        CorruptedCIFAR(tmp_path, "fog", severities=[6])


def test_a_damaged_manifest_is_named(tmp_path):
    write_cifar_c(tmp_path)
    (tmp_path / MANIFEST).write_text('{"severities": [1, 2')
    with pytest.raises(ValueError, match=f"{MANIFEST} is not valid JSON"):
        CorruptedCIFAR(tmp_path, "fog")


def test_cifar_p_loader(tmp_path):
    seqs = RNG.integers(0, 256, (3, 16, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "translate.npy", seqs)
    with pytest.raises(FileNotFoundError, match="labels.npy"):
        PerturbedCIFAR(tmp_path, "translate")
    ds = PerturbedCIFAR(tmp_path, "translate", labels=[4, 5, 6], transform=None)
    frames, label = ds[2]
    assert frames.shape == (16, 3, 32, 32) and label == 6
    assert torch.equal(frames, torch.from_numpy(seqs[2]).permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="2 labels for 3 rows"):
        PerturbedCIFAR(tmp_path, "translate", labels=[1, 2])


def test_imagenet_c_loader(tmp_path):
    from PIL import Image

    for wnid in ("n02", "n01"):
        (tmp_path / "fog" / "3" / wnid).mkdir(parents=True)
        Image.fromarray(RNG.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(
            tmp_path / "fog" / "3" / wnid / f"{wnid}_1.JPEG", quality=85)
    ds = CorruptedImageNet(tmp_path, "fog", 3)
    assert len(ds) == 2 and [label for _, label in ds.samples] == [0, 1]
    image, label = ds[1]
    assert image.shape == (3, 224, 224) and image.dtype == torch.float32 and label == 1
    # a given class list keeps label meaning when folders are missing
    ds = CorruptedImageNet(tmp_path, "fog", 3, classes=["n00", "n01", "n02"])
    assert [label for _, label in ds.samples] == [1, 2]
    with pytest.raises(FileNotFoundError, match="snow/3"):
        CorruptedImageNet(tmp_path, "snow", 3)
    (tmp_path / "fog" / "3" / "n01" / "n01_1.JPEG").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(ValueError, match="n01_1.JPEG"):
        CorruptedImageNet(tmp_path, "fog", 3)[0]


def test_video_round_trip_and_imagenet_p_loader(tmp_path):
    pytest.importorskip("av")
    y, x = np.mgrid[0:64, 0:64]
    frames = np.stack([np.stack([(x * 3 + t * 4) % 256, (y * 3) % 256, np.full_like(x, 100 + t)], -1)
                       for t in range(5)]).astype(np.uint8)
    path = tmp_path / "rotate" / "n01" / "a.mp4"
    gen.write_video(path, frames, preset="ultrafast")
    decoded = read_video(path)
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(float) - frames).mean() < 3  # lossy, but close
    ds = PerturbedImageNet(tmp_path, "rotate")
    seq, label = ds[0]
    assert seq.shape == (5, 3, 64, 64) and label == 0
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match="a.mp4"):
        read_video(path)
    assert not list(path.parent.glob(".*tmp*"))


def test_select_indices_strides_over_the_set():
    assert list(gen.select_indices(10, None)) == list(range(10))
    assert list(gen.select_indices(10, 20)) == list(range(10))
    assert list(gen.select_indices(10000, 4)) == [0, 2500, 5000, 7500]
    with pytest.raises(ValueError, match="limit"):
        gen.select_indices(10, 0)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.npy"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    gen.save_npy(target, np.arange(3, dtype=np.uint8))
    assert list(tmp_path.iterdir()) == [target] and list(np.load(target)) == [0, 1, 2]


def test_make_cifar_p_resumes_after_interruption(tmp_path, monkeypatch):
    import pushpull.data.perturbations as perturbations

    images = RNG.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    labels = RNG.integers(0, 10, 10)
    monkeypatch.setattr(gen, "CHUNK", 4)  # chunks [0, 4) [4, 8) [8, 10)
    expected = gen.make_cifar_p(images, labels, tmp_path / "full", ["gaussian_noise"], seed=1, workers=1,
                               progress=False)
    expected = np.load(expected[0])

    real, calls = perturbations.perturb, []

    def interrupted(batch, name, **kw):
        calls.append(kw["indices"][0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(batch, name, **kw)

    monkeypatch.setattr(perturbations, "perturb", interrupted)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        gen.make_cifar_p(images, labels, out, ["gaussian_noise"], seed=1, workers=1, progress=False)
    assert not (out / "gaussian_noise.npy").exists()  # never a half-written final file
    assert [p.name for p in out.glob("gaussian_noise.npy.parts-*/*.npy")] == ["0-4.npy"]  # the finished chunk

    monkeypatch.setattr(perturbations, "perturb", real)
    redone = []
    monkeypatch.setattr(perturbations, "perturb", lambda batch, name, **kw: redone.append(kw["indices"][0])
                        or real(batch, name, **kw))
    gen.make_cifar_p(images, labels, out, ["gaussian_noise"], seed=1, workers=1, progress=False)
    assert redone == [4, 8]  # only the unfinished chunks
    assert np.array_equal(np.load(out / "gaussian_noise.npy"), expected)
    assert sorted(p.name for p in out.iterdir()) == ["gaussian_noise.npy", "labels.npy", MANIFEST]
    # a finished file is skipped
    redone.clear()
    gen.make_cifar_p(images, labels, out, ["gaussian_noise"], seed=1, workers=1, progress=False)
    assert redone == []
    with pytest.raises(ValueError, match=r"other options: seed 1 \(now 2\); use another --out folder$"):
        gen.make_cifar_p(images, labels, out, ["gaussian_noise"], seed=2, workers=1, progress=False)


def test_subset_rows_equal_the_full_run(tmp_path):
    images = RNG.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(12) % 10
    full = np.load(gen.make_cifar_p(images, labels, tmp_path / "a", ["shot_noise"], workers=1, progress=False)[0])
    idx = gen.select_indices(12, 3)
    part = gen.make_cifar_p(images[idx], labels[idx], tmp_path / "b", ["shot_noise"], indices=idx, workers=2,
                           progress=False)
    assert np.array_equal(np.load(part[0]), full[idx])
    ds = PerturbedCIFAR(tmp_path / "b", "shot_noise")
    assert [ds[i][1] for i in range(3)] == list(labels[idx])


def test_make_cifar_c_layout(tmp_path):
    from pushpull.data.corruptions import corrupt

    images = RNG.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5])
    gen.make_cifar_c(images, labels, tmp_path, ["gaussian_noise"], severities=[2, 5], indices=np.arange(10, 15),
                    seed=4, workers=1, progress=False)
    ds = CorruptedCIFAR(tmp_path, "gaussian_noise", transform=None)
    assert ds.severities == (2, 5) and len(ds) == 10
    expected = corrupt(images, "gaussian_noise", 5, seed=4, indices=np.arange(10, 15))
    assert torch.equal(ds[7][0], torch.from_numpy(expected[2]).permute(2, 0, 1)) and ds[7][1] == 4
    assert CorruptedCIFAR(tmp_path, "gaussian_noise", severities=[5]).labels.tolist() == labels.tolist()


def test_never_overwrites_a_different_file(tmp_path):
    images = RNG.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "rotate.npy", np.zeros((10, 31, 32, 32, 3), np.uint8))  # e.g. an official file
    with pytest.raises(ValueError, match=r"rotate.npy exists with shape \(10, 31"):
        gen.make_cifar_p(images, np.zeros(4), tmp_path, ["rotate"], workers=1, progress=False)
    assert check_npy(tmp_path / "rotate.npy") == (10, 31, 32, 32, 3)


@pytest.mark.parametrize("make", ["c", "p"])
def test_folder_of_an_older_stream_rule_is_refused(tmp_path, make):
    from pushpull.data.streams import STREAM_RULE

    images = RNG.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(3)

    def run():
        if make == "c":
            return gen.make_cifar_c(images, labels, tmp_path, ["fog"], severities=[1], workers=1, progress=False)
        return gen.make_cifar_p(images, labels, tmp_path, ["snow"], workers=1, progress=False)

    made = run()[0]
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["stream_rule"] == STREAM_RULE
    run()  # the same rule resumes
    before = made.read_bytes()
    for old in ({k: v for k, v in manifest.items() if k != "stream_rule"}, {**manifest, "stream_rule": 1}):
        (tmp_path / MANIFEST).write_text(json.dumps(old))  # as an older pushpull left it
        with pytest.raises(ValueError, match=r"random-stream rule 1, this pushpull uses rule 2 .*: resuming would "
                                             r"mix .*delete the folder or use another --out$"):
            run()
        assert made.read_bytes() == before


def test_imagenet_folder_without_manifest_is_refused(tmp_path):
    from PIL import Image

    from pushpull.data.streams import STREAM_RULE

    root, out = tmp_path / "val", tmp_path / "c"
    (root / "n01440764").mkdir(parents=True)
    Image.fromarray(RNG.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / "n01440764" / "a.JPEG")
    assert gen.make_imagenet_c(root, out, ["contrast"], severities=[1], workers=1, progress=False) == 1
    assert json.loads((out / MANIFEST).read_text())["stream_rule"] == STREAM_RULE
    (out / MANIFEST).unlink()  # as an ImageNet-C folder made before the manifest (stream rule 1)
    for names in (["contrast"], ["fog"]):  # not even another corruption: the manifest would vouch for contrast/
        with pytest.raises(ValueError, match=f"holds files but no {MANIFEST} .*delete the folder or use another"):
            gen.make_imagenet_c(root, out, names, severities=[1], workers=1, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["contrast"]
    out.rename(tmp_path / "fresh")
    assert gen.make_imagenet_c(root, out, ["fog"], severities=[1], workers=1, progress=False) == 1
    with pytest.raises(ValueError, match="other options"):
        gen.make_imagenet_c(root, out, ["fog"], severities=[1], seed=1, workers=1, progress=False)
