"""Speed of the -P sequence generators vs the reference generator's way of computing them, in one run.

The reference (``make_imagenet_p.py`` / ``make_cifar_p.py``) builds each frame of each image
separately: torch noise per frame, numpy Poisson / normal draws per frame, torchvision
``affine`` on the whole resized image then ``CenterCrop``, OpenCV ``warpPerspective`` on the
whole image then the crop, scikit-image's colour conversion and Gaussian filter per frame, the
spatter smear through ``np.apply_along_axis``. ImageMagick (Wand) and scikit-image are not
dependencies here: their per-frame calls are timed through this package's ports of them
(``corruptions.blur.motion_blur`` one frame at a time, ``digital.rgb2hsv/hsv2rgb``,
``scipy.ndimage.gaussian_filter``), which are the per-frame oracles the tests hold the fast
path to. Writing frames and encoding video are not timed (neither side).

Ours and the reference are timed interleaved (ours, reference, next perturbation, ..., then the
next repeat) and the best of ``--repeats`` is kept, so a shared machine's load hits both alike.
Prints ms per sequence, the speed-up, and the projected single-core hours of the whole benchmark
(ImageNet-P: 50 000 val images; CIFAR-10-P: 10 000 test images) for each perturbation.

    python benchmarks/perturbation_speed.py [--params imagenet|cifar] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

IMAGES = {"imagenet": 50_000, "cifar": 10_000}


def reference_sequence(image: np.ndarray, name: str, params: str, crop: int | None) -> np.ndarray:
    """The reference script's loops for one image (one call per frame)."""
    import cv2
    import torch
    import torchvision.transforms.functional as TF
    from PIL import Image
    from scipy.ndimage import gaussian_filter
    from torchvision.transforms import InterpolationMode

    from pushpull.data.corruptions.blur import motion_blur
    from pushpull.data.corruptions.digital import hsv2rgb, rgb2hsv
    from pushpull.data.corruptions.weather import blend_snow, snow_layers, water_drops
    from pushpull.data.perturbations import _PARAMS, num_frames, tilt_matrix

    cfg = _PARAMS[params]
    frames = num_frames(name, params)
    h, w = image.shape[:2]
    size = crop or min(h, w)
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))

    def center(x: np.ndarray) -> np.ndarray:
        return x[top:top + size, left:left + size]

    pil = Image.fromarray(image)
    x = center(image)
    if name == "gaussian_noise":
        t = torch.from_numpy(x).permute(2, 0, 1).float().div(255)
        return np.stack([x] + [torch.clamp(t + cfg[name][0] * torch.randn_like(t), 0, 1).mul(255).byte()
                               .permute(1, 2, 0).numpy() for _ in range(30)])
    if name == "shot_noise":
        lam, z = cfg[name][0], x / 255.0
        return np.stack([x] + [np.uint8(255 * np.clip(np.random.poisson(z * lam) / lam, 0, 1)) for _ in range(30)])
    if name == "speckle_noise":
        z = x / 255.0
        return np.stack([x] + [np.uint8(255 * np.clip(z + z * np.random.normal(size=z.shape, scale=cfg[name][0]),
                                                       0, 1)) for _ in range(30)])
    if name == "motion_blur":
        c = cfg[name]
        return np.stack([motion_blur(x[None], c["radius"], c["sigma"], [c["angle"](i)])[0] for i in range(frames)])
    if name == "snow":
        c = cfg[name]
        layer = snow_layers((1, size, size), 0.05, 0.3, c["zoom"], 0.5, [np.random.default_rng(0)])
        return np.stack([blend_snow(x[None], motion_blur(layer, c["radius"], c["sigma"], [i * 4 - 150]), 0.85)[0]
                         for i in range(frames)])
    if name == "brightness":
        out = []
        for i in range(frames):
            hsv = rgb2hsv(x / 255.0)
            hsv[..., 2] = np.clip(hsv[..., 2] + cfg[name](i), 0, 1)
            out.append(np.uint8(hsv2rgb(hsv) * 255))
        return np.stack(out)
    if name == "gaussian_blur":
        c = cfg[name]
        return np.stack([np.uint8(255 * gaussian_filter(x / 255.0, (c["sigma"](i),) * 2 + (0,), mode="nearest",
                                                        truncate=c["truncate"])) for i in range(frames)])
    if name == "spatter":
        c = cfg[name]
        liquid = gaussian_filter(np.random.normal(size=(size, size), loc=c["loc"], scale=c["scale"]), c["sigma"])
        liquid[liquid < c["threshold"]] = 0
        z, out = x.astype(np.float32) / 255, []
        for _ in range(frames):
            out.append(water_drops(z[None], liquid[None], 0.6)[0])
            liquid = np.apply_along_axis(lambda m: np.convolve(m, c["drift"], mode="same"), 0, liquid)
        return np.stack(out)
    if name == "tilt":
        return np.stack([center(cv2.warpPerspective(image, tilt_matrix(cfg[name] * (i - 15), h, w), (w, h)))
                         for i in range(frames)])
    if name == "zoom_blur":
        total, out = torch.from_numpy(x).permute(2, 0, 1).float().div(255), [x]
        for i in range(1, frames):
            z = center(np.asarray(TF.affine(pil, 0.0, [0, 0], 1 + 0.004 * i, [0.0, 0.0],
                                            interpolation=InterpolationMode.BILINEAR)))
            total += torch.from_numpy(z.copy()).permute(2, 0, 1).float().div(255)
            out.append((total / (i + 1)).mul(255).byte().permute(1, 2, 0).numpy())
        return np.stack(out)
    kw = {"translate": lambda i: {"translate": [i - cfg[name][1], 0]}, "rotate": lambda i: {"angle": i - 15},
          "scale": lambda i: {"scale": cfg[name](i)}, "shear": lambda i: {"shear": [i - 15, 0.0]}}[name]
    mode = InterpolationMode.NEAREST if name == "translate" else InterpolationMode.BILINEAR
    return np.stack([center(np.asarray(TF.affine(pil, interpolation=mode, **({"angle": 0.0, "translate": [0, 0],
                                                                              "scale": 1.0, "shear": [0.0, 0.0]}
                                                                             | kw(i)))))
                     for i in range(frames)])


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", choices=sorted(IMAGES), default="imagenet")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the best of each is kept")
    args = parser.parse_args()

    import torch

    from pushpull.data.perturbations import PERTURBATIONS, VALIDATION_PERTURBATIONS, perturb
    from pushpull.data.sequence_kernels import perspective_maps

    torch.set_num_threads(1)
    names = PERTURBATIONS + VALIDATION_PERTURBATIONS
    # ImageNet-P: a val image resized to 256 px (4:3, the commonest shape), 224 px frames
    shape, crop = ((256, 341, 3), 224) if args.params == "imagenet" else ((32, 32, 3), None)
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    ours = {n: float("inf") for n in names}
    ref = dict(ours)
    cold = "tilt, new shape"  # tilt's maps are cached per image shape; this row recomputes them every time

    def cold_tilt() -> None:
        perspective_maps.cache_clear()
        perturb(image[None], "tilt", params=args.params, crop=crop)

    for name in names:  # warm-up: imports, first-call set-up, caches of the image's shape
        perturb(image[None], name, params=args.params, crop=crop), reference_sequence(image, name, args.params, crop)
    for _ in range(args.repeats):
        for name in names:
            ours[name] = min(ours[name], seconds(lambda: perturb(image[None], name, params=args.params, crop=crop)))
            ref[name] = min(ref[name], seconds(lambda: reference_sequence(image, name, args.params, crop)))
        ours[cold] = min(ours.get(cold, float("inf")), seconds(cold_tilt))
    ref[cold] = ref["tilt"]
    n = IMAGES[args.params]
    print(f"{args.params}-P, {shape[0]}x{shape[1]} image{f' -> {crop} px frames' if crop else ''}, 1 thread, "
          f"best of {args.repeats} interleaved rounds")
    print(f"{'perturbation':15s} {'ours ms/seq':>11s} {'ref ms/seq':>11s} {'speed-up':>9s} "
          f"{'ours core-h':>12s} {'ref core-h':>11s}")
    for name in names + (cold,):
        print(f"{name:15s} {ours[name] * 1e3:11.1f} {ref[name] * 1e3:11.1f} {ref[name] / ours[name]:8.1f}x "
              f"{ours[name] * n / 3600:12.1f} {ref[name] * n / 3600:11.1f}")
    total_ours, total_ref = sum(ours[k] for k in names), sum(ref[k] for k in names)
    print(f"{'all ' + str(len(names)):15s} {total_ours * 1e3:11.1f} {total_ref * 1e3:11.1f} "
          f"{total_ref / total_ours:8.1f}x {total_ours * n / 3600:12.1f} {total_ref * n / 3600:11.1f}")
    print(f"(core-hours: {n} images x one sequence per perturbation, frames only: no PNG writing, no video encoding)")


if __name__ == "__main__":
    main()
