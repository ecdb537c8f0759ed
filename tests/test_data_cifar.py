from __future__ import annotations

import pickle

import numpy as np
import pytest

from pushpull.data.cifar import load_cifar


def test_load_cifar_layout_roundtrip(tmp_path, fake_cifar10):
    images = fake_cifar10(tmp_path, n_test=4, labels=range(4), protocol=2).images
    got, labels = load_cifar(tmp_path)
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(labels, np.arange(4))


def test_missing_folder_names_expected_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_cifar(tmp_path)


def test_a_failed_download_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    import urllib.error

    from torchvision import datasets

    from pushpull.cli import main

    def offline(root, train, download):
        from pathlib import Path

        Path(root).mkdir(parents=True, exist_ok=True)  # as torchvision does before it fetches
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(datasets, "CIFAR10", offline)
    root = tmp_path / "cifar"
    assert main(["train", "--model", "resnet20", "--data", str(root), "--download", "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"pushpull train: error: cannot download cifar10 into {root} (") and err.count("\n") == 1
    assert err.endswith("without network put the official cifar-10-batches-py/ folder there\n")
    assert not root.exists() and not (tmp_path / "run").exists()


def test_refuses_executable_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": print, "labels": []}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_cifar(tmp_path)


def test_shared_cifar10_test_split(cifar10_root):
    images, labels = load_cifar(cifar10_root)
    assert images.shape == (10000, 32, 32, 3) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10
