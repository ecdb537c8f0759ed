"""The -C corruptions: fast batched path == per-image oracle, reproducibility, parameters, errors."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from PIL import Image

from pushpull.data.corruptions import (BENCHMARK_CORRUPTIONS, CIFAR, CORRUPTIONS, EXTRA_CORRUPTIONS, IMAGENET,
                                       corrupt, corrupt_reference, motion_blur, zoom_blur)
from pushpull.data.corruptions.blur import _resolve_sequential_copies, glass_positions


@pytest.fixture(scope="module")
def cifar_images(cifar10_root):
    from pushpull.data.cifar import load_cifar

    images, _ = load_cifar(cifar10_root, train=False)
    return images[7::1231][:8]  # strided: the test split is class-major


@pytest.fixture(scope="module")
def imagenet_image(cifar_images):
    """One smooth 224x224 photo-like image (a CIFAR image upsampled), plus a random-texture one."""
    smooth = np.asarray(Image.fromarray(cifar_images[1]).resize((224, 224), Image.BILINEAR))
    noisy = np.random.default_rng(5).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    return np.stack([smooth, noisy])


def test_names_and_tables():
    assert len(BENCHMARK_CORRUPTIONS) == 15 and len(EXTRA_CORRUPTIONS) == 4
    assert CORRUPTIONS == BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
    assert EXTRA_CORRUPTIONS == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    for table in (CIFAR, IMAGENET):
        assert set(table) == set(CORRUPTIONS) and all(len(v) == 5 for v in table.values())
    # The zoom-factor counts the SPEC states for CIFAR (np.arange's float end point gives 7, not 6).
    assert [len(z) for z in CIFAR["zoom_blur"]] == [7, 12, 16, 21, 26]


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_fast_matches_oracle_cifar(name, cifar_images):
    rng = np.random.default_rng(1)
    ties = rng.choice(np.array([0, 64, 255], np.uint8), (1, 32, 32, 3))  # equal channels: HSV ties, flat areas
    x = np.concatenate([cifar_images, rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8), ties])
    indices = np.arange(100, 100 + len(x))
    for severity in range(1, 6):
        fast = corrupt(x, name, severity, seed=11, indices=indices)
        slow = corrupt_reference(x, name, severity, seed=11, indices=indices)
        assert fast.dtype == np.uint8 and fast.shape == x.shape
        np.testing.assert_array_equal(fast, slow, err_msg=f"{name} severity {severity}")


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_fast_matches_oracle_imagenet(name, imagenet_image):
    for severity in range(1, 6):
        x = imagenet_image[severity % 2:][:1]
        fast = corrupt(x, name, severity, seed=2, params="imagenet")
        slow = corrupt_reference(x, name, severity, seed=2, params="imagenet")
        assert fast.shape == x.shape
        np.testing.assert_array_equal(fast, slow, err_msg=f"{name} severity {severity}")


@pytest.mark.slow
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_fast_matches_oracle_on_many_cifar_images(name, cifar10_root):
    from pushpull.data.cifar import load_cifar

    images, _ = load_cifar(cifar10_root, train=False)
    x = images[3::50]  # 200 images, all classes
    for severity in range(1, 6):
        np.testing.assert_array_equal(corrupt(x, name, severity, seed=7), corrupt_reference(x, name, severity, seed=7),
                                      err_msg=f"{name} severity {severity}")


def test_non_square_images_match_oracle():
    x = np.random.default_rng(9).integers(0, 256, (2, 24, 40, 3), dtype=np.uint8)
    for name in CORRUPTIONS:
        severity = 1 + CORRUPTIONS.index(name) % 5
        np.testing.assert_array_equal(corrupt(x, name, severity), corrupt_reference(x, name, severity), err_msg=name)


@pytest.fixture(scope="module")
def photo_crops():
    """The natural photos (tests/conftest.real_photos) as 224x224 crops: ImageNet-C's input size, real content."""
    from conftest import real_photos

    return np.stack([np.asarray(Image.fromarray(p[:min(p.shape[:2]), :min(p.shape[:2])]).resize((224, 224),
                                                                                                  Image.BICUBIC))
                     for _, p in real_photos()])


