"""-P sequences: frame counts, reproducibility, and each fast path against a slow per-image reference."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

from pushpull.data.perturbations import (ALL_PERTURBATIONS, NOISE_SEQUENCES, PERTURBATIONS, convolve_same,
                                         num_frames, perturb, tilt_matrix, warp_perspective)
from pushpull.data.streams import image_stream

RNG = np.random.default_rng(1234)
IMAGES = RNG.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)


def smooth_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Random but smooth images (a few low frequencies), so interpolation differences stay small."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    out = np.zeros((n, size, size, 3))
    for _ in range(4):
        fy, fx, phase = rng.uniform(0.5, 2.5, 3)
        out += rng.uniform(20, 50, (n, 1, 1, 3)) * np.sin(2 * np.pi * (fy * y + fx * x) + phase)[None, ..., None]
    return np.clip(out + 128, 0, 255).astype(np.uint8)


def test_names_and_frame_counts():
    assert PERTURBATIONS == ("gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "snow", "brightness",
                             "translate", "rotate", "tilt", "scale")
    assert len(ALL_PERTURBATIONS) == 20 and set(PERTURBATIONS) < set(ALL_PERTURBATIONS)
    cifar = {"motion_blur": 21, "translate": 16}
    imagenet = {"motion_blur": 31, "translate": 41}
    for name in ALL_PERTURBATIONS:
        assert num_frames(name) == cifar.get(name, 31)
        assert num_frames(name, "imagenet") == imagenet.get(name, 31)


@pytest.mark.parametrize("name", ALL_PERTURBATIONS)
def test_every_sequence_shape_and_reproducibility(name):
    out = perturb(IMAGES, name, seed=3)
    assert out.dtype == np.uint8 and out.shape == (3, num_frames(name)) + IMAGES.shape[1:]
    assert np.array_equal(out, perturb(IMAGES, name, seed=3))
    # frames vary along the sequence
    assert len({frame.tobytes() for frame in out[0]}) > num_frames(name) // 2
    if name in NOISE_SEQUENCES:
        assert np.array_equal(out[:, 0], IMAGES)


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise_2", "speckle_noise", "snow", "spatter"])
def test_random_streams_depend_on_image_index_not_batch(name):
    indices = np.array([7, 100, 9999])
    whole = perturb(IMAGES, name, seed=5, indices=indices)
    for k in range(3):
        assert np.array_equal(whole[k], perturb(IMAGES[k:k + 1], name, seed=5, indices=indices[k:k + 1])[0])
    assert not np.array_equal(whole, perturb(IMAGES, name, seed=6, indices=indices))
    assert not np.array_equal(whole[0], perturb(IMAGES[:1], name, seed=5, indices=[8])[0])


def reference_noise(image: np.ndarray, name: str, seed: int, index: int) -> np.ndarray:
    """make_cifar_p.py's loops, one frame at a time, drawing from the image's stream."""
    rng = image_stream(seed, name, index)
    seq = [image]
    for _ in range(1, 31):
        if name == "gaussian_noise":
            x = image.astype(np.float32) / np.float32(255)
            z = np.clip(x + np.float32(0.02) * rng.standard_normal(x.shape, dtype=np.float32), 0, 1)
            seq.append((z * np.float32(255)).astype(np.uint8))
        elif name == "shot_noise_3":
            z = image / 255.0
            seq.append(np.uint8(255 * np.clip(rng.poisson(z * 200) / 200.0, 0, 1)))
        else:  # speckle_noise_2
            x = image / 255.0
            seq.append(np.uint8(255 * np.clip(x + x * rng.normal(size=x.shape, scale=0.07), 0, 1)))
    return np.stack(seq)


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise_3", "speckle_noise_2"])
def test_noise_matches_per_frame_reference(name):
    out = perturb(IMAGES, name, seed=2, indices=[4, 5, 6])
    for k in range(3):
        assert np.array_equal(out[k], reference_noise(IMAGES[k], name, 2, 4 + k))


def test_noise_levels():
    gray = np.full((4, 32, 32, 3), 128, np.uint8)
    for name, sigma in (("gaussian_noise", 0.02), ("gaussian_noise_2", 0.04), ("gaussian_noise_3", 0.06)):
        frames = perturb(gray, name)[:, 1:].astype(float) / 255
        assert abs(frames.std() - sigma) < 0.1 * sigma
    for name, lam in (("shot_noise", 700), ("shot_noise_2", 400), ("shot_noise_3", 200)):
        frames = perturb(gray, name)[:, 1:].astype(float) / 255
        expected = np.sqrt(128 / 255 / lam)  # Poisson(x·λ)/λ has variance x/λ
        assert abs(frames.std() - expected) < 0.1 * expected


def test_brightness_matches_colorsys_reference():
    out = perturb(IMAGES[:1], "brightness")
    flat = IMAGES[0].reshape(-1, 3) / 255.0
    for i in (0, 7, 15, 30):
        expected = []
        for r, g, b in flat:
            h, s, v = colorsys.rgb_to_hsv(r, g, b)
            expected.append(colorsys.hsv_to_rgb(h, s, min(max(v + (i - 15) * 1.5 / 100, 0), 1)))
        expected = (np.array(expected) * 255).reshape(32, 32, 3)
        # truncation to uint8; values a rounding error away from an integer may fall either way
        clear = np.abs(expected - np.round(expected)) > 1e-6
        assert np.array_equal(out[0, i][clear], np.floor(expected[clear]).astype(np.uint8))
        assert np.abs(out[0, i].astype(int) - np.floor(expected)).max() <= 1


def test_gaussian_blur_matches_per_channel_filter():
    from scipy.ndimage import gaussian_filter

    out = perturb(IMAGES[:2], "gaussian_blur")
    for i in (0, 30):
        for k in range(2):
            for c in range(3):
                ref = gaussian_filter(IMAGES[k, ..., c] / 255.0, 0.3 + 0.015 * i, mode="nearest", truncate=7.0)
                assert np.array_equal(out[k, i, ..., c], (255 * ref).astype(np.uint8))


def test_geometric_sequences_pass_through_the_identity():
    for name, identity in (("rotate", 15), ("scale", 15), ("shear", 15), ("translate", 7)):
        assert np.array_equal(perturb(IMAGES, name)[:, identity], IMAGES), name


@pytest.mark.parametrize("name, frame_kwargs, bilinear", [
    ("rotate", lambda i: {"angle": i - 15}, True),
    ("scale", lambda i: {"scale": (i * 2 + 70) / 100.0}, True),
    ("shear", lambda i: {"shear": i - 15}, True),  # a number shears along x only
    ("translate", lambda i: {"translate": [i - 7, 0]}, False),
])
def test_geometric_frames_equal_torchvision_affine(name, frame_kwargs, bilinear):
    """The reference called torchvision's affine on each PIL image; we hand PIL the same matrix once per frame."""
    import torchvision.transforms.functional as TF
    from PIL import Image
    from torchvision.transforms import InterpolationMode

    out = perturb(IMAGES, name)
    mode = InterpolationMode.BILINEAR if bilinear else InterpolationMode.NEAREST
    for i in (0, 4, 13):
        kw = {"angle": 0, "translate": [0, 0], "scale": 1.0, "shear": 0} | frame_kwargs(i)
        for k in range(len(IMAGES)):
            expected = np.asarray(TF.affine(Image.fromarray(IMAGES[k]), interpolation=mode, **kw))
            assert np.array_equal(out[k, i], expected), (name, i, k)


