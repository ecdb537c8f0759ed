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
