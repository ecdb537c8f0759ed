"""The corruptions' C kernels == their numpy code (the fallback), byte for byte; the fallback works without them."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from builds import BUILD_IDS, NARROWER_BUILDS, narrower, skip_unless_buildable
from conftest import real_photos
from PIL import Image
from scipy.ndimage import gaussian_filter

from pushpull.data.corruptions import (CORRUPTIONS, _native, corrupt, corrupt_reference, motion_blur, noise, weather,
                                       zoom_blur)
from pushpull.data.corruptions._common import to_uint8
from pushpull.data.corruptions.blur import gaussian_smooth, glass_blur
from pushpull.data.corruptions.digital import contrast, displace, hsv_edit
from pushpull.layers.config import set_native

needs_kernels = pytest.mark.skipif(_native.kernels() is None, reason="the C kernels could not be built here")


def numpy_path(fn, *args, **kwargs):
    with set_native(False):
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def photos():
    """The natural photos at native size (427x640 x2, 600x512) and as 224x224 crops (resized squares)."""
    native = [p for _, p in real_photos()]
    crops = np.stack([np.asarray(Image.fromarray(p[:min(p.shape[:2]), :min(p.shape[:2])]).resize((224, 224),
                                                                                                    Image.BICUBIC))
                      for p in native])
    return native, crops


@needs_kernels
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_corruption_same_bytes_with_and_without_kernels(name, photos):
    _, crops = photos
    x = np.concatenate([crops[:2], np.random.default_rng(3).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)])
    for severity in range(1, 6):
        fast = corrupt(x, name, severity, seed=6, params="imagenet", workers=1)
        np.testing.assert_array_equal(fast, numpy_path(corrupt, x, name, severity, seed=6, params="imagenet",
                                                       workers=1), err_msg=f"{name} severity {severity}")


@needs_kernels
def test_kernels_equal_numpy_on_native_size_photos(photos):
    """The primitives at the photos' own sizes (non-square, 600x512 and 427x640): what the any-size API calls."""
    native, _ = photos
    rngs = lambda: [np.random.default_rng(k) for k in range(1)]  # noqa: E731
    for k, photo in enumerate(native):
        x = photo[None]
        cases = [
            (motion_blur, (x, 15, 5, [33.3])),
            (zoom_blur, (x, np.arange(1, 1.21, 0.02))),
            (hsv_edit, (x, 2, 1.0, 0.3)),
            (hsv_edit, (x, 1, 5.0, 0.1)),
            (gaussian_smooth, (x / 255.0, 3.0)),
        ]
        for fn, args in cases:
            np.testing.assert_array_equal(fn(*args), numpy_path(fn, *args), err_msg=fn.__name__)
        if k == 0:  # the numpy fallback of the copies takes seconds at this size
            np.testing.assert_array_equal(glass_blur(x, 1.0, 2, 2, rngs()), numpy_path(glass_blur, x, 1.0, 2, 2,
                                                                                       rngs()))


@needs_kernels
def test_gaussian_line_sums_equal_scipy():
    rng = np.random.default_rng(0)
    for trial in range(40):
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 40)), int(rng.integers(1, 40))) + ((3,) * (trial % 2))
        x = rng.random(shape)
        sigma = float(rng.choice([0.4, 0.7, 1.5, 6, 19.5, 170.8]))  # up to kernels far longer than the line
        mode, truncate = ("reflect", 3.0) if trial % 3 == 0 else ("nearest", 4.0)
        expected = gaussian_filter(x, (0, sigma, sigma) + (0,) * (x.ndim - 3), mode=mode, truncate=truncate)
        np.testing.assert_array_equal(gaussian_smooth(x, sigma, mode, truncate), expected, err_msg=str(trial))


@needs_kernels
def test_displacement_equals_map_coordinates():
    """Bilinear reflect sampling as scipy's map_coordinates: far outside the image, whole coordinates, 1-4 channels."""
    rng = np.random.default_rng(1)
    for trial in range(30):
        h, w, c = int(rng.integers(1, 40)), int(rng.integers(1, 40)), int(rng.integers(1, 5))
        image = rng.random((h, w, c)).astype(np.float32)
        scale = [0.3, 3, 30, 300][trial % 4]
        dx, dy = (rng.uniform(-scale, scale, (2, h, w))).astype(np.float32)
        if trial % 5 == 0:
            dx = np.round(dx)
        np.testing.assert_array_equal(displace(image, dx, dy), numpy_path(displace, image, dx, dy), err_msg=str(trial))


@needs_kernels
def test_hsv_edit_equals_numpy_on_every_colour_kind():
    """Greys (no hue), pure and saturated colours, ties between channels, black and white, clipping both ways."""
    levels = np.array([0, 1, 64, 127, 128, 200, 254, 255], np.uint8)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(1, -1, 3)
    noise = np.random.default_rng(2).integers(0, 256, (1, 300, 3), dtype=np.uint8)
    x = np.concatenate([grid, noise], axis=1)
    for channel, scale, shift in [(2, 1.0, 0.5), (2, 1.0, -0.3), (1, 20.0, 0.2), (1, 0.1, 0.0), (1, 2.0, -0.5)]:
        np.testing.assert_array_equal(hsv_edit(x, channel, scale, shift), numpy_path(hsv_edit, x, channel, scale,
                                                                                         shift))


@needs_kernels
def test_motion_blur_kernel_on_grey_layers_and_any_angle():
    rng = np.random.default_rng(4)
    layer = rng.integers(0, 256, (3, 37, 29, 1), dtype=np.uint8)
    angles = rng.uniform(-180, 180, 3)
    for radius, sigma in [(0, 1), (3, 1.5), (15, 8), (40, 20)]:  # 40: taps reach past the image
        np.testing.assert_array_equal(motion_blur(layer, radius, sigma, angles),
                                      numpy_path(motion_blur, layer, radius, sigma, angles))