def test_translate_shifts_with_black_fill():
    out = perturb(IMAGES, "translate")
    for i in range(16):
        d = i - 7
        expected = np.zeros_like(IMAGES)
        if d >= 0:
            expected[:, :, d:] = IMAGES[:, :, :32 - d]
        else:
            expected[:, :, :d] = IMAGES[:, :, -d:]
        assert np.array_equal(out[:, i], expected)


def test_rotate_turns_the_image():
    img = smooth_images(1, 32)
    out = perturb(img, "rotate")
    mirrored = perturb(img[:, :, ::-1].copy(), "rotate")[:, :, :, ::-1]
    # rotating a mirrored image by +a is mirroring the image rotated by -a
    assert np.abs(out[0, 10].astype(int) - mirrored[0, 20]).mean() < 2
    assert np.abs(out[0, 0].astype(int) - img[0]).mean() > 5


def test_zoom_blur_is_a_running_mean_of_zooms():
    import torchvision.transforms.functional as TF
    from PIL import Image
    from torchvision.transforms import InterpolationMode

    out = perturb(IMAGES[:1], "zoom_blur")
    pil = Image.fromarray(IMAGES[0])
    zooms = [IMAGES[0]] + [np.asarray(TF.affine(pil, 0.0, [0, 0], 1 + 0.004 * k, [0.0, 0.0],
                                                interpolation=InterpolationMode.BILINEAR)) for k in range(1, 31)]
    for i in (0, 1, 12, 30):
        mean = sum(z.astype(np.float64) for z in zooms[:i + 1]) / (i + 1)
        assert np.abs(out[0, i].astype(np.float64) - mean).max() <= 1.0  # truncation of a float32 mean


