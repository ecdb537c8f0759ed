"""``pushpull.corrupt_image``: imagecorruptions 1.1.2's call at any size, seeded.

Two kinds of checks, on real photos at native sizes (427x640 and 600x512):
- against a minimally patched copy of imagecorruptions (skipped when it cannot be imported; it is
  not a dependency: ``pip install --target DIR --no-deps imagecorruptions==1.1.2 scikit-image
  lazy_loader imageio tifffile networkx`` and ``PYTHONPATH=src:DIR``). Its global-RNG draws are
  replayed from our stream, so every corruption is compared pixel for pixel; the noise corruptions
  are also compared in distribution with its own global RNG.
- oracle style, without it: shapes and dtypes, grey and one-channel input, determinism per seed and
  index, each size rule written out independently (scipy/PIL/np.roll), and bad input.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import os
import sys
import types

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import map_coordinates
from scipy.ndimage import zoom as scizoom

import pushpull
from conftest import real_photos
from pushpull.data.corruptions import BENCHMARK_CORRUPTIONS, CORRUPTIONS, IMAGENET, corrupt
from pushpull.data.corruptions import any_size_rules as rules
from pushpull.data.corruptions.any_size import SUBSETS, corrupt_image, get_corruption_names
from pushpull.data.corruptions.blur import clipped_zoom
from pushpull.data.corruptions.digital import displace
from pushpull.data.streams import image_stream

RANDOM = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur", "snow",
          "frost", "fog", "spatter", "elastic_transform")
OWN_RULES = ("motion_blur", "zoom_blur", "snow", "frost", "elastic_transform", "pixelate")


@pytest.fixture(scope="module")
def photos() -> list[tuple[str, np.ndarray]]:
    return real_photos()


@pytest.fixture(scope="module")
def small(photos) -> np.ndarray:
    """A real photo shrunk to 96x128 (the slow literal oracles run on it)."""
    return np.asarray(Image.fromarray(photos[0][1]).resize((128, 96), Image.BILINEAR))


# ---------------------------------------------------------------- the API

def test_subsets_are_imagecorruptions_lists():
    assert get_corruption_names() == list(BENCHMARK_CORRUPTIONS)
    assert get_corruption_names("all") == list(CORRUPTIONS)  # its corruption_tuple order: numbers index this
    assert get_corruption_names("validation") == ["speckle_noise", "gaussian_blur", "spatter", "saturate"]
    assert get_corruption_names("noise") == ["gaussian_noise", "shot_noise", "impulse_noise"]  # no speckle
    assert get_corruption_names("weather") == ["snow", "frost", "fog", "brightness"]
    assert get_corruption_names("digital") == ["contrast", "elastic_transform", "pixelate", "jpeg_compression"]
    assert sum((get_corruption_names(f) for f in ("noise", "blur", "weather", "digital")), []) == list(BENCHMARK_CORRUPTIONS)
    assert pushpull.get_corruption_names is get_corruption_names and pushpull.corrupt_image is corrupt_image
    assert {"corrupt_image", "get_corruption_names"} <= set(pushpull.__all__)
    with pytest.raises(ValueError, match="weather"):
        get_corruption_names("wether")
    assert set(SUBSETS) == {"common", "validation", "all", "noise", "blur", "weather", "digital"}


@pytest.mark.parametrize("name", ["gaussian_noise", "motion_blur", "frost", "elastic_transform", "pixelate", "fog"])
def test_grey_and_one_channel_are_corrupted_as_rgb_copies(name, photos):
    rgb = photos[2][1]  # 600x512
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    before = grey.copy()
    expected = corrupt_image(np.stack([grey] * 3, axis=-1), 3, name, seed=2, index=5)
    for image in (grey, grey[..., None]):
        out = corrupt_image(image, 3, name, seed=2, index=5)
        assert out.dtype == np.uint8 and out.shape == grey.shape + (3,)
        np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(grey, before)  # the input is never modified


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_corruption_at_the_smallest_sizes(name, photos):
    photo = photos[0][1]
    for h, w in ((32, 32), (32, 200), (45, 33)):
        image = np.ascontiguousarray(photo[100:100 + h, 200:200 + w])
        out = corrupt_image(image, 5, name)
        assert out.shape == (h, w, 3) and out.dtype == np.uint8, name


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_reproducible_per_seed_and_index(name, small):
    out = corrupt_image(small, 4, name, seed=1, index=3)
    np.testing.assert_array_equal(corrupt_image(small, 4, name, seed=1, index=3), out)
    np.testing.assert_array_equal(corrupt_image(small, 4, corruption_number=CORRUPTIONS.index(name), seed=1, index=3),
                                  out)
    others = [corrupt_image(small, 4, name, seed=2, index=3), corrupt_image(small, 4, name, seed=1, index=4)]
    for other in others:
        assert (not np.array_equal(other, out)) == (name in RANDOM), name


def test_name_wins_over_number(small):
    np.testing.assert_array_equal(corrupt_image(small, 2, "contrast", corruption_number=0),
                                  corrupt_image(small, 2, "contrast"))


@pytest.mark.parametrize("name", sorted(set(CORRUPTIONS) - set(OWN_RULES)))
def test_shared_corruptions_are_the_imagenet_table(name, photos):
    """The 13 corruptions imagecorruptions did not change are ``corrupt(params="imagenet")`` at any size."""
    photo = photos[1][1]  # 427x640: not square
    for severity in (1, 5):
        np.testing.assert_array_equal(corrupt_image(photo, severity, name, seed=4, index=9),
                                      corrupt(photo, name, severity, seed=4, indices=9, params="imagenet"))


# ---------------------------------------------------------------- the size rules, written out independently

def test_pixelate_is_box_down_nearest_up(photos):
    photo = photos[2][1]
    for severity, factor in enumerate(IMAGENET["pixelate"], start=1):
        small = Image.fromarray(photo).resize((int(512 * factor), int(600 * factor)), Image.BOX)
        np.testing.assert_array_equal(corrupt_image(photo, severity, "pixelate"),
                                      np.asarray(small.resize((512, 600), Image.NEAREST)))


def test_zoom_blur_keeps_each_zooms_top_left(small):
    """Mean of the image and scipy's zooms of the central ceil(side / z) crop, each cut to its top-left H x W."""
    x = (small / 255.0).astype(np.float32)
    h, w = x.shape[:2]
    for severity in (1, 4):
        zooms = IMAGENET["zoom_blur"][severity - 1]
        out = np.zeros_like(x)
        for z in zooms:
            ch, cw = int(np.ceil(h / z)), int(np.ceil(w / z))
            top, left = (h - ch) // 2, (w - cw) // 2
            out += scizoom(x[top:top + ch, left:left + cw], (z, z, 1), order=1)[:h, :w]
        expected = np.uint8(np.clip((x + out) / (len(zooms) + 1), 0, 1) * 255)
        np.testing.assert_array_equal(corrupt_image(small, severity, "zoom_blur"), expected)


