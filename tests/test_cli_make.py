"""``pushpull make-c`` / ``make-p`` / ``show-corruptions`` end to end on tiny generated inputs."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

from pushpull.cli import main
from pushpull.data import generate as gen
from pushpull.data.shards import NpyChunks
from pushpull.data.robustness_sets import CorruptedCIFAR, CorruptedImageNet, PerturbedCIFAR, PerturbedImageNet

RNG = np.random.default_rng(11)


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory, fake_cifar10):
    """A 40-image CIFAR-10 test split in the official python layout."""
    labels = np.arange(40) // 4  # class-major, as the real test split
    return fake_cifar10(tmp_path_factory.mktemp("cifar"), n_test=40, labels=labels, seed=RNG)


def test_make_p_cifar_with_limit(tiny_cifar, tmp_path):
    root, images, labels = tiny_cifar
    assert main(["make-p", "--dataset", "cifar10", "--data", str(root), "--out", str(tmp_path),
                 "--perturbations", "translate,gaussian_noise", "--limit", "8", "--workers", "1",
                 "--no-progress"]) == 0
    idx = np.arange(8) * 5
    ds = PerturbedCIFAR(tmp_path, "translate", transform=None)
    assert len(ds) == 8 and [ds[i][1] for i in range(8)] == list(labels[idx])
    assert np.array_equal(ds[3][0][7].permute(1, 2, 0).numpy(), images[idx[3]])  # frame 7: no shift
    assert PerturbedCIFAR(tmp_path, "gaussian_noise")[0][0].shape == (31, 3, 32, 32)


def test_make_c_cifar(tiny_cifar, tmp_path):
    root, images, labels = tiny_cifar
    assert main(["make-c", "--dataset", "cifar10", "--data", str(root), "--out", str(tmp_path),
                 "--corruptions", "contrast,pixelate", "--severities", "1,3", "--limit", "10", "--workers", "1",
                 "--no-progress"]) == 0
    ds = CorruptedCIFAR(tmp_path, "pixelate", severities=[3], transform=None)
    assert len(ds) == 10 and [ds[i][1] for i in range(10)] == list(labels[np.arange(10) * 4])
    with pytest.raises(ValueError, match="not stored"):
        CorruptedCIFAR(tmp_path, "pixelate", severities=[2])


def test_bad_arguments_name_the_culprit(tiny_cifar, tmp_path, capsys):
    root, _, _ = tiny_cifar
    base = ["--dataset", "cifar10", "--data", str(root), "--out", str(tmp_path)]
    assert main(["make-c", *base, "--corruptions", "fog,fogg"]) == 2
    assert "unknown corruption 'fogg'; did you mean 'fog'?" in capsys.readouterr().err
    assert main(["make-c", *base, "--severities", "0,6"]) == 2
    assert "--severities" in capsys.readouterr().err
    assert main(["make-p", *base, "--perturbations", "rotation"]) == 2
    assert "unknown perturbation 'rotation'; did you mean 'rotate'?" in capsys.readouterr().err
    assert main(["make-p", "--dataset", "cifar10", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "no cifar10 found" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written for a refused command


def test_rerun_repairs_a_damaged_npy(tiny_cifar, tmp_path, capsys):
    root, _, _ = tiny_cifar
    args = ["make-c", "--dataset", "cifar10", "--data", str(root), "--out", str(tmp_path), "--corruptions",
            "contrast,pixelate", "--severities", "1,3", "--limit", "10", "--workers", "1", "--no-progress"]
    assert main(args) == 0
    good = {p.name: p.read_bytes() for p in tmp_path.glob("*.npy")}
    contrast = tmp_path / "contrast.npy"
    contrast.write_bytes(good["contrast.npy"][:1000])  # cut short, as by a full disk or an interrupted copy
    (tmp_path / "pixelate.npy").write_bytes(b"")  # cut inside the header
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"redoing a damaged file: {contrast} is truncated" in err and "pixelate.npy is not a valid .npy" in err
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.npy")} == good  # redone, bit for bit
    fog = [("fog" if a == "contrast,pixelate" else a) for a in args]
    assert main(fog) == 0
    whole = (tmp_path / "fog.npy").read_bytes()
    (tmp_path / "fog.npy").unlink()  # as if interrupted before the assembly, with a damaged chunk left
    chunks = NpyChunks(tmp_path / "fog.npy", (20, 32, 32, 3), {"seed": 0, "severities": [1, 3],
                                                               "indices": gen._digest(np.arange(10) * 4)})
    chunks.write(slice(0, 10), np.zeros((10, 32, 32, 3), np.uint8))
    (chunks.folder / "0-10.npy").write_bytes((chunks.folder / "0-10.npy").read_bytes()[:500])
    capsys.readouterr()
    assert main(fog) == 0
    assert f"redoing a damaged chunk: {chunks.folder / '0-10.npy'} is truncated" in capsys.readouterr().err
    assert (tmp_path / "fog.npy").read_bytes() == whole and not chunks.folder.exists()


def test_a_damaged_manifest_is_named(tiny_cifar, tmp_path, capsys):
    root, _, _ = tiny_cifar
    (tmp_path / "pushpull-benchmark.json").write_text("{ cut")
    assert main(["make-c", "--dataset", "cifar10", "--data", str(root), "--out", str(tmp_path), "--corruptions",
                 "fog", "--limit", "4", "--workers", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "manifest " + str(tmp_path / "pushpull-benchmark.json") + " is not valid JSON" in err and err.count("\n") == 1


def test_a_different_file_in_the_way_is_not_overwritten(tiny_cifar, tmp_path, capsys):
    root, _, _ = tiny_cifar
    np.save(tmp_path / "fog.npy", np.zeros((3, 32, 32, 3), np.uint8))
    assert main(["make-c", "--dataset", "cifar10", "--data", str(root), "--out", str(tmp_path), "--corruptions",
                 "fog", "--limit", "4", "--workers", "1", "--no-progress"]) == 1
    assert "fog.npy exists with shape (3, 32, 32, 3)" in capsys.readouterr().err
    assert np.load(tmp_path / "fog.npy").shape == (3, 32, 32, 3)


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    for wnid in ("n01440764", "n01443537"):
        (root / wnid).mkdir()
        for k in range(2):
            Image.fromarray(RNG.integers(0, 256, (260, 300 + 40 * k, 3), dtype=np.uint8)).save(
                root / wnid / f"ILSVRC2012_val_{wnid}_{k}.JPEG")
    return root


def test_make_c_imagenet_resumes(tiny_imagenet, tmp_path):
    args = ["make-c", "--dataset", "imagenet", "--data", str(tiny_imagenet), "--out", str(tmp_path),
            "--corruptions", "brightness", "--severities", "2", "--workers", "1", "--no-progress"]
    assert main(args) == 0
    files = sorted(tmp_path.rglob("*.JPEG"))
    assert len(files) == 4 and files[0].relative_to(tmp_path).parts[:3] == ("brightness", "2", "n01440764")
    assert Image.open(files[0]).size == (224, 224)
    ds = CorruptedImageNet(tmp_path, "brightness", 2)
    assert [label for _, label in ds.samples] == [0, 0, 1, 1]
    files[1].unlink()
    stamp = files[0].stat().st_mtime_ns
    assert main(args) == 0  # only the missing file is redone
    assert files[1].exists() and files[0].stat().st_mtime_ns == stamp


def test_make_p_imagenet(tiny_imagenet, tmp_path):
    pytest.importorskip("av")
    assert main(["make-p", "--dataset", "imagenet", "--data", str(tiny_imagenet), "--out", str(tmp_path),
                 "--perturbations", "translate", "--limit", "2", "--preset", "ultrafast", "--workers", "1",
                 "--no-progress"]) == 0
    ds = PerturbedImageNet(tmp_path, "translate")
    assert len(ds) == 2 and [label for _, label in ds.samples] == [0, 1]
    assert ds[0][0].shape == (41, 3, 224, 224)


def test_show_corruptions_grid(tmp_path):
    from pushpull.data.contact_sheet import tile_box
    from pushpull.data.corruptions import CORRUPTIONS, corrupt

    image = tmp_path / "photo.png"
    Image.fromarray(RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "sheet.png"
    assert main(["show-corruptions", str(image), "--out", str(out), "--corruptions", "fog,pixelate"]) == 0
    sheet = np.asarray(Image.open(out).convert("RGB"))
    right, bottom = tile_box(1, 5)[2:]
    assert sheet.shape == (bottom + 4, right + 4, 3)  # 2 rows x (clean + 5 severities), 4 px margin
    from pushpull.data.contact_sheet import prepare_image

    small = prepare_image(image)
    left, top, r, b = tile_box(1, 3)  # pixelate, severity 3, shown 3x with nearest neighbours
    expected = corrupt(small[None], "pixelate", 3)[0].repeat(3, 0).repeat(3, 1)
    assert np.array_equal(sheet[top:b, left:r], expected)
    assert main(["show-corruptions", str(image), "--out", str(tmp_path / "x.jpg")]) == 2
    assert len(CORRUPTIONS) == 19


def test_make_c_imagenet_names_a_damaged_source_image_and_stops(tiny_imagenet, tmp_path, capsys):
    import shutil

    root = tmp_path / "val"
    shutil.copytree(tiny_imagenet, root)
    damaged = root / "n01443537" / "ILSVRC2012_val_n01443537_0.JPEG"
    damaged.write_bytes(damaged.read_bytes()[:2000])
    args = ["make-c", "--dataset", "imagenet", "--data", str(root), "--out", str(tmp_path / "c"),
            "--corruptions", "brightness", "--severities", "1", "--workers", "1", "--no-progress"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("pushpull make-c: error: cannot decode ") and str(damaged) in err and err.count("\n") == 1
    assert not list((tmp_path / "c").rglob("*n01443537_0.JPEG"))  # nothing written for it
    if importlib.util.find_spec("av"):  # make-p, whose images are read in worker processes, says the same
        assert main(["make-p", "--dataset", "imagenet", "--data", str(root), "--out", str(tmp_path / "p"),
                     "--perturbations", "brightness", "--preset", "ultrafast", "--workers", "2", "--no-progress"]) == 1
        assert str(damaged) in capsys.readouterr().err
    assert main(["make-c", "--dataset", "imagenet", "--data", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "c")]) == 1
    assert "nowhere" in capsys.readouterr().err