def reference_warp(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """OpenCV's INTER_LINEAR warpPerspective, one pixel at a time (1/32 px grid, 15-bit weights)."""
    h, w, c = image.shape
    inv = np.linalg.inv(matrix)
    out = np.zeros_like(image)
    for y in range(h):
        for x in range(w):
            den = inv[2, 0] * x + inv[2, 1] * y + inv[2, 2]
            px = int(np.rint((inv[0, 0] * x + inv[0, 1] * y + inv[0, 2]) * 32 / den))
            py = int(np.rint((inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]) * 32 / den))
            sx, sy, ax, ay = px // 32, py // 32, px % 32, py % 32
            total = np.zeros(c, np.int64)
            for dy, wy in ((0, 32 - ay), (1, ay)):
                for dx, wx in ((0, 32 - ax), (1, ax)):
                    if 0 <= sy + dy < h and 0 <= sx + dx < w:
                        total += image[sy + dy, sx + dx].astype(np.int64) * wy * wx * 32
            out[y, x] = np.clip((total + (1 << 14)) >> 15, 0, 255)
    return out


@pytest.mark.parametrize("degrees", [-11.25, 0.0, 6.0])
def test_warp_perspective_matches_pixel_loop(degrees):
    img = IMAGES[:2, :20, :24]
    m = tilt_matrix(degrees, 20, 24)
    out = warp_perspective(img, m)
    for k in range(2):
        assert np.array_equal(out[k], reference_warp(img[k], m))


def test_warp_perspective_integer_shift_is_exact():
    m = np.array([[1.0, 0, 3], [0, 1, -2], [0, 0, 1]])
    out = warp_perspective(IMAGES, m)
    assert np.array_equal(out[:, :30, 3:], IMAGES[:, 2:, :29])
    assert not out[:, :, :3].any() and not out[:, 30:].any()


def opencv4_warp_perspective(cv2, image: np.ndarray, m: np.ndarray) -> np.ndarray:
    """OpenCV 4's ``warpPerspective`` (INTER_LINEAR, black border) on any OpenCV: its source map, computed
    as 4.x did (double precision, rounded to 1/32 px), fed to ``remap``'s fixed-point path, which
    4.x ran internally and 5.x still has. (OpenCV 5 rewrote warpPerspective in floating point.)"""
    h, w = image.shape[:2]
    inv = np.linalg.inv(m)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    den = inv[2, 0] * xs + inv[2, 1] * ys + inv[2, 2]
    scale = np.where(den != 0, 32.0 / np.where(den != 0, den, 1.0), 0.0)
    lim = float(np.iinfo(np.int32).max)
    fx, fy = (np.rint(np.clip((inv[k, 0] * xs + inv[k, 1] * ys + inv[k, 2]) * scale, -lim, lim)).astype(np.int64)
              for k in (0, 1))
    whole = np.stack([fx >> 5, fy >> 5], -1).clip(-32768, 32767).astype(np.int16)
    fraction = ((fy & 31) * 32 + (fx & 31)).astype(np.uint16)
    return cv2.remap(image, whole, fraction, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def test_tilt_matches_opencv4_warp_perspective():
    """Runs on every OpenCV: against warpPerspective itself before 5.0, against 4.x's fixed-point
    pipeline rebuilt from remap always (checked equal to warpPerspective on OpenCV 4.14)."""
    import cv2

    out = perturb(IMAGES, "tilt")
    for i in (0, 9, 30):
        m = tilt_matrix(0.75 * (i - 15), 32, 32)
        assert np.array_equal(out[:, i], np.stack([opencv4_warp_perspective(cv2, x, m) for x in IMAGES]))
        if int(cv2.__version__.split(".")[0]) < 5:
            assert np.array_equal(out[:, i], np.stack([cv2.warpPerspective(x, m, (32, 32)) for x in IMAGES]))
    steep = tilt_matrix(40.0, 20, 24)  # far off-centre taps, the 1/32 px rounding and the border
    assert np.array_equal(warp_perspective(IMAGES[:2, :20, :24], steep)[1],
                          opencv4_warp_perspective(cv2, IMAGES[1, :20, :24], steep))


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_native_perspective_warp_equals_opencv_remap(channels):
    """The C warp (source points and remap's fixed-point weights in one pass) against OpenCV's own remap on the
    same map: random perspectives that push the image partly out of the frame (border taps), whole image and an
    off-centre window, one to four channels."""
    from pushpull.data.sequence_kernels import warp_frames
    from pushpull.layers.config import set_native

    native_library()
    rng = np.random.default_rng(17 + channels)
    images = rng.integers(0, 256, (2, 29, 38, channels), dtype=np.uint8)
    matrices = np.stack([np.eye(3) + np.array([[0.2, 0.3, 6.0], [0.25, 0.2, 6.0], [2e-3, 2e-3, 0.0]])
                         * rng.uniform(-1, 1, (3, 3)) for _ in range(12)])
    for window in (None, (3, 5, 20, 17)):
        fast = warp_frames(images, matrices, window)
        with set_native(False):
            slow = warp_frames(images, matrices, window)
        assert np.array_equal(fast, slow)
        assert (fast == 0).mean() > 0.02, "some source points fell outside the image"


def test_convolve_same_matches_numpy():
    from pushpull.layers.config import set_native

    x = RNG.random((2, 9, 5))
    for kernel in ([0.2, 0.8], [0.05, 0.1, 0.15, 0.7]):
        expected = np.apply_along_axis(lambda line: np.convolve(line, kernel, mode="same"), 1, x)
        fast = convolve_same(x, kernel, axis=1)
        np.testing.assert_allclose(fast, expected, rtol=1e-12, atol=1e-15)
        with set_native(False):  # the column kernel sums in the numpy path's order: the same bits
            assert np.array_equal(fast, convolve_same(x, kernel, axis=1))


def test_imagenet_params_and_crop():
    images = smooth_images(2, 40)
    out = perturb(images, "translate", params="imagenet", crop=24)
    assert out.shape == (2, 41, 24, 24, 3)
    assert np.array_equal(out[:, 20], images[:, 8:32, 8:32])  # identity frame, centre crop
    assert np.array_equal(out[:, 21, :, 1:], images[:, 8:32, 8:31])  # moved right by one pixel, context from outside
    noise = perturb(images, "gaussian_noise", params="imagenet", crop=24)
    assert np.array_equal(noise[:, 0], images[:, 8:32, 8:32])
    assert abs((noise[:, 1:].astype(float) - noise[:, :1]).std() / 255 - 0.03) < 0.005


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="unknown perturbation 'rotation'"):
        perturb(IMAGES, "rotation")
    with pytest.raises(ValueError, match="uint8"):
        perturb(IMAGES.astype(np.float32), "rotate")
    with pytest.raises(ValueError, match="unknown parameter table .tiny.; choose from cifar, imagenet"):
        perturb(IMAGES, "rotate", params="tiny")
    with pytest.raises(ValueError, match="indices"):
        perturb(IMAGES, "gaussian_noise", indices=[1, 2])


