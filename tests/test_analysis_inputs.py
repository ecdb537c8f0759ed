"""The analyses' inputs: which image, which corruption table and noise, and averaging over test images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pushpull.analysis import (ResponseSet, corruption_table, is_test_index, mean_correlations, noise_corruption,
                               noisy_versions, pearson, image_from_spec)
from pushpull.data.corruptions import corrupt

RNG = np.random.default_rng(3)
IMAGES = RNG.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("size, table", [((32, 32), "cifar"), ((64, 40), "cifar"), ((65, 20), "imagenet"),
                                         ((224, 224, 3), "imagenet")])
def test_corruption_table_follows_the_image_size(size, table):
    assert corruption_table(size) == table


def test_noise_names():
    assert [noise_corruption(n) for n in ("gaussian", "shot", "impulse", "speckle")] == [
        "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"]
    assert noise_corruption("fog") == "fog" and noise_corruption("shot_noise") == "shot_noise"
    with pytest.raises(ValueError, match="unknown noise 'rain'"):
        noise_corruption("rain")
    with pytest.raises(ValueError, match="did you mean 'gaussian'"):
        noise_corruption("gausian")


def test_noisy_versions_are_the_generated_images():
    stacks = noisy_versions(IMAGES[:2], "shot_noise", [1, 4], seed=5, indices=[10, 3])
    assert stacks.shape == (2, 3, 32, 32, 3) and stacks.dtype == np.uint8
    np.testing.assert_array_equal(stacks[:, 0], IMAGES[:2])
    for k, severity in enumerate([1, 4], start=1):  # the -C generator's images, each from its own stream
        np.testing.assert_array_equal(stacks[:, k], corrupt(IMAGES[:2], "shot_noise", severity, seed=5,
                                                            indices=[10, 3]))
    np.testing.assert_array_equal(noisy_versions(IMAGES[1:2], "shot_noise", [4], seed=5, indices=[3])[0, 1],
                                  stacks[1, 2])


def test_noisy_versions_of_a_large_image_use_the_imagenet_table():
    big = RNG.integers(0, 256, (1, 96, 96, 3), dtype=np.uint8)
    np.testing.assert_array_equal(noisy_versions(big, "contrast", [5])[0, 1],
                                  corrupt(big, "contrast", 5, params="imagenet")[0])
    assert not np.array_equal(corrupt(big, "contrast", 5, params="imagenet"), corrupt(big, "contrast", 5))


def test_image_from_spec_from_a_file_or_the_test_set(tmp_path, monkeypatch):
    path = tmp_path / "photo.png"
    Image.fromarray(IMAGES[0]).save(path)

    def no_test_set():
        raise AssertionError("a file needs no test set")

    image, description, index = image_from_spec(str(path), no_test_set)
    np.testing.assert_array_equal(image, IMAGES[0])
    assert (description, index) == ("photo.png", 0)
    labels = np.arange(6) % 3
    image, description, index = image_from_spec("4", lambda: (IMAGES, labels), "cifar10 test set")
    np.testing.assert_array_equal(image, IMAGES[4])
    assert (description, index) == ("cifar10 test set #4 (label 1)", 4)
    assert is_test_index("4") and not is_test_index("x4") and not is_test_index("-4")
    monkeypatch.chdir(tmp_path)
    Image.fromarray(IMAGES[1]).save(tmp_path / "7", format="PNG")
    assert not is_test_index("7")  # a file called 7 is a file
    np.testing.assert_array_equal(image_from_spec("7")[0], IMAGES[1])


@pytest.mark.parametrize("spec, error, match", [
    ("9", ValueError, "9 out of range: the test set has 6 images"),
    ("nope.png", FileNotFoundError, "image file missing: nope.png"),
    (__file__, ValueError, "cannot decode .*test_analysis_inputs.py"),
])
def test_image_from_spec_errors_name_the_image(spec, error, match):
    with pytest.raises(error, match=match):
        image_from_spec(spec, lambda: (IMAGES, np.zeros(6)))


def test_image_from_spec_index_without_a_test_set():
    with pytest.raises(ValueError, match="3 is a test-set index, and no test set was given"):
        image_from_spec("3")


def test_mean_correlations_average_the_spread_images():
    def responses(stack):  # the red channel as a "response map": correlations are easy to recompute
        return [ResponseSet("red", "none", 0, stack[..., 0].astype(float))]

    result = mean_correlations(responses, IMAGES, "gaussian_noise", [2, 5], 3, seed=1)
    assert result["images"] == 3 and result["indices"] == [0, 2, 4]  # spread over the set
    expected = [np.mean([pearson(IMAGES[i, ..., 0], corrupt(IMAGES[i:i + 1], "gaussian_noise", s, seed=1,
                                                            indices=[i])[0, ..., 0]) for i in (0, 2, 4)])
                for s in (2, 5)]
    assert result["correlation_with_clean"] == {"red": pytest.approx(expected)}
    assert expected[0] > expected[1]  # more noise, less like the clean image
    with pytest.raises(ValueError, match="must be positive, got 0"):
        mean_correlations(responses, IMAGES, "gaussian_noise", [2], 0)
