"""The parameter tables: one registry, chosen by name everywhere, and the releases they were made for.

Tiny-ImageNet-C's and ImageNet-64x64-C's scripts run the CIFAR/ImageNet algorithms on 64x64
images with their own numbers (the two scripts share every number), so the fast path is held
to the per-image oracle at 64x64 on real photos; CIFAR-100-C shares CIFAR-10-C's table and layout.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import real_photos
from pushpull.cli import main
from pushpull.data.corruptions import CORRUPTIONS, TABLE_SIZES, TABLES, TINY_IMAGENET, corrupt, corrupt_reference
from pushpull.data.corruptions.params import severity_params
from pushpull.data.robustness_sets import CorruptedCIFAR, CorruptedImageNet
from pushpull.data.sources import BenchmarkDataset, ParamTable


@pytest.fixture(scope="module")
def photos64() -> np.ndarray:
    """Two 64x64 natural images: centre squares of real photos, downscaled as Tiny-ImageNet's are."""
    out = []
    for _, photo in real_photos()[:2]:
        side = min(photo.shape[:2])
        top, left = (photo.shape[0] - side) // 2, (photo.shape[1] - side) // 2
        square = Image.fromarray(photo[top:top + side, left:left + side])
        out.append(np.asarray(square.resize((64, 64), Image.BILINEAR)))
    return np.stack(out)


def test_one_registry_of_tables_named_alike_everywhere():
    assert list(TABLES) == [t.value for t in ParamTable] == list(TABLE_SIZES)
    for name, table in TABLES.items():
        assert set(table) == set(CORRUPTIONS) and all(len(v) == 5 for v in table.values()), name
    assert TABLES["imagenet64"] is TABLES["tinyimagenet"] is TINY_IMAGENET  # the two scripts share every number
    assert TABLE_SIZES == {"cifar": 32, "imagenet": 224, "tinyimagenet": 64, "imagenet64": 64}
    assert BenchmarkDataset.CIFAR100.params is BenchmarkDataset.CIFAR10.params is ParamTable.CIFAR


@pytest.mark.parametrize("name, severity, expected", [
    # Numbers of make_tinyimagenet_c.py that differ from both other tables, in the table's units.
    ("gaussian_noise", 5, 0.18),
    ("shot_noise", 4, 30),
    ("saturate", 5, (30, 0.2)),
    ("frost", 2, (0.9, 0.4, 0.3)),  # image weight, frost weight, texture scale 0.3
    ("elastic_transform", 5, (64 * 0.16, 64 * 0.03, 64 * 0.02)),  # IMSIZE = 64 (no 244 typo)
    ("snow", 1, (0.1, 0.2, 1, 0.6, 8, 3, 0.8)),
    ("spatter", 5, (0.65, 0.1, 0.5, 0.67, 0.6, 1)),
    ("jpeg_compression", 5, 25),
    ("pixelate", 3, 0.7),
])
def test_tiny_imagenet_numbers(name, severity, expected):
    for table in ("tinyimagenet", "imagenet64"):
        np.testing.assert_allclose(np.asarray(severity_params(name, severity, table), float), expected)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_fast_matches_oracle_at_64_pixels(name, photos64):
    for severity in range(1, 6):
        fast = corrupt(photos64, name, severity, seed=4, params="tinyimagenet")
        slow = corrupt_reference(photos64, name, severity, seed=4, params="tinyimagenet")
        np.testing.assert_array_equal(fast, slow, err_msg=f"{name} severity {severity}")


def test_tables_give_different_images(photos64):
    by_table = {t: corrupt(photos64, "gaussian_blur", 5, params=t) for t in ("cifar", "tinyimagenet", "imagenet")}
    assert not np.array_equal(by_table["cifar"], by_table["tinyimagenet"])
    assert not np.array_equal(by_table["tinyimagenet"], by_table["imagenet"])
    assert np.array_equal(by_table["tinyimagenet"], corrupt(photos64, "gaussian_blur", 5, params="imagenet64"))


def test_an_unknown_table_gets_close_matches():
    with pytest.raises(ValueError, match="unknown parameter table 'tinyimagnet'; did you mean 'tinyimagenet'"):
        corrupt(np.zeros((1, 64, 64, 3), np.uint8), "fog", 1, params="tinyimagnet")
    with pytest.raises(ValueError, match="did you mean 'imagenet64'"):
        severity_params("fog", 1, "imagenet_64")


def test_show_corruptions_draws_a_64_pixel_table(tmp_path, capsys):
    photo = tmp_path / "photo.png"
    Image.fromarray(real_photos()[0][1]).save(photo)
    out = tmp_path / "sheet.png"
    assert main(["show-corruptions", str(photo), "--out", str(out), "--params", "tinyimagenet",
                 "--corruptions", "frost,pixelate"]) == 0
    with Image.open(out) as sheet:
        assert sheet.height == 28 + 4 + 2 * (128 + 4)  # header, then two rows of 64 px tiles shown 2x
    assert main(["show-corruptions", str(photo), "--out", str(out), "--params", "tiny"]) == 2
    assert "argument --params: unknown parameter table 'tiny'" in capsys.readouterr().err


def test_cifar100_c_release_is_read_with_its_100_labels(tmp_path):
    rng = np.random.default_rng(0)
    n = 6
    images = rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8)
    labels = np.tile(rng.integers(0, 100, n), 5).astype(np.uint8)
    labels[:2] = [99, 57]
    np.save(tmp_path / "fog.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    ds = CorruptedCIFAR(tmp_path, "fog", severities=[2, 5], transform=None)
    assert len(ds) == 2 * n and ds.severity_of(n) == 5
    image, label = ds[n + 1]
    assert torch.equal(image, torch.from_numpy(images[4 * n + 1]).permute(2, 0, 1)) and label == labels[4 * n + 1]
    assert ds[0][1] == labels[n] and int(ds.labels.max()) < 100


def test_tiny_imagenet_c_tree_is_read_at_64_pixels(tmp_path, photos64):
    """Tiny-ImageNet-C: <corruption>/<severity>/<wnid>/val_<k>.JPEG, 200 wnids, labels by sorted wnid."""
    wnids = ["n01443537", "n01629819", "n01641577"]
    for k, wnid in enumerate(wnids):
        folder = tmp_path / "fog" / "3" / wnid
        folder.mkdir(parents=True)
        Image.fromarray(photos64[k % 2]).save(folder / f"val_{k}.JPEG", quality=85)
    ds = CorruptedImageNet(tmp_path, "fog", 3, transform=None)
    assert [ds[i][1] for i in range(len(ds))] == [0, 1, 2]
    assert ds[0][0].shape == (3, 64, 64) and ds[0][0].dtype == torch.uint8
    partial = CorruptedImageNet(tmp_path, "fog", 3, classes=["n00000000", *wnids], transform=None)
    assert [label for _, label in partial.samples] == [1, 2, 3]  # labels keep their meaning with classes=