@pytest.mark.parametrize("name", ["motion_blur", "snow", "brightness", "rotate", "tilt", "zoom_blur"])
def test_crop_where_the_reference_cropped(name):
    """ImageNet-P: static perturbations see only the 224 crop; moving ones move the whole 256 px image."""
    from pushpull.data.perturbations import MOVING_SEQUENCES

    wide = smooth_images(1, 40)[:, 4:34]  # non-square (30 x 40), like a resized val image
    out = perturb(wide, name, params="imagenet", crop=24, indices=[3])
    assert out.shape == (1, num_frames(name, "imagenet"), 24, 24, 3)
    whole = perturb(wide, name, params="imagenet", indices=[3])
    cropped = perturb(np.ascontiguousarray(wide[:, 3:27, 8:32]), name, params="imagenet", indices=[3])
    assert np.array_equal(out, whole[:, :, 3:27, 8:32] if name in MOVING_SEQUENCES else cropped)


# ----------------------------------------------------------------- whole-sequence kernels vs per-frame oracles
# The per-frame ways below are the implementations the sequence kernels replaced (and the reference
# generator's loops); every comparison is bit for bit, at ImageNet-P size and at odd sizes.

ODD = np.random.default_rng(77).integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
WIDE = np.random.default_rng(78).integers(0, 256, (1, 256, 301, 3), dtype=np.uint8)  # a resized val image


def crop224(x: np.ndarray) -> np.ndarray:
    """CenterCrop(224) of (..., H, W, C), as torchvision places it."""
    h, w = x.shape[-3:-1]
    top, left = int(round((h - 224) / 2.0)), int(round((w - 224) / 2.0))
    return x[..., top:top + 224, left:left + 224, :]


def numpy_warp_perspective(images: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The former fast path: OpenCV 4's fixed-point taps gathered with numpy from a zero-padded image."""
    n, h, w, c = images.shape
    inv = np.linalg.inv(matrix)
    ys, xs = np.mgrid[0:h, 0:w].reshape(2, -1).astype(np.float64)
    den = inv[2, 0] * xs + inv[2, 1] * ys + inv[2, 2]
    scale = np.divide(32.0, den, out=np.zeros_like(den), where=den != 0)
    lim = float(np.iinfo(np.int32).max)
    fx = np.rint(np.clip((inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]) * scale, -lim, lim)).astype(np.int64)
    fy = np.rint(np.clip((inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]) * scale, -lim, lim)).astype(np.int64)
    sx, ax, sy, ay = fx >> 5, fx & 31, fy >> 5, fy & 31
    x0, x1 = np.clip(sx + 1, 0, w + 1), np.clip(sx + 2, 0, w + 1)
    y0, y1 = np.clip(sy + 1, 0, h + 1), np.clip(sy + 2, 0, h + 1)
    index = np.stack([y0 * (w + 2) + x0, y0 * (w + 2) + x1, y1 * (w + 2) + x0, y1 * (w + 2) + x1])
    weight = np.stack([(32 - ay) * (32 - ax), (32 - ay) * ax, ay * (32 - ax), ay * ax]) * 32
    padded = np.zeros((n, h + 2, w + 2, c), np.int64)
    padded[:, 1:-1, 1:-1] = images
    flat = padded.reshape(n, -1, c)
    acc = sum(np.take(flat, index[k], axis=1) * weight[k][:, None] for k in range(4))
    return ((acc + (1 << 14)) >> 15).astype(np.uint8).reshape(n, h, w, c)


