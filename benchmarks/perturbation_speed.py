"""Speed of the -P sequence generators vs the reference script's way of computing them, in one run.

The reference (``make_cifar_p.py``) builds each frame of each image separately: torch noise
per frame, torchvision ``affine`` per (image, frame), OpenCV ``warpPerspective`` per
(image, frame). This prints, per perturbation, sequences/s of ``perturb`` and of that
per-frame loop on the same images, their ratio, and the projected time of CIFAR-10-P.

    python benchmarks/perturbation_speed.py [--n 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def reference_frames(images: np.ndarray, name: str) -> np.ndarray:
    """The reference script's loops (one call per image and frame)."""
    import torch
    import torchvision.transforms.functional as TF
    from PIL import Image
    from torchvision.transforms import InterpolationMode

    from pushpull.data.perturbations import tilt_matrix

    out = []
    for img in images:
        seq = []
        if name == "gaussian_noise":
            x = torch.from_numpy(img).permute(2, 0, 1).float().div(255)
            seq = [img] + [np.uint8(torch.clamp(x + 0.02 * torch.randn_like(x), 0, 1).permute(1, 2, 0).numpy() * 255)
                           for _ in range(30)]
        elif name == "rotate":
            pil = Image.fromarray(img)
            seq = [np.asarray(TF.affine(pil, i - 15, [0, 0], 1.0, 0.0, interpolation=InterpolationMode.BILINEAR))
                   for i in range(31)]
        elif name == "tilt":
            import cv2

            seq = [cv2.warpPerspective(img, tilt_matrix(0.75 * (i - 15), 32, 32), (32, 32)) for i in range(31)]
        out.append(np.stack(seq))
    return np.stack(out)


def rate(fn, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="images per measurement")
    args = parser.parse_args()

    from pushpull.data.perturbations import perturb

    images = np.random.default_rng(0).integers(0, 256, (args.n, 32, 32, 3), dtype=np.uint8)
    print(f"{'perturbation':16s} {'ours seq/s':>11s} {'reference seq/s':>16s} {'speed-up':>9s} {'CIFAR-10-P':>11s}")
    for name in ("gaussian_noise", "rotate", "tilt"):
        perturb(images[:2], name), reference_frames(images[:2], name)  # warm up imports
        ours = rate(lambda: perturb(images, name))
        ref = rate(lambda: reference_frames(images, name))
        print(f"{name:16s} {args.n / ours:11.0f} {args.n / ref:16.0f} {ref / ours:8.1f}x {ours / args.n * 1e4:10.0f}s")


if __name__ == "__main__":
    main()