@needs_kernels
@pytest.mark.parametrize("march,needs", NARROWER_BUILDS, ids=BUILD_IDS)
def test_every_vector_width_build_sums_as_scipy_and_numpy(monkeypatch, tmp_path, march, needs):
    """The line sums' blocks are 32 / (doubles per register) vectors: each narrower build this machine runs."""
    skip_unless_buildable(march, needs)
    monkeypatch.setenv("PUSHPULL_CACHE", str(tmp_path))
    monkeypatch.setattr(_native, "FLAGS", tuple(narrower(_native.FLAGS, march)))
    _native._build.cache_clear()
    try:
        assert _native.kernels() is not None and list(tmp_path.iterdir())  # builds of their own
        test_gaussian_line_sums_equal_scipy()
        test_motion_blur_kernel_on_grey_layers_and_any_angle()
    finally:
        _native._build.cache_clear()


def test_without_a_compiler_the_numpy_code_runs(monkeypatch, tmp_path, caplog):
    """No C compiler: the kernels are None (logged, not raised) and every corruption still equals the oracle."""
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("PUSHPULL_CACHE", str(tmp_path / "cache"))
    _native._build.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="pushpull._compiled"):
            assert _native.kernels() is None
        assert "could not build" in caplog.text
        x = np.random.default_rng(5).integers(0, 256, (1, 40, 36, 3), dtype=np.uint8)
        for name in ("glass_blur", "motion_blur", "zoom_blur", "brightness", "saturate", "elastic_transform"):
            np.testing.assert_array_equal(corrupt(x, name, 3, params="imagenet"),
                                          corrupt_reference(x, name, 3, params="imagenet"), err_msg=name)
    finally:
        _native._build.cache_clear()


def test_native_off_switch():
    """The project's one switch (PUSHPULL_NATIVE / set_native) turns the corruption kernels off too."""
    with set_native(False):
        assert _native.kernels() is None


@needs_kernels
@pytest.mark.parametrize("mapsize", [2, 4, 32, 256, 1024])
def test_plasma_levels_equal_numpy(mapsize):
    """Diamond-square in C == the numpy levels (two streams: each draws its own grids in the same order)."""
    for decay in (1.4, 3):
        maps = lambda: weather.plasma_fractal(mapsize, decay, [np.random.default_rng(mapsize),  # noqa: E731
                                                                np.random.default_rng(7)])
        np.testing.assert_array_equal(maps(), numpy_path(maps))


def _tails(x: np.ndarray):
    """Each element-wise tail that runs as one C pass, as (name, call) on the uint8 batch ``x``."""
    n, h, w, _ = x.shape
    rngs = lambda: [np.random.default_rng(k) for k in range(n)]  # noqa: E731
    layers = np.random.default_rng(9).integers(0, 256, (n, 2, h, w, 1), dtype=np.uint8)  # two -P frames per image
    return [
        ("gaussian_noise", lambda: noise.gaussian_noise(x, 0.38, rngs())),
        ("speckle_noise", lambda: noise.speckle_noise(x, 0.6, rngs())),
        ("impulse_noise", lambda: noise.impulse_noise(x, 0.27, rngs())),
        ("contrast", lambda: contrast(x, 0.05)),
        ("fog", lambda: weather.fog(x, 3, 1.4, rngs())),
        *[(f"snow layers zoom {z}", lambda z=z: weather.snow_layers((n, h, w), 0.55, 0.3, z, 0.6, rngs()))
          for z in (1, 1.75, 4.5)],
        ("snow blend", lambda: weather.blend_snow(x, layers[:, 0], 0.55)),
        ("snow blend, frames", lambda: weather.blend_snow(x, layers, 0.8)),
        ("water", lambda: weather.spatter(x, (0.65, 0.3, 2, 0.68, 0.5, 0), rngs())),
        ("mud", lambda: weather.spatter(x, (0.67, 0.4, 1, 0.65, 1.5, 1), rngs())),
        ("to_uint8 float64", lambda: to_uint8(np.random.default_rng(1).normal(0.5, 0.6, x.shape)[:, ::-1])),
        ("to_uint8 float32", lambda: to_uint8(np.random.default_rng(2).normal(0.5, 0.6, x.shape).astype(np.float32))),
    ]


@needs_kernels
def test_element_wise_tails_equal_numpy_on_photos_and_random_images(photos):
    """The one-pass C tails (noise, contrast, fog, snow's flakes and blend, spatter, to_uint8) == their numpy
    steps, byte for byte: natural photos at native size, a batch of small random images with black and white."""
    native, _ = photos
    rng = np.random.default_rng(8)
    small = rng.integers(0, 256, (3, 29, 37, 3), dtype=np.uint8)
    small[0, :5] = 0
    small[1, :5] = 255
    for x in [p[None] for p in native] + [small]:
        for name, call in _tails(x):
            np.testing.assert_array_equal(call(), numpy_path(call), err_msg=f"{name} {x.shape}")


@needs_kernels
def test_frost_tail_equals_numpy_for_every_weight_kind(photos):
    """Float and integer weights: the kernel runs where numpy sums in float64, and equals it; the uint8 products
    of other integer weights (numpy wraps them) stay numpy's."""
    _, crops = photos
    for weights in [(1, 0.4), (0.6, 0.75), (0.85, 1), (0, 1.0), (2, 0.5), (1, 1)]:
        call = lambda: weather.frost(crops, *weights, 1, [np.random.default_rng(k) for k in range(3)])  # noqa: E731
        np.testing.assert_array_equal(call(), numpy_path(call), err_msg=str(weights))