@pytest.mark.parametrize("params", ["cifar", "imagenet"])
def test_tilt_equals_former_numpy_warp(params):
    step = 0.75 if params == "cifar" else 1.0
    for images, crop in ((ODD, None), (WIDE, 224)):
        out = perturb(images, "tilt", params=params, crop=crop)
        h, w = images.shape[1:3]
        for i in (0, 6, 15, 30):
            expected = numpy_warp_perspective(images, tilt_matrix(step * (i - 15), h, w))
            assert np.array_equal(out[:, i], crop224(expected) if crop else expected), (params, i, h, w)


def test_warp_perspective_far_outside_and_through_the_horizon():
    """Maps that leave int16 pixels or cross w = 0 take the clamped path, still OpenCV 4's numbers."""
    for m in (np.array([[1.0, 0, -40000], [0, 1, 5], [0, 0, 1]]), np.array([[1.0, 0, 0], [0, 1, 0], [0.05, 0, -1]]),
              tilt_matrix(80.0, 37, 53)):
        assert np.array_equal(warp_perspective(ODD, m), numpy_warp_perspective(ODD, m))


@pytest.mark.parametrize("params", ["cifar", "imagenet"])
def test_motion_blur_sweep_equals_per_frame_motion_blur(params):
    from pushpull.data.corruptions.blur import motion_blur

    radius, sigma, angle = (6, 1.8, lambda i: (i - 20) * 9) if params == "cifar" else (10, 3, lambda i: (i - 30) * 4)
    for images, crop in ((ODD, None), (WIDE, 224)):
        out = perturb(images, "motion_blur", params=params, crop=crop)
        x = np.ascontiguousarray(crop224(images)) if crop else images
        for i in range(num_frames("motion_blur", params)):
            assert np.array_equal(out[:, i], motion_blur(x, radius, sigma, [angle(i)] * len(x))), (params, i)


@pytest.mark.parametrize("params", ["cifar", "imagenet"])
def test_snow_equals_per_frame_blur_and_blend(params):
    from pushpull.data.corruptions.blur import motion_blur
    from pushpull.data.corruptions.weather import blend_snow, snow_layers

    zoom, radius, sigma = (2, 10, 2) if params == "cifar" else (3, 14, 4)
    for images, crop in ((ODD, None), (WIDE, 224)):
        out = perturb(images, "snow", params=params, crop=crop, seed=4, indices=[5, 6][:len(images)])
        x = np.ascontiguousarray(crop224(images)) if crop else images
        layers = snow_layers(x.shape[:3], 0.05, 0.3, zoom, 0.5, [image_stream(4, "snow", k) for k in (5, 6)[:len(x)]])
        for i in (0, 1, 17, 30):
            expected = blend_snow(x, motion_blur(layers, radius, sigma, [i * 4 - 150] * len(x)), 0.85)
            assert np.array_equal(out[:, i], expected), (params, i)


@pytest.mark.parametrize("params", ["cifar", "imagenet"])
def test_brightness_equals_per_frame_hsv_round_trip(params):
    from pushpull.data.corruptions.digital import hsv2rgb, rgb2hsv

    step = 1.5 if params == "cifar" else 2.0
    for images, crop in ((ODD, None), (WIDE, 224)):
        out = perturb(images, "brightness", params=params, crop=crop)
        x = crop224(images) if crop else images
        for i in range(31):
            hsv = rgb2hsv(x / 255.0)
            hsv[..., 2] = np.clip(hsv[..., 2] + (i - 15) * step / 100.0, 0, 1)
            assert np.array_equal(out[:, i], (hsv2rgb(hsv) * 255).astype(np.uint8)), (params, i)


@pytest.mark.parametrize("name, level", [("gaussian_noise_2", 0.05), ("shot_noise", 300), ("speckle_noise_3", 0.15)])
def test_imagenet_noise_equals_per_frame_draws(name, level):
    out = perturb(WIDE, name, params="imagenet", crop=224, seed=9, indices=[321])
    x = crop224(WIDE[0])
    rng = image_stream(9, name, 321)
    for i in range(1, 31):
        if name.startswith("gaussian"):
            z = x.astype(np.float32) / np.float32(255)
            frame = (np.clip(z + np.float32(level) * rng.standard_normal(z.shape, dtype=np.float32), 0, 1)
                     * np.float32(255)).astype(np.uint8)
        elif name.startswith("shot"):
            frame = (255 * np.clip(rng.poisson(x / 255.0 * level) / level, 0, 1)).astype(np.uint8)
        else:
            z = x / 255.0
            frame = (255 * np.clip(z + z * rng.normal(size=z.shape, scale=level), 0, 1)).astype(np.uint8)
        assert np.array_equal(out[0, i], frame), i


