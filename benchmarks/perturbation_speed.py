"""Speed of the -P sequence generators vs the reference generator's way of computing them, in one run.

The reference (``make_imagenet_p.py`` / ``make_cifar_p.py``) builds each frame of each image
separately: torch noise per frame, numpy Poisson / normal draws per frame, torchvision
``affine`` on the whole resized image then ``CenterCrop``, OpenCV ``warpPerspective`` on the
whole image then the crop, scikit-image's colour conversion and Gaussian filter per frame, the
spatter smear through ``np.apply_along_axis``. ImageMagick (Wand) and scikit-image are not
dependencies here: their per-frame calls are timed through this package's ports of them
(``corruptions.blur.motion_blur`` one frame at a time, ``digital.rgb2hsv/hsv2rgb``,
``scipy.ndimage.gaussian_filter``), which are the per-frame oracles the tests hold the fast
path to, run with the project's C kernels off (their numpy code). Writing frames and encoding video are not timed (neither side).

Ours and the reference are timed interleaved (ours, reference, next perturbation, ..., then the
next repeat), as CPU seconds of this one-threaded process (torch, OpenCV set to 1 thread), and the
best of ``--repeats`` is kept, so a shared machine's load hits both alike and idle waits do not count.
One run prints:

- ImageNet-P: ms per sequence per perturbation on a 256x341 image (a val image resized to 256, the
  commonest 4:3 shape) cropped to 224 px frames, ours vs the reference way, the total and the ratio,
  and the projected core-hours for all 50 000 val images (the reference ``make_imagenet_p.py`` loops
  over the whole val folder) and per 10 000 images;
- CIFAR-10-P: ms per image per perturbation on real CIFAR-10 test images when ``--cifar`` names a
  ``cifar-10-batches-py`` folder (random 32x32 images otherwise), and the projection of the full set
  (10 000 images x the 10 benchmark perturbations) in core-seconds and in wall seconds on 2 cores.

    python benchmarks/perturbation_speed.py [--repeats 3] [--cifar DIR] [--cifar-images 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

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
    """CPU seconds of ``fn`` in this (one-threaded) process."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def numpy_only(fn):  # noqa: ANN001, ANN201
    """``fn`` with the project's C kernels off: the ports above are the reference's per-frame numpy code,
    not the C kernels the fast paths now share with them."""
    from pushpull.layers.config import set_native

    def run():  # noqa: ANN202
        with set_native(False):
            return fn()

    return run


def interleaved(jobs: dict[str, tuple], repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Best CPU seconds of ours and of the reference per name, timed one after the other, round by round."""
    ours = {n: float("inf") for n in jobs}
    ref = dict(ours)
    jobs = {name: (fast, numpy_only(slow)) for name, (fast, slow) in jobs.items()}
    for fast, slow in jobs.values():  # warm-up: imports, first-call set-up, kernel builds, caches
        fast(), slow()
    for _ in range(repeats):
        for name, (fast, slow) in jobs.items():
            ours[name] = min(ours[name], seconds(fast))
            ref[name] = min(ref[name], seconds(slow))
    return ours, ref


def imagenet_table(repeats: int) -> None:
    from pushpull.data.perturbations import PERTURBATIONS, VALIDATION_PERTURBATIONS, perturb
    from pushpull.data.sequence_kernels import perspective_maps

    names = PERTURBATIONS + VALIDATION_PERTURBATIONS
    image = np.random.default_rng(0).integers(0, 256, (256, 341, 3), dtype=np.uint8)
    jobs = {n: (lambda n=n: perturb(image[None], n, params="imagenet", crop=224),
                lambda n=n: reference_sequence(image, n, "imagenet", 224)) for n in names}
    cold = "tilt, new shape"  # tilt's maps are cached per image shape; this row recomputes them every time

    def cold_tilt() -> None:
        perspective_maps.cache_clear()
        perturb(image[None], "tilt", params="imagenet", crop=224)

    jobs[cold] = (cold_tilt, jobs["tilt"][1])
    ours, ref = interleaved(jobs, repeats)
    print(f"ImageNet-P: one 256x341 image -> 224 px frames, ms CPU per sequence, best of {repeats} interleaved rounds")
    print(f"{'perturbation':15s} {'ours':>8s} {'reference':>10s} {'speed-up':>9s}")
    for name in list(names) + [cold]:
        print(f"{name:15s} {ours[name] * 1e3:8.1f} {ref[name] * 1e3:10.1f} {ref[name] / ours[name]:8.1f}x")
    total_ours, total_ref = sum(ours[k] for k in names), sum(ref[k] for k in names)
    print(f"{'all ' + str(len(names)):15s} {total_ours * 1e3:8.1f} {total_ref * 1e3:10.1f} "
          f"{total_ref / total_ours:8.1f}x")
    for label, keys in (("10 benchmark", PERTURBATIONS), (f"all {len(names)}", names)):
        o, r = sum(ours[k] for k in keys), sum(ref[k] for k in keys)
        print(f"ImageNet-P core-hours, {label} perturbations: ours {o * 50_000 / 3600:.1f} vs reference "
              f"{r * 50_000 / 3600:.1f} for the 50 000 val images ({o * 10_000 / 3600:.1f} vs "
              f"{r * 10_000 / 3600:.1f} per 10 000 images); frames only: no PNG writing, no video encoding")


def cifar_images(folder: str | None, count: int) -> tuple[np.ndarray, str]:
    if folder:
        from pushpull.data.cifar import load_cifar

        images, _ = load_cifar(folder, train=False)
        return images[np.arange(count) * (len(images) // count)], "CIFAR-10 test images"
    return np.random.default_rng(1).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), "random 32x32 images"


def cifar_table(repeats: int, folder: str | None, count: int) -> None:
    from pushpull.data.perturbations import PERTURBATIONS, perturb

    images, what = cifar_images(folder, count)
    few = images[:max(1, count // 10)]  # the reference way is slower: fewer images, the same per-image rate
    jobs = {n: (lambda n=n: perturb(images, n, indices=np.arange(len(images))),
                lambda n=n: [reference_sequence(x, n, "cifar", None) for x in few]) for n in PERTURBATIONS}
    ours, ref = interleaved(jobs, repeats)
    ours = {k: v / len(images) for k, v in ours.items()}
    ref = {k: v / len(few) for k, v in ref.items()}
    print(f"CIFAR-10-P: {len(images)} {what} (reference way: {len(few)}), ms CPU per image and sequence")
    print(f"{'perturbation':15s} {'ours':>8s} {'reference':>10s} {'speed-up':>9s}")
    for name in PERTURBATIONS:
        print(f"{name:15s} {ours[name] * 1e3:8.3f} {ref[name] * 1e3:10.3f} {ref[name] / ours[name]:8.1f}x")
    o, r = sum(ours.values()) * 10_000, sum(ref.values()) * 10_000
    print(f"CIFAR-10-P (10 000 images x 10 perturbations): ours {o:.0f} core-s, {o / 2:.0f} s on 2 cores; "
          f"reference way {r:.0f} core-s, {r / 2:.0f} s on 2 cores (frames only; writing not included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the best of each is kept")
    parser.add_argument("--cifar", help="a folder holding cifar-10-batches-py (default: random 32x32 images)")
    parser.add_argument("--cifar-images", type=int, default=200, help="CIFAR images timed per round (ours)")
    args = parser.parse_args()

    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    imagenet_table(args.repeats)
    print()
    cifar_table(args.repeats, args.cifar, args.cifar_images)


if __name__ == "__main__":
    main()