# The corruptions whose fast path has its own C kernels or numpy reformulation of the reference's loops.
REWRITTEN = ("glass_blur", "motion_blur", "zoom_blur", "brightness", "saturate", "elastic_transform", "defocus_blur",
             "gaussian_blur", "snow", "spatter", "gaussian_noise", "speckle_noise", "impulse_noise", "contrast", "fog",
             "frost")


@pytest.mark.parametrize("name", REWRITTEN)
def test_fast_matches_oracle_on_photos(name, photo_crops):
    """Byte-identical to the per-image oracle on natural photos (one severity each here, all with -m slow)."""
    severity = 1 + REWRITTEN.index(name) % 5
    x = photo_crops[severity % 3:][:1]
    np.testing.assert_array_equal(corrupt(x, name, severity, seed=3, params="imagenet"),
                                  corrupt_reference(x, name, severity, seed=3, params="imagenet"), err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_fast_matches_oracle_on_photos_every_severity(name, photo_crops):
    for severity in range(1, 6):
        np.testing.assert_array_equal(corrupt(photo_crops, name, severity, seed=3, params="imagenet"),
                                      corrupt_reference(photo_crops, name, severity, seed=3, params="imagenet"),
                                      err_msg=f"{name} severity {severity}")


def test_zoom_coordinate_just_past_the_crop_is_black_as_in_scipy():
    """scipy's zoom (mode "constant") gives 0 where k * (in - 1) / (out - 1) rounds above in - 1: at 36 px wide,
    zoom 1.2000000000000002 (np.arange's) maps column 35 to 29.000000000000004 of a 30-px crop."""
    from pushpull.data.corruptions.blur import clipped_zoom

    x = np.random.default_rng(5).integers(1, 256, (1, 40, 36, 3), dtype=np.uint8)
    zoomed = clipped_zoom(x / 255.0, IMAGENET["zoom_blur"][2][-1])
    assert (zoomed[:, :, 35] == 0).all() and (zoomed[:, :, :35] > 0).all()
    for name in ("zoom_blur", "snow"):
        for severity in (3, 4, 5):
            np.testing.assert_array_equal(corrupt(x, name, severity, params="imagenet"),
                                          corrupt_reference(x, name, severity, params="imagenet"), err_msg=name)


def test_frost_texture_too_small_is_a_clear_error():
    with pytest.raises(ValueError, match="larger than the frost texture"):
        corrupt(np.zeros((1, 224, 224, 3), np.uint8), "frost", 1, params="cifar")


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_reproducible_across_batches_and_workers(name, cifar_images):
    x = cifar_images
    whole = corrupt(x, name, 3, seed=4, workers=1)
    np.testing.assert_array_equal(corrupt(x, name, 3, seed=4, workers=2), whole)
    parts = [corrupt(x[lo:lo + 3], name, 3, seed=4, indices=np.arange(lo, min(lo + 3, len(x))))
             for lo in range(0, len(x), 3)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    if name not in ("defocus_blur", "gaussian_blur", "brightness", "contrast", "pixelate", "jpeg_compression",
                    "zoom_blur", "saturate"):  # the random ones depend on the seed and the index
        assert not np.array_equal(corrupt(x, name, 3, seed=5), whole)
        assert not np.array_equal(corrupt(x[:1], name, 3, seed=4, indices=[1]), whole[:1])


def test_workers_sets_the_thread_count(monkeypatch, cifar_images):
    import pushpull.data.corruptions as corruptions

    made = []

    class Pool(corruptions.ThreadPoolExecutor):
        def __init__(self, workers):
            made.append(workers)
            super().__init__(workers)

    monkeypatch.setattr(corruptions, "ThreadPoolExecutor", Pool)
    x = np.repeat(cifar_images, 20, axis=0)  # 160 images: 3 chunks
    corrupt(x, "contrast", 2, workers=1)
    assert made == []
    corrupt(x, "contrast", 2, workers=3)
    assert made == [3]


MONOTONE = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "defocus_blur", "gaussian_blur",
            "motion_blur", "zoom_blur", "snow", "fog", "brightness", "contrast", "pixelate", "jpeg_compression")


@pytest.mark.parametrize("name", MONOTONE)
def test_severity_is_monotone(name, cifar_images):
    """Mean |corrupted - clean| grows with severity where the table only strengthens one knob.

    Not for glass blur, frost, elastic, spatter and saturate, whose CIFAR tables trade knobs
    (e.g. saturate lowers then raises saturation; spatter switches from water to mud).
    """
    x = cifar_images
    gaps = [np.abs(corrupt(x, name, s).astype(float) - x).mean() for s in range(1, 6)]
    assert all(np.diff(gaps) > 0), gaps


def test_noise_statistics():
    """The noise parameters are the reference's: std of Gaussian noise, Poisson variance, s&p rate."""
    gray = np.full((4, 32, 32, 3), 128, np.uint8)
    g = corrupt(gray, "gaussian_noise", 1).astype(float) / 255
    assert abs(g.std() - 0.04) < 0.002
    lam = CIFAR["shot_noise"][0]
    s = corrupt(gray, "shot_noise", 1).astype(float) / 255
    assert abs(s.var() - (128 / 255) / lam) < 0.1 * (128 / 255) / lam
    imp = corrupt(gray, "impulse_noise", 5)
    assert abs(np.isin(imp, (0, 255)).mean() - 0.07) < 0.01
    assert abs((imp == 255).mean() - 0.035) < 0.007


def test_motion_blur_is_imagemagick_one_sided_kernel():
    """Angle 0 averages the pixel and those to its right (edge repeated) with exp(-i^2 / 2 sigma^2)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 5, 12, 3), dtype=np.uint8)
    radius, sigma = 3, 1.5
    taps = [math.exp(-i * i / (2 * sigma * sigma)) for i in range(2 * radius + 1)]
    expected = np.zeros(x.shape)
    for i, t in enumerate(taps):
        cols = np.minimum(np.arange(12) + i, 11)
        expected += t / sum(taps) * x[:, :, cols].astype(float)
    got = motion_blur(x, radius, sigma, [0.0, 0.0]).astype(float)
    # ImageMagick rounds to 16 bits then divides by 257 with truncation: within [-1, 0] of the exact value.
    assert (got - expected).max() <= 0.5 / 257 and (got - expected).min() > -1 - 0.5 / 257
    # 90 degrees blurs downward: the pixel and those below it.
    col = motion_blur(np.ascontiguousarray(x.transpose(0, 2, 1, 3)), radius, sigma, [90.0, 90.0])
    np.testing.assert_array_equal(col.transpose(0, 2, 1, 3), motion_blur(x, radius, sigma, [0.0, 0.0]))


def _imagemagick() -> str | None:
    import shutil
    import subprocess

    exe = shutil.which("convert")
    if exe is None:
        return None
    try:
        version = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return exe if "ImageMagick" in version else None


@pytest.mark.skipif(_imagemagick() is None, reason="ImageMagick's convert is not installed")
def test_motion_blur_matches_imagemagick(tmp_path, cifar_images):
    """Our motion blur == ImageMagick's ``-motion-blur`` (what Wand's motion_blur calls) byte for byte."""
    import subprocess

    rng = np.random.default_rng(3)
    cases = [(cifar_images[i], *CIFAR["motion_blur"][i]) for i in (0, 2, 4)]
    cases.append((rng.integers(0, 256, (40, 24, 3), dtype=np.uint8), 15, 8))
    flakes = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    flakes[flakes < 180] = 0
    cases.append((flakes[..., None], 10, 4))  # the snow layer: a grey PNG
    for image, radius, sigma in cases:
        for angle in rng.uniform(-180, 180, size=2).round(3):
            src, dst = tmp_path / "in.png", tmp_path / "out.png"
            Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(src)
            subprocess.run([_imagemagick(), str(src), "-motion-blur", f"{radius}x{sigma}+{angle}", str(dst)],
                           check=True, env={**os.environ, "MAGICK_THREAD_LIMIT": "1"})
            expected = np.asarray(Image.open(dst)).reshape(image.shape)
            np.testing.assert_array_equal(motion_blur(image[None], radius, sigma, [angle])[0], expected)


def test_written_out_scikit_image_functions_match_it(cifar_images):
    """HSV conversions, ``gaussian`` and ``random_noise(mode='s&p')`` as scikit-image computes them."""
    color = pytest.importorskip("skimage.color")
    from skimage.filters import gaussian
    from skimage.util import random_noise

    from pushpull.data.corruptions import hsv2rgb, rgb2hsv
    from pushpull.data.corruptions import reference as oracle
    from pushpull.data.corruptions.blur import gaussian_smooth

    ties = np.random.default_rng(0).choice(np.array([0, 64, 255], np.uint8), (2, 32, 32, 3))
    x = np.concatenate([cifar_images, ties]) / 255.0
    hsv = color.rgb2hsv(x)
    np.testing.assert_array_equal(rgb2hsv(x), hsv)
    hsv[..., 1] = np.clip(hsv[..., 1] * 2.5 + 0.2, 0, 1)
    np.testing.assert_array_equal(hsv2rgb(hsv), color.hsv2rgb(hsv))
    expected = np.stack([gaussian(im, sigma=0.7, channel_axis=-1) for im in x])
    np.testing.assert_array_equal(gaussian_smooth(x, 0.7), expected)
    for i, image in enumerate(cifar_images):
        noisy = np.clip(random_noise(image / 255.0, mode="s&p", amount=0.05, rng=np.random.default_rng(i)), 0, 1)
        np.testing.assert_array_equal(oracle.corrupt_one(image, "impulse_noise", 0.05, np.random.default_rng(i)),
                                      np.uint8(noisy * 255))


def test_zoom_blur_of_constant_image_is_constant():
    x = np.full((2, 32, 32, 3), 200, np.uint8)
    out = zoom_blur(x, np.arange(1, 1.26, 0.01))
    assert np.abs(out.astype(int) - 200).max() <= 1


@pytest.mark.parametrize("delta", [1, 2, 4])
def test_glass_copies_resolved_like_the_sequential_loop(delta):
    """Pointer-jumping resolution == literally running x[h, w] = x[h + dy, w + dx] in visiting order."""
    h = w = 20
    rng = np.random.default_rng(delta)
    positions = glass_positions(h, w, delta)
    offsets = rng.integers(-delta, delta, size=(3, len(positions), 2))
    got = _resolve_sequential_copies(positions, offsets, h, w)
    for b in range(3):
        grid = np.arange(h * w).reshape(h, w)
        for (r, c), (dx, dy) in zip(positions, offsets[b]):
            grid[r, c] = grid[r + dy, c + dx]
        np.testing.assert_array_equal(got[b], grid.ravel())


def test_frost_textures_are_packaged():
    from importlib import resources

    folder = resources.files("pushpull.data.corruptions") / "frost"
    assert (folder / "NOTICE").is_file()
    from pushpull.data.corruptions.weather import FROST_FILES, frost_texture

    assert len(FROST_FILES) == 5
    for i in range(5):
        assert min(frost_texture(i, 0.2).shape[:2]) > 32 and min(frost_texture(i, 1).shape[:2]) > 224


def test_empty_batch():
    x = np.zeros((0, 32, 32, 3), np.uint8)
    assert corrupt(x, "fog", 2).shape == (0, 32, 32, 3)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(name="gausian_noise"), ValueError, "gaussian_noise"),
    (dict(name="nope"), ValueError, "unknown corruption"),
    (dict(severity=0), ValueError, "severity"),
    (dict(severity=6), ValueError, "severity"),
    (dict(severity=2.0), ValueError, "severity"),
    (dict(images=np.zeros((2, 32, 32, 3), np.float32)), TypeError, "uint8"),
    (dict(images=np.zeros((32, 32), np.uint8)), ValueError, "shape"),  # (H, W, 3) is one image, accepted
    (dict(images=np.zeros((2, 32, 32, 1), np.uint8)), ValueError, "shape"),
    (dict(indices=[0]), ValueError, "indices"),
    (dict(indices=[0, -1]), ValueError, "indices"),
    (dict(params="cifar100"), ValueError, "parameter table"),
    (dict(seed=-1), ValueError, "seed"),
])
def test_errors(kwargs, error, match):
    args = dict(images=np.zeros((2, 32, 32, 3), np.uint8), name="gaussian_noise", severity=1)
    args.update(kwargs)
    images, name, severity = args.pop("images"), args.pop("name"), args.pop("severity")
    for fn in (corrupt, corrupt_reference):
        with pytest.raises(error, match=match):
            fn(images, name, severity, **args)
