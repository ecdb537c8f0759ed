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
next repeat), as CPU seconds of this one-threaded process (torch, OpenCV set to 1 thread); the
median of ``--repeats`` rounds is kept, and each speed-up is the median of the rounds' ratios, so a
shared machine's load hits both alike and idle waits do not count. One run prints:

- ImageNet-P: ms per sequence per perturbation on a 256x341 image (a val image resized to 256, the
  commonest 4:3 shape) cropped to 224 px frames, ours vs the reference way, the total and the ratio;
  the time of the random draws alone that define each random sequence (our generator's own Generator
  calls, recorded and replayed: same methods, sizes, dtypes and streams) and the best speed-up those
  draws leave possible (reference / draws, everything else free); and the projected core-hours for all 50 000 val images (the reference ``make_imagenet_p.py`` loops
  over the whole val folder) and per 10 000 images;
- CIFAR-10-P: ms per image per perturbation on real CIFAR-10 test images when ``--cifar`` names a
  ``cifar-10-batches-py`` folder (random 32x32 images otherwise), and the projection of the full set
  (10 000 images x the 10 benchmark perturbations) in core-seconds and in wall seconds on 2 cores.

    python benchmarks/perturbation_speed.py [--repeats 5] [--cifar DIR] [--cifar-images 200] [--skip-cifar]
"""

from __future__ import annotations

import argparse
import functools
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


def interleaved(jobs: dict[str, tuple], repeats: int) -> list[dict[str, np.ndarray]]:
    """CPU seconds of each callable of each name (ours, the reference, ...) in every round, timed one after the
    other, round by round: one (repeats,) array per callable and name."""
    times = [{n: np.empty(repeats) for n in jobs} for _ in next(iter(jobs.values()))]
    for fns in jobs.values():  # warm-up: imports, first-call set-up, kernel builds, caches
        for fn in fns:
            fn()
    for r in range(repeats):
        for name, fns in jobs.items():
            for column, fn in zip(times, fns):
                column[name][r] = seconds(fn)
    return times


def total(column: dict[str, np.ndarray], names) -> np.ndarray:  # noqa: ANN001
    """Per-round sums over ``names``."""
    return np.sum([column[n] for n in names], axis=0)


class RecordingStream:
    """A numpy Generator that notes every draw made from it (method, arguments), for :func:`draws_only`."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng, self.calls = rng, []

    def __getattr__(self, name: str):  # noqa: ANN204
        attr = getattr(self._rng, name)
        if not callable(attr):  # bit_generator: its state moves are bookkeeping, not draws
            return attr

        def call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            self.calls.append((name, args, kwargs))
            return attr(*args, **kwargs)

        return call


def draws_only(run, name: str):  # noqa: ANN001, ANN201
    """A callable that makes exactly the random draws ``run()`` makes for perturbation ``name`` (the same
    Generator methods, sizes and dtypes, on the same streams) and nothing else; None if it makes none.

    The draws are recorded once from the real generator (its streams wrapped in :class:`RecordingStream`),
    then replayed into preallocated buffers: the time of the draws alone that define the sequence.
    """
    from unittest import mock

    from pushpull.data import _sequence_native, perturbations, sequence_kernels
    from pushpull.data.streams import image_stream

    streams: list[tuple[tuple, RecordingStream]] = []

    def recording(*key):  # noqa: ANN002, ANN202
        streams.append((key, RecordingStream(image_stream(*key))))
        return streams[-1][1]

    def noted(fill):  # noqa: ANN001, ANN202
        """The C fills (``_sequence_native.uniforms`` / ``standard_normals``) draw from the stream's bit
        generator without a Generator method: noted as draws too."""
        def call(rng, out):  # noqa: ANN001, ANN202
            if isinstance(rng, RecordingStream):
                rng.calls.append((fill, (), {"out": out}))
            return fill(rng, out)

        return call

    def noted_loop(sequential):  # noqa: ANN001, ANN202
        """The C block loop (``_sequential``'s ``drawn``) draws its uniforms itself: noted as a fill of the
        uniforms it consumed."""
        def call(rng, n, expected, kernel, fill=None, drawn=None):  # noqa: ANN001, ANN202
            if isinstance(rng, RecordingStream) and drawn is not None:
                def drawn_and_noted(state, block, inner=drawn):  # noqa: ANN001, ANN202
                    consumed = inner(state, block)
                    if consumed >= 0:
                        rng.calls.append((_sequence_native.uniforms, (), {"out": np.empty(consumed)}))
                    return consumed

                return sequential(rng, n, expected, kernel, fill, drawn_and_noted)
            return sequential(rng, n, expected, kernel, fill, drawn)

        return call

    with mock.patch.object(perturbations, "image_stream", recording), \
            mock.patch.object(_sequence_native, "uniforms", noted(_sequence_native.uniforms)), \
            mock.patch.object(_sequence_native, "_sequential", noted_loop(_sequence_native._sequential)), \
            mock.patch.object(sequence_kernels, "standard_normals", noted(sequence_kernels.standard_normals)):
        run()
    replay = [(key, [(method, args, {k: np.empty_like(v) if k == "out" else v for k, v in kwargs.items()})
                     for method, args, kwargs in stream.calls]) for key, stream in streams]
    if not any(calls for _, calls in replay):
        return None

    def draw() -> None:
        for key, calls in replay:
            rng = image_stream(*key)
            for method, args, kwargs in calls:
                if callable(method):
                    method(rng, *args, **kwargs)
                else:
                    getattr(rng, method)(*args, **kwargs)

    return draw