@pytest.mark.parametrize("name", ["zoom_blur", "translate", "rotate", "scale", "shear"])
def test_moving_sequences_equal_the_whole_image_moved_then_cropped(name):
    """Warping only up to the crop's far corner keeps the pixels of the whole warp (the reference's order)."""
    import torchvision.transforms.functional as TF
    from PIL import Image
    from torchvision.transforms import InterpolationMode

    out = perturb(WIDE, name, params="imagenet", crop=224)
    pil = Image.fromarray(WIDE[0])
    kw = {"zoom_blur": lambda i: {"scale": 1 + 0.004 * i}, "translate": lambda i: {"translate": [i - 20, 0]},
          "rotate": lambda i: {"angle": i - 15}, "scale": lambda i: {"scale": (i * 2.5 + 40) / 100.0},
          "shear": lambda i: {"shear": [i - 15, 0.0]}}[name]
    mode = InterpolationMode.NEAREST if name == "translate" else InterpolationMode.BILINEAR
    frames = [np.asarray(TF.affine(pil, interpolation=mode, **({"angle": 0.0, "translate": [0, 0], "scale": 1.0,
                                                               "shear": [0.0, 0.0]} | kw(i)))) for i in range(31)]
    if name == "zoom_blur":  # frame i: float32 running mean of the image and zooms 1..i
        for i in (1, 2, 30):
            total = sum((crop224(f).astype(np.float32) / np.float32(255) for f in frames[1:i + 1]),
                        crop224(WIDE[0]).astype(np.float32) / np.float32(255))
            assert np.array_equal(out[0, i], (total / np.float32(i + 1) * np.float32(255)).astype(np.uint8)), i
        return
    for i in (0, 3, 15, 30):
        assert np.array_equal(out[0, i], crop224(frames[i])), (name, i)


def test_quantum_to_char_is_imagemagicks_rounding():
    """Round half up to a 16-bit quantum, clamp, then q // 257 (the motion-blur frames' last step)."""
    from pushpull.data.corruptions.blur import quantum_to_char

    acc = np.concatenate([np.arange(-3, 65540) + d for d in (0.0, 0.5, 0.4999999, -1e-9)] +
                         [np.random.default_rng(0).uniform(-10, 65600, 10000)])
    q = np.where(acc <= 0, 0, np.where(acc >= 65535, 65535, np.floor(acc + 0.5))).astype(np.int64)
    assert np.array_equal(quantum_to_char(acc), (q // 257).astype(np.uint8))


# ----------------------------------------------------------------- native kernels: the numpy path's bits

def native_library():
    """The kernels; skips only where no C compiler exists (a failed build or self-check fails the test)."""
    import shutil

    from pushpull.data._sequence_native import library

    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here: the -P generator uses its numpy path")
    lib = library()
    assert lib is not None, "the -P kernels did not build, or their Poisson draws differ from numpy's"
    return lib


def test_native_poisson_is_generator_poisson_on_millions_of_rates():
    """numpy's algorithm (multiplication below 10, PTRS from 10, log-gamma in its rejection test) on
    every kind of rate, and the generator left where numpy leaves it (also with a 32-bit half kept)."""
    from pushpull.data._sequence_native import poisson

    lib = native_library()
    rng = np.random.default_rng(99)
    lam = np.concatenate([
        [0.0, 5e-324, 1e-300, 9.999999999999998, 10.0, 10.000000000000002, 1e4],
        np.arange(0, 1e4, 0.37), rng.uniform(0, 10, 1_000_000), rng.uniform(10, 1e4, 1_000_000),
        np.exp(rng.uniform(np.log(1e-12), np.log(1e4), 500_000)), np.arange(256) / 255.0 * 60])
    rng.shuffle(lam)
    for seed, keep_half in ((0, False), (1, True)):
        expected, ours = np.random.default_rng(seed), np.random.default_rng(seed)
        if keep_half:  # a float32 draw leaves half of a 64-bit output buffered for the next one
            expected.random(dtype=np.float32), ours.random(dtype=np.float32)
        assert np.array_equal(poisson(ours, lam, lib), expected.poisson(lam))
        assert ours.bit_generator.state == expected.bit_generator.state
        assert ours.random(dtype=np.float32) == expected.random(dtype=np.float32)


@pytest.mark.parametrize("fill, dtype", [("uniforms", np.float64), ("standard_normals", np.float64),
                                         ("standard_normals", np.float32)])
def test_native_draws_are_the_generators_own(fill, dtype):
    """The C fills give Generator.random / standard_normal's values and leave the generator where numpy leaves it:
    on millions of values (thousands through numpy's rare ziggurat branches), in pieces of awkward sizes, from a
    state holding a spare 32-bit half; a non-PCG64 stream takes numpy's own path."""
    from pushpull.data import _sequence_native

    native_library()
    assert _sequence_native._draws() is not None, "the native PCG64 draws differ from numpy's here"
    ours_fill = getattr(_sequence_native, fill)
    for seed, keep_half in ((0, False), (1, True)):
        expected, ours = np.random.default_rng(seed), np.random.default_rng(seed)
        if keep_half:
            expected.random(dtype=np.float32), ours.random(dtype=np.float32)
        for size in (0, 1, 7, 2_000_003, 1000):
            out = np.empty(size, dtype)
            ours_fill(ours, out)
            want = expected.random(size) if fill == "uniforms" else expected.standard_normal(size, dtype)
            assert np.array_equal(out, want), (seed, size)
            assert ours.bit_generator.state == expected.bit_generator.state
    other = np.random.Generator(np.random.MT19937(3))
    out = np.empty(1000, dtype)
    ours_fill(other, out)
    want = np.random.Generator(np.random.MT19937(3))
    assert np.array_equal(out, want.random(1000) if fill == "uniforms" else want.standard_normal(1000, dtype))


def test_native_normals_hand_numpy_the_rare_draws():
    """The layers whose bound is 0 (every draw goes to numpy's own sampler) and the tail layer: each draw the C
    fast path does not take is numpy's, the state put back as before it."""
    from pushpull.data import _sequence_native

    native_library()
    draws = _sequence_native._draws()
    assert draws is not None
    tables = draws[1]
    for dtype in (np.float64, np.float32):
        ki = tables[dtype].ki
        assert ki[1] == 0 and (ki[2:] > 0).all(), "numpy's wedge layers: only layer 1 has no one-step draws"
        values = np.empty(500_000, dtype)
        rng, expected = np.random.default_rng(5), np.random.default_rng(5)
        _sequence_native.standard_normals(rng, values)
        want = expected.standard_normal(values.size, dtype)
        assert np.array_equal(values, want)
        assert (np.abs(values) > 3.6541528).sum() > 20, "the tail branch (layer 0) was reached"


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "shot_noise_3", "speckle_noise_2", "motion_blur",
                                  "snow", "spatter", "gaussian_blur", "brightness", "zoom_blur", "rotate", "scale",
                                  "shear", "tilt"])