def test_clipped_zoom_is_scipys_zoom_where_a_coordinate_rounds_past_the_edge(photos):
    """600 rows zoomed by 1.22 (zoom blur, severity 4): scipy's last sample, 599 * (491 / 599), lands a hair
    past row 491 of the 492-row crop, outside the input, so scipy gives its cval 0 there."""
    x = (photos[2][1] / 255.0).astype(np.float32)
    for z in IMAGENET["zoom_blur"][3][-3:]:  # 1.2, 1.22, 1.24
        ch, cw = int(np.ceil(600 / z)), int(np.ceil(512 / z))
        top, left = (600 - ch) // 2, (512 - cw) // 2
        expected = scizoom(x[top:top + ch, left:left + cw], (z, z, 1), order=1)
        np.testing.assert_array_equal(clipped_zoom(x[None], z, trim=False)[0], expected, err_msg=repr(z))


def _rolled(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``image`` moved by (dy, dx) with np.roll, the uncovered side filled with the edge row/column."""
    out = np.roll(image, (dy, dx), axis=(0, 1))
    if dx > 0:
        out[:, :dx] = out[:, dx:dx + 1]
    elif dx < 0:
        out[:, dx:] = out[:, dx - 1:dx]
    if dy > 0:
        out[:dy] = out[dy:dy + 1]
    elif dy < 0:
        out[dy:] = out[dy - 1:dy]
    return out


@pytest.mark.parametrize("angle", [-45.0, -7.3, 0.0, 30.0, 90.0, -120.0])
def test_motion_blur_is_a_one_sided_shift_and_add(angle, small):
    radius, sigma = 15, 5
    width = 2 * radius + 1
    weights = [math.exp(-i * i / (2 * sigma * sigma)) for i in range(width)]
    weights = np.array(weights) / sum(weights)
    expected = np.zeros(small.shape)
    for i, weight in enumerate(weights):  # tap i reads the pixel i steps behind along the angle
        dy = -math.ceil(i * math.sin(math.radians(angle)) - 0.5)
        dx = -math.ceil(i * math.cos(math.radians(angle)) - 0.5)
        expected += weight * _rolled(small, dy, dx)
    got = rules.shift_sum(small, rules.motion_taps(radius, sigma, angle, small.shape[:2]))
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_motion_taps_stop_at_the_image_border():
    """imagecorruptions drops the taps that would leave the image (and does not renormalise)."""
    assert len(rules.motion_taps(20, 15, 90.0, (32, 64))) == 32  # tap 32 would move 32 rows
    assert len(rules.motion_taps(20, 15, 90.0, (64, 64))) == 41
    assert len(rules.motion_taps(20, 15, 0.0, (32, 35))) == 35


def test_motion_blur_of_a_tall_thin_image_darkens_as_imagecorruptions_does(photos):
    image = np.full((32, 300, 3), 200, np.uint8)
    rng = np.random.default_rng(0)
    out = rules.motion_blur(image, 20, 15, rng)
    angle = np.random.default_rng(0).uniform(-45, 45)
    kept = sum(w for w, _, _ in rules.motion_taps(20, 15, angle, (32, 300)))
    assert abs(out.astype(float).mean() - 200 * kept) <= 1


@pytest.mark.parametrize("shape", [(64, 64), (427, 640), (854, 1280), (2000, 300)])
def test_frost_texture_covers_the_image_with_a_margin(shape):
    for index in range(5):
        texture = rules.frost_texture(index, 1)
        fitted = rules.fitted_frost(index, *shape)
        th, tw = texture.shape[:2]
        scale = 1.1 if th >= shape[0] and tw >= shape[1] else 1.1 * max(shape[0] / th, shape[1] / tw)
        assert fitted.shape[:2] == (math.ceil(th * scale), math.ceil(tw * scale))
        assert fitted.shape[0] > shape[0] and fitted.shape[1] > shape[1]


def test_frost_is_a_random_crop_of_the_fitted_texture(photos):
    photo = photos[0][1]
    weights = IMAGENET["frost"][2][:2]
    rng = image_stream(6, "frost", 3, 1)
    texture = rules.fitted_frost(int(rng.integers(5)), *photo.shape[:2])
    top, left = rng.integers(0, texture.shape[0] - 427), rng.integers(0, texture.shape[1] - 640)
    crop = texture[top:top + 427, left:left + 640, ::-1]  # BGR -> RGB
    expected = np.uint8(np.clip(weights[0] * photo + weights[1] * crop, 0, 255))
    np.testing.assert_array_equal(corrupt_image(photo, 3, "frost", seed=6, index=1), expected)


def test_displace_is_scipys_bilinear_reflect(photos):
    photo = photos[2][1].astype(np.float32) / 255
    rng = np.random.default_rng(1)
    dy = rng.uniform(-40, 40, photo.shape[:2]).astype(np.float32)  # large: many samples fold at the edges
    dx = rng.uniform(-40, 40, photo.shape[:2]).astype(np.float32)
    rows, cols, chans = np.meshgrid(np.arange(600), np.arange(512), np.arange(3), indexing="ij")
    coords = [(rows + dy[..., None]).ravel(), (cols + dx[..., None]).ravel(), chans.ravel()]
    expected = map_coordinates(photo, coords, order=1, mode="reflect").reshape(photo.shape)
    np.testing.assert_allclose(displace(photo, dx, dy), expected, rtol=0, atol=1e-6)


def test_elastic_field_scales_with_the_image(photos):
    """Displacements (sigma 1% of each side, range 0.5% of the height) grow with the image: same field
    statistics relative to the size at 427x640 and, upsampled, at 854x1280."""
    photo = photos[0][1]
    big = np.asarray(Image.fromarray(photo).resize((1280, 854), Image.BICUBIC))
    for image in (photo, big):
        constant = np.full_like(image, 90)
        np.testing.assert_array_equal(corrupt_image(constant, 5, "elastic_transform"), constant)
    gap = [np.abs(corrupt_image(im, 5, "elastic_transform", index=i).astype(float) - im).mean()
           for i, im in enumerate((photo, big))]
    assert 0.7 < gap[0] / gap[1] < 1.6, gap  # the big image's finer detail is moved as far, relatively


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("image, error, match", [
    (np.zeros((64, 64, 3), np.float32), TypeError, r"float32.*\(x \* 255\)"),
    (np.zeros((64, 64, 3), np.uint16), TypeError, "16-bit"),
    (np.zeros((64, 64, 4), np.uint8), ValueError, r"\(64, 64, 4\).*alpha"),
    (np.zeros((31, 64, 3), np.uint8), ValueError, "at least 32x32.*31x64"),
    (np.zeros((64, 20), np.uint8), ValueError, "64x20"),
    (np.zeros((2, 64, 64, 3), np.uint8), ValueError, "shape"),
    (np.zeros((64, 64, 3), bool), TypeError, "uint8"),
    ([[0] * 64] * 64, TypeError, "numpy array, got list"),
    (Image.new("RGB", (64, 64)), TypeError, "np.asarray"),
])
def test_bad_images_are_named(image, error, match):
    with pytest.raises(error, match=match) as caught:
        corrupt_image(image, 1, "fog")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("kwargs, match", [
    (dict(severity=0), "severity"), (dict(severity=6), "severity"), (dict(severity=2.0), "severity"),
    (dict(corruption_name="gausian_noise"), "gaussian_noise"),
    (dict(corruption_name=None, corruption_number=19), "0..18"),
    (dict(corruption_name=None), "corruption_name"),
    (dict(index=-1), "index"), (dict(seed=-1), "seed"),
])
def test_bad_arguments_are_named(kwargs, match, small):
    args = dict(severity=1, corruption_name="gaussian_noise") | kwargs
    with pytest.raises(ValueError, match=match):
        corrupt_image(small, **args)


# ---------------------------------------------------------------- against imagecorruptions itself

class _Numpy(types.ModuleType):
    """numpy as imagecorruptions sees it: ``float_`` back (removed in numpy 2) and, in a replay, ``random``."""

    def __init__(self, random=None):
        super().__init__("numpy")
        self.float_ = np.float64
        if random is not None:
            self.random = random

    def __getattr__(self, name):
        return getattr(np, name)


def patched_imagecorruptions():
    """imagecorruptions 1.1.2 with the minimal patch for today's numpy / scikit-image / setuptools.

    Raises ImportError when it (or scikit-image) is not installed. ``benchmarks/any_size_speed.py`` uses it too.

    Only what is broken is patched: ``pkg_resources`` (absent where setuptools no longer ships it; the
    import fails without it, and it only locates the frost files), skimage ``gaussian(multichannel=True)``
    (scikit-image now takes ``channel_axis=-1`` only: glass_blur and gaussian_blur raise without the
    patch) and ``np.float_`` (removed in numpy 2: fog raises without it).
    """
    for needed in ("imagecorruptions", "skimage"):
        if importlib.util.find_spec(needed) is None:
            raise ImportError(f"No module named {needed!r}")
    if importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, path: os.path.join(os.path.dirname(sys.modules[package].__file__), path)
        sys.modules["pkg_resources"] = shim
    module = importlib.import_module("imagecorruptions")
    gaussian = importlib.import_module("skimage.filters").gaussian
    corruptions = sys.modules["imagecorruptions.corruptions"]
    if not getattr(corruptions, "_pushpull_patched", False):
        def patched_gaussian(image, *args, multichannel=False, **kwargs):
            return gaussian(image, *args, channel_axis=-1 if multichannel else None, **kwargs)

        corruptions.gaussian = patched_gaussian
        if not hasattr(np, "float_"):
            corruptions.np = _Numpy()
        corruptions._pushpull_patched = True
    return module


@pytest.fixture(scope="module")
def imagecorruptions():
    try:
        return patched_imagecorruptions()
    except ImportError as err:
        pytest.skip(f"imagecorruptions 1.1.2 (+ scikit-image) is not importable ({err}); see this file's docstring")


class _Replay:
    """numpy's global-RNG calls that imagecorruptions makes, answered from one of our Generators."""

    def __init__(self, rng: np.random.Generator, glass: np.ndarray | None = None):
        self.rng, self.glass = rng, None if glass is None else iter(glass.reshape(-1, 2))

    def normal(self, loc=0.0, scale=1.0, size=None):
        return self.rng.normal(loc, scale, size)

    def uniform(self, low=0.0, high=1.0, size=None):
        return self.rng.uniform(low, high, size)

    def poisson(self, lam=1.0, size=None):
        return self.rng.poisson(lam, size)

    def randint(self, low, high=None, size=None):
        # glass blur asks for one (dx, dy) per pixel; we draw them all at once (same values, visiting order)
        return next(self.glass) if self.glass is not None else self.rng.integers(low, high, size)


@contextlib.contextmanager
def _replaying(imagecorruptions, rng: np.random.Generator, glass: np.ndarray | None = None):
    corruptions = sys.modules["imagecorruptions.corruptions"]
    util = importlib.import_module("skimage.util")
    saved = corruptions.np, util.random_noise
    noise = util.random_noise
    corruptions.np = _Numpy(_Replay(rng, glass))
    util.random_noise = lambda *args, **kwargs: noise(*args, rng=rng, **kwargs)  # impulse noise's own Generator
    try:
        yield
    finally:
        corruptions.np, util.random_noise = saved


def theirs_with_our_draws(imagecorruptions, image, name, severity, seed, index):
    """imagecorruptions' output when its random draws are the ones our stream gives."""
    rng = image_stream(seed, name, severity, index)
    glass = None
    if name == "glass_blur":
        _, delta, iterations = IMAGENET["glass_blur"][severity - 1]
        positions = len(range(image.shape[0] - delta, delta, -1)) * len(range(image.shape[1] - delta, delta, -1))
        glass = rng.integers(-delta, delta, size=(iterations, positions, 2))
    with _replaying(imagecorruptions, rng, glass):
        return imagecorruptions.corrupt(image, severity, name)


# (max |diff|, fraction of pixels allowed to differ): the mud spatter adds a float64 colour, ours float32.
TOLERANCE = {"spatter": (1, 1e-3)}


@pytest.mark.parametrize("name", [n for n in CORRUPTIONS if n != "glass_blur"]
                         + [pytest.param("glass_blur", marks=pytest.mark.slow)])
def test_matches_imagecorruptions_pixel_for_pixel(name, imagecorruptions, photos):
    worst, fraction = TOLERANCE.get(name, (0, 0))
    severities = (1, 3, 5) if name == "glass_blur" else range(1, 6)
    for photo_name, photo in photos:
        for severity in severities:
            expected = theirs_with_our_draws(imagecorruptions, photo, name, severity, seed=3, index=7)
            got = corrupt_image(photo, severity, name, seed=3, index=7)
            assert got.shape == expected.shape and got.dtype == expected.dtype
            gap = np.abs(got.astype(int) - expected)
            assert gap.max() <= worst and (gap > 0).mean() <= fraction, (photo_name, severity, gap.max())


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_matches_imagecorruptions_at_the_smallest_sizes(name, imagecorruptions, photos):
    """32-45 px crops: motion taps cut at the border, frost textures at scale 1.1, snow zoomed 4.5x from 8 rows."""
    worst, fraction = TOLERANCE.get(name, (0, 0))
    for h, w in ((32, 32), (45, 33), (32, 120)):
        crop = np.ascontiguousarray(photos[0][1][150:150 + h, 300:300 + w])
        for severity in range(1, 6):
            expected = theirs_with_our_draws(imagecorruptions, crop, name, severity, seed=1, index=2)
            gap = np.abs(corrupt_image(crop, severity, name, seed=1, index=2).astype(int) - expected)
            assert gap.max() <= worst and (gap > 0).mean() <= max(fraction, 2 / gap.size), (h, w, severity)


def test_grey_input_matches_imagecorruptions(imagecorruptions, photos):
    grey = np.asarray(Image.fromarray(photos[2][1]).convert("L"))
    for name in ("gaussian_noise", "snow", "pixelate"):
        expected = theirs_with_our_draws(imagecorruptions, grey, name, 2, seed=0, index=0)
        np.testing.assert_array_equal(corrupt_image(grey, 2, name), expected)
        np.testing.assert_array_equal(corrupt_image(grey[..., None], 2, name), expected)


def _band_power(diff: np.ndarray) -> np.ndarray:
    """Radially averaged power of a difference image (grey), in 8 frequency bands."""
    power = np.abs(np.fft.fft2(diff.mean(-1))) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(diff.shape[0]), np.fft.fftfreq(diff.shape[1]), indexing="ij")
    band = np.minimum((np.hypot(fy, fx) / 0.5 * 8).astype(int), 7)
    return np.bincount(band.ravel(), power.ravel()) / np.bincount(band.ravel())


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"])
def test_noise_matches_imagecorruptions_in_distribution(name, imagecorruptions, photos):
    """With its own global RNG (no replay): mean, std and spectrum of (corrupted - clean) agree."""
    for _, photo in photos:
        for severity in (1, 5):
            np.random.seed(severity)
            theirs = imagecorruptions.corrupt(photo, severity, name).astype(float) - photo
            ours = corrupt_image(photo, severity, name, seed=severity).astype(float) - photo
            assert abs(theirs.mean() - ours.mean()) < 0.02 * theirs.std() + 0.05
            assert abs(theirs.std() / ours.std() - 1) < 0.01
            np.testing.assert_allclose(_band_power(ours), _band_power(theirs), rtol=0.1)