def imagenet_table(repeats: int) -> None:
    from pushpull.data.perturbations import PERTURBATIONS, VALIDATION_PERTURBATIONS, perturb

    names = PERTURBATIONS + VALIDATION_PERTURBATIONS
    image = np.random.default_rng(0).integers(0, 256, (256, 341, 3), dtype=np.uint8)
    jobs = {}
    for n in names:
        ours = functools.partial(perturb, image[None], n, params="imagenet", crop=224)
        draws = draws_only(ours, n)
        jobs[n] = (ours, numpy_only(functools.partial(reference_sequence, image, n, "imagenet", 224)),
                   draws or (lambda: None))
    ours, ref, draws = interleaved(jobs, repeats)
    ms = {k: 1e3 * np.median(v) for k, v in ours.items()}
    print(f"ImageNet-P: one 256x341 image -> 224 px frames, ms CPU per sequence, median of {repeats} interleaved "
          f"rounds (speed-up: median of the rounds' ratios); draws: the random draws alone that define the sequence, "
          f"as our generator makes them (same Generator calls, sizes, streams); rest: ours - draws")
    print(f"{'perturbation':15s} {'ours':>8s} {'reference':>10s} {'speed-up':>9s} {'draws':>7s} {'rest':>7s}")
    for name in names:
        d = 1e3 * np.median(draws[name])
        print(f"{name:15s} {ms[name]:8.1f} {1e3 * np.median(ref[name]):10.1f} "
              f"{np.median(ref[name] / ours[name]):8.1f}x {d:7.1f} {ms[name] - d:7.1f}")
    o, r, d = total(ours, names), total(ref, names), total(draws, names)
    print(f"{'all ' + str(len(names)):15s} {1e3 * np.median(o):8.1f} {1e3 * np.median(r):10.1f} "
          f"{np.median(r / o):8.1f}x {1e3 * np.median(d):7.1f} {1e3 * np.median(o - d):7.1f}")
    print(f"Bound with these streams: the draws alone take {1e3 * np.median(d):.0f} ms of the {len(names)} sequences, "
          f"so with everything else free the best possible speed-up is reference / draws = {np.median(r / d):.1f}x; "
          f"10x needs all {len(names)} in {1e3 * np.median(r) / 10:.0f} ms, "
          f"i.e. {1e3 * np.median(r / 10 - d):.0f} ms for everything but the draws (now {1e3 * np.median(o - d):.0f})")
    for label, keys in (("10 benchmark", PERTURBATIONS), (f"all {len(names)}", names)):
        o, r = np.median(total(ours, keys)), np.median(total(ref, keys))
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
                numpy_only(lambda n=n: [reference_sequence(x, n, "cifar", None) for x in few]))
            for n in PERTURBATIONS}
    ours, ref = interleaved(jobs, repeats)
    ratio = {k: np.median(ref[k] / len(few) / (ours[k] / len(images))) for k in PERTURBATIONS}
    ours = {k: np.median(v) / len(images) for k, v in ours.items()}
    ref = {k: np.median(v) / len(few) for k, v in ref.items()}
    print(f"CIFAR-10-P: {len(images)} {what} (reference way: {len(few)}), ms CPU per image and sequence")
    print(f"{'perturbation':15s} {'ours':>8s} {'reference':>10s} {'speed-up':>9s}")
    for name in PERTURBATIONS:
        print(f"{name:15s} {ours[name] * 1e3:8.3f} {ref[name] * 1e3:10.3f} {ratio[name]:8.1f}x")
    o, r = sum(ours.values()) * 10_000, sum(ref.values()) * 10_000
    print(f"CIFAR-10-P (10 000 images x 10 perturbations): ours {o:.0f} core-s, {o / 2:.0f} s on 2 cores; "
          f"reference way {r:.0f} core-s, {r / 2:.0f} s on 2 cores (frames only; writing not included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the median of each is kept")
    parser.add_argument("--cifar", help="a folder holding cifar-10-batches-py (default: random 32x32 images)")
    parser.add_argument("--cifar-images", type=int, default=200, help="CIFAR images timed per round (ours)")
    parser.add_argument("--skip-cifar", action="store_true", help="the ImageNet-P table only")
    args = parser.parse_args()

    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    imagenet_table(args.repeats)
    if not args.skip_cifar:
        print()
        cifar_table(args.repeats, args.cifar, args.cifar_images)


if __name__ == "__main__":
    main()