@pytest.mark.parametrize("params", ["cifar", "imagenet"])
def test_native_kernels_equal_the_numpy_path(name, params):
    from pushpull.layers.config import set_native

    native_library()
    images, crop = (ODD, None) if params == "cifar" else (WIDE, 224)
    fast = perturb(images, name, params=params, crop=crop, seed=3, indices=[11, 12][:len(images)])
    with set_native(False):
        slow = perturb(images, name, params=params, crop=crop, seed=3, indices=[11, 12][:len(images)])
    assert np.array_equal(fast, slow)


def test_without_a_compiler_the_numpy_path_runs(monkeypatch):
    import shutil

    from pushpull.data import _sequence_native

    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert _sequence_native._load.__wrapped__() is None


def test_native_affine_equals_pillow_on_random_and_sequence_warps():
    """The bilinear warp (source points four at a time, channels side by side) against Pillow itself: the -P
    rotations, shears and zooms about the centre (whose source points fall on exact half-pixels, where one
    rounding changes a byte) at odd and even sizes, and random warps with fractional shifts, whole image and an
    off-centre window."""
    from PIL import Image

    from pushpull.data.perturbations import affine_matrix
    from pushpull.data.sequence_kernels import pil_bilinear_frames

    lib = native_library()
    rng = np.random.default_rng(31)
    frames = ([{"angle": float(i - 15)} for i in range(31)] + [{"shear": (float(i - 15), 0.0)} for i in range(31)]
              + [{"scale": s} for s in (0.4, 0.65, 0.9, 1.004, 1.06, 1.12, 1.15)]
              + [{"angle": float(rng.uniform(-40, 40)), "scale": float(rng.uniform(0.4, 1.6)),
                  "shear": (float(rng.uniform(-30, 30)), float(rng.uniform(-10, 10))),
                  "translate": tuple(float(v) for v in rng.uniform(-9, 9, 2))} for _ in range(30)])
    for h, w in ((37, 53), (40, 40), (41, 60), (64, 85)):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        matrices = [affine_matrix((w, h), **kw) for kw in frames]
        pil = Image.fromarray(image)
        for top, left, height, width in ((0, 0, h, w), (5, 9, h - 11, w - 14)):
            ours = pil_bilinear_frames(lib, image[None], matrices, (top, left, height, width),
                                       np.empty((1, len(frames), height, width, 3), np.uint8))[0]
            for k, matrix in enumerate(matrices):
                moved = pil.transform((left + width, top + height), Image.Transform.AFFINE, matrix,
                                      Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
                assert np.array_equal(ours[k], np.asarray(moved)[top:, left:]), (h, w, frames[k], top, left)


def test_native_hsv_factors_equal_rgb2hsv_then_hsv2rgb():
    """Brightness's per-image HSV step in C against the numpy round trip on 274 625 colours: every tie between
    channels, the grays (delta 0, no hue), pure black and white, hues on both sides of each sextant."""
    from pushpull.data.corruptions.digital import hsv2rgb, rgb2hsv
    from pushpull.data.sequence_kernels import hsv_factors

    lib = native_library()
    levels = np.append(np.arange(0, 255, 4), 255).astype(np.uint8)
    colours = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(1, -1, 65, 3)
    value, factors = hsv_factors(lib, colours)
    hsv = rgb2hsv(colours / 255.0)
    assert np.array_equal(value, hsv[..., 2])
    hsv[..., 2] = 1.0
    assert np.array_equal(factors, hsv2rgb(hsv))
    numpy_value, numpy_factors = hsv_factors(None, colours)  # the numpy path: the round trip itself
    assert np.array_equal(numpy_value, value) and np.array_equal(numpy_factors, factors)


@pytest.mark.parametrize("params", ["cifar", "imagenet"])
def test_translate_equals_pillow_nearest_per_frame(params):
    """Whole-pixel shifts copied with numpy are PIL's nearest-neighbour affine, frame by frame, window and all."""
    from PIL import Image

    from pushpull.data.perturbations import _PARAMS, affine_matrix

    frames, off = _PARAMS[params]["translate"]
    for images, crop in ((ODD, None), (WIDE, 224), (ODD[:1, :, :30], 24)):
        out = perturb(images, "translate", params=params, crop=crop)
        h, w = images.shape[1:3]
        for i in range(frames):
            matrix = affine_matrix((w, h), translate=(i - off, 0))
            for k, image in enumerate(images):
                moved = np.asarray(Image.fromarray(image).transform((w, h), Image.Transform.AFFINE, matrix,
                                                                    Image.Resampling.NEAREST, fillcolor=(0, 0, 0)))
                assert np.array_equal(out[k, i], crop224(moved) if crop == 224 else
                                      moved[6:30, 3:27] if crop else moved), (params, i, crop)


def test_motion_sweep_takes_over_shared_taps_exactly():
    """Frames whose first taps agree start from the sums of the frame before (all taps agreeing: its bytes):
    repeated, nearly equal and far apart angles, in any order, against the per-frame motion blur."""
    from pushpull.data.corruptions.blur import motion_blur
    from pushpull.data.sequence_kernels import motion_blur_sweep

    native_library()
    angles = [45.0, 0.0, 45.0, 90.0, 0.5, -135.0, 44.0, 0.0, 180.0, 91.0]
    out = motion_blur_sweep(WIDE[:, :40, :45], 10, 3, angles)  # 135 values a row: 8 blocks of 16 and a tail
    for t, angle in enumerate(angles):
        assert np.array_equal(out[:, t], motion_blur(WIDE[:, :40, :45], 10, 3, [angle])), angle


@pytest.mark.parametrize("level", [12.0, 60.0, 300.0, 700.0, 5000.0])
def test_native_shot_frames_equal_numpy_poisson_for_every_value(level):
    """Shot frames take PTRS's rejection test from a threshold table where it decides beyond doubt, numpy's own
    logarithms elsewhere: every pixel value at rates from below 10 to 5000 (beyond the table's reach too),
    against Generator.poisson frame by frame, and the generator left where numpy leaves it."""
    check_shot_frames(level)


@pytest.mark.parametrize("path", ["python blocks", "a variate longer than a block"])
def test_shot_frames_other_block_loops_equal_numpy_poisson(path, monkeypatch):
    """The same frames and state where the blocks go back to Python each (numpy's draws, not the C ones), and
    where a variate needs more uniforms than a block holds (the C loop gives up, the Python one grows the block)."""
    from pushpull.data import _sequence_native

    if path == "python blocks":
        monkeypatch.setattr(_sequence_native, "_draws_for", lambda rng: None)
    else:
        monkeypatch.setattr(_sequence_native, "_BLOCK", 6)
    check_shot_frames(8.0)
    check_shot_frames(60.0)


def check_shot_frames(level: float) -> None:
    from pushpull.data._sequence_native import shot_frames

    lib = native_library()
    clean = np.tile(np.arange(256, dtype=np.uint8), 60).reshape(32, 160, 3)
    ours, expected = image_stream(2, "shot", int(level)), image_stream(2, "shot", int(level))
    frames = shot_frames(lib, ours, clean, 30, level)
    for frame in frames:
        assert np.array_equal(frame, (255 * np.clip(expected.poisson(clean / 255.0 * level) / level, 0, 1))
                              .astype(np.uint8))
    assert ours.bit_generator.state == expected.bit_generator.state
