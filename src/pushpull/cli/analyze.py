"""``pushpull analyze``: response maps under noise, frequency tuning, weight and activation sparsity."""

from __future__ import annotations

import argparse
import functools
import pickle
import sys
from collections.abc import Callable
from pathlib import Path

from . import UsageError
from ._options import add_data, add_normalization, add_seed, add_severities, positive_int

CHECKPOINT_SUFFIXES = (".pth", ".pth.tar", ".pt", ".ckpt", ".safetensors")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "analyze", help="why push-pull helps: response maps, frequency response, sparsity",
        description="Analyses of the paper's Figs. 2 and 4 for any model. MODEL is a saved model "
                    "(.safetensors), a registry name, or an official checkpoint (.pth.tar, or its folder; "
                    "needs --allow-pickle). Each command writes a PNG figure and a JSON file to --out.")
    commands = parser.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", type=Path, default=Path("analysis"), help="output folder (default: ./analysis)")
    common.add_argument("--allow-pickle", action="store_true",
                        help="allow a full unpickle of a checkpoint that cannot be read safely: it can run code, trust the file first")
    add_normalization(common, "default: the saved model's, else CIFAR-10's")
    data = argparse.ArgumentParser(add_help=False)
    add_data(data, "CIFAR root folder (holding cifar-10-batches-py)")
    data.add_argument("--dataset", choices=("cifar10", "cifar100"), default="cifar10")

    p = commands.add_parser(
        "responses", parents=[common, data], help="response maps of one filter on an image under noise (Fig. 2)",
        description="Response maps of one filter of MODEL (and of the most similar filter of a second model) "
                    "on an image and its noisy versions, with each map's correlation with the clean one.")
    p.add_argument("models", nargs="+", metavar="MODEL", help="one or two models (or use --compare)")
    p.add_argument("--compare", metavar="MODEL2", help="second model, shown below the first")
    p.add_argument("--layer", nargs="+", help="convolution to analyse, by module name: one for all models or "
                   "one per model (default: the first convolution)")
    p.add_argument("--image", required=True, help="an image file, or a test-set index with --data")
    p.add_argument("--noise", type=noise_name, default="gaussian_noise", help="corruption name (gaussian, shot, impulse, speckle, or any "
                   "corruption of pushpull.data.corruptions; default gaussian)")
    add_severities(p, "comma list of noise severities (default: 1,2,3,4,5)")
    add_seed(p, "noise seed")
    p.add_argument("--channel", type=int, nargs="+",
                   help="output channel per model (default: the pair of most similar kernels)")
    p.add_argument("--average", type=positive_int, metavar="N", help="with --data: also the mean correlations over N "
                   "test images spread over the set (same filters, same noise)")
    p.add_argument("--components", action="store_true",
                   help="also show a push-pull filter's push and pull maps (ReLU(push), alpha * ReLU(pull))")
    p.set_defaults(func=_run_responses)

    p = commands.add_parser(
        "spectrum", parents=[common], help="frequency/orientation tuning of push, pull and push-pull, on gratings",
        description="Responses of every channel of a layer that sees the image to sinusoidal gratings of "
                    "varying frequency and orientation: push, pull and the combined push-pull operator "
                    "(or the rectified convolution of a plain model).")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("--channels", type=int, nargs="+", help="channels to plot (default: all; the JSON has all)")
    p.add_argument("--layer", nargs="+", help="convolution to analyse, by module name: one for all models or "
                   "one per model (default: the first convolution)")
    p.add_argument("--frequencies", type=positive_int, default=20, help="number of frequencies in (0, 0.5] cycles/pixel")
    p.add_argument("--orientations", type=positive_int, default=12, help="number of orientations in [0, 180) degrees")
    p.add_argument("--contrast", type=float, default=0.25, help="grating amplitude in [0, 1] pixel units")
    p.set_defaults(func=_run_spectrum)

    p = commands.add_parser(
        "weights", parents=[common, data], help="weight histograms and sparsity; activation sparsity (Fig. 4)",
        description="Histograms and sparsity statistics (near-zero fractions, Hoyer sparsity, excess kurtosis) "
                    "of the weights of chosen layers and, with --data, of the first block's activations.")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("--layers", nargs="+", help="layer names or glob patterns (e.g. 'layer1.*'; 'first' is the "
                   "first convolution; default: first)")
    p.add_argument("--thresholds", type=float, nargs="+", help="near-zero thresholds for |value| "
                   "(default: 0.001 0.01 0.05 0.1)")
    p.add_argument("--activations", nargs="+", metavar="MODULE", help="modules whose outputs are measured "
                   "with --data (default: the activation after the first convolution, if any, and the first block)")
    p.add_argument("--num-images", type=positive_int, default=500, help="test images for activations (spread over the set)")
    p.set_defaults(func=_run_weights)


def noise_name(text: str) -> str:
    """The corruption ``--noise`` names: any corruption, or a noise by its short name (``gaussian``)."""
    from .._names import unknown_name_message
    from ..data.corruptions import CORRUPTIONS

    for name in (text, f"{text}_noise"):
        if name in CORRUPTIONS:
            return name
    short = [n.removesuffix("_noise") for n in CORRUPTIONS if n.endswith("_noise")]
    raise argparse.ArgumentTypeError(unknown_name_message("corruption", text, short + list(CORRUPTIONS)))


def _load_model(spec: str, args: argparse.Namespace):  # noqa: ANN202 - (nn.Module, label, mean, std)
    """A model from a saved file, an official checkpoint, or the registry; with its normalisation."""
    from ..data.constants import CIFAR10_MEAN, CIFAR10_STD
    from ..models import UnsafeCheckpointError, create_model, import_official, load_model

    path = Path(spec)
    label, meta = path.name.split(".")[0], {}
    if path.is_file() and label in ("model_best", "checkpoint"):  # the original code's names: the folder says more
        label = path.parent.name
    try:
        if path.is_dir():
            candidates = sorted(p for p in path.iterdir() if p.name.endswith(CHECKPOINT_SUFFIXES))
            if len(candidates) != 1:
                raise UsageError(f"{path}: expected one checkpoint in the folder, found {len(candidates)}")
            path = candidates[0]
        if path.suffix in (".safetensors", ".json"):
            model, meta = load_model(path.with_suffix(".safetensors"))
        elif path.is_file():
            model = import_official(path, allow_pickle=args.allow_pickle)  # original checkpoints: CIFAR-10 inputs
        else:
            model, label = create_model(spec), spec
            print(f"note: {spec} is the registry's architecture with random weights", file=sys.stderr)
    except (UnsafeCheckpointError, FileNotFoundError, ValueError, KeyError, RuntimeError, EOFError,
            pickle.UnpicklingError) as e:  # what torch.load and the importer raise for a bad file
        raise ValueError(f"cannot load model {spec!r}: {e}") from None
    norm = meta.get("normalization") or {}
    mean = args.mean or norm.get("mean") or CIFAR10_MEAN
    std = args.std or norm.get("std") or CIFAR10_STD
    return model.eval(), label, tuple(mean), tuple(std)


def _load_models(specs: list[str], args: argparse.Namespace) -> list:
    models = [_load_model(spec, args) for spec in specs]
    labels = [m[1] for m in models]
    for i, label in enumerate(labels):  # keep labels unique, they key the JSON
        if labels.count(label) > 1:
            models[i] = (models[i][0], f"{label}#{i + 1}", *models[i][2:])
    return models


def _layer_names(models: list, args: argparse.Namespace) -> list[str]:
    """The ``--layer`` of each model (one name for all, or one per model); the first convolution by default."""
    from ..analysis import select_layers

    names = args.layer or [None]
    if len(names) not in (1, len(models)):
        raise UsageError(f"--layer takes one name or one per model ({len(models)}), got {len(names)}")
    try:
        return [next(iter(select_layers(m[0], [n] if n else None))) for m, n in
                zip(models, names * len(models) if len(names) == 1 else names)]
    except ValueError as e:
        raise UsageError(str(e)) from None


def _test_set(args: argparse.Namespace):  # noqa: ANN202 - (uint8 (N, 32, 32, 3), int64 (N,))
    return _read_test_set(Path(args.data), args.dataset)


@functools.lru_cache(maxsize=1)
def _read_test_set(root: Path, dataset: str):  # noqa: ANN202 - read once per command
    from ..data.cifar import load_cifar

    return load_cifar(root, train=False, dataset=dataset)


def _image(args: argparse.Namespace):  # noqa: ANN202 - (uint8 (H, W, 3), description, index for the noise)
    import numpy as np

    spec = args.image
    if spec.isdigit() and not Path(spec).exists():
        if args.data is None:
            raise UsageError(f"--image {spec} is a test-set index: give the dataset with --data")
        images, labels = _test_set(args)
        index = int(spec)
        if index >= len(images):
            raise UsageError(f"--image {index} out of range: the {args.dataset} test set has {len(images)} images")
        return images[index], f"{args.dataset} test #{index} (label {int(labels[index])})", index
    from ..data.robustness_sets import read_image

    return np.asarray(read_image(spec)), Path(spec).name, 0


def _noisy(image, index: int, name: str, args: argparse.Namespace):  # noqa: ANN001, ANN202 - (1 + S, H, W, 3)
    """The image, then its corrupted versions at each severity (a test image gets its own random stream)."""
    import numpy as np

    from ..data.corruptions import corrupt

    params = "cifar" if max(image.shape[:2]) <= 64 else "imagenet"
    return np.stack([image, *(corrupt(image[None], name, s, seed=args.seed, indices=[index], params=params)[0]
                              for s in args.severities)])


def _run_responses(args: argparse.Namespace) -> int:
    from ..analysis import filter_responses, most_similar_channels
    from ..analysis._figures import write_json
    from ..analysis.responses import plot_responses
    from ..engine.evaluate import Normalize

    specs = args.models + ([args.compare] if args.compare else [])
    if len(specs) > 2:
        raise UsageError(f"responses compares at most two models, got {len(specs)}")
    noise = args.noise
    image, description, index = _image(args)
    models = _load_models(specs, args)
    layers = _layer_names(models, args)
    images = _noisy(image, index, noise, args)
    similarity = None
    if args.channel:
        if len(args.channel) != len(models):
            raise UsageError(f"--channel needs one index per model ({len(models)}), got {len(args.channel)}")
        channels = args.channel
    elif len(models) == 2:
        a, b = (m[0].get_submodule(n) for m, n in zip(models, layers))
        try:
            i, j, similarity = most_similar_channels(a, b)
        except ValueError as e:
            raise UsageError(str(e)) from None
        channels = [i, j]
    else:
        channels = [0]

    def responses(stack):  # noqa: ANN001, ANN202 - uint8 (1 + S, H, W, 3) -> list[ResponseSet]
        out = []
        for (model, label, mean, std), layer, channel in zip(models, layers, channels):
            try:
                out += filter_responses(model, layer, channel, Normalize(mean, std)(stack), label, args.components)
            except ValueError as e:
                raise UsageError(str(e)) from None
        return out

    results = responses(images)
    report = {"image": description, "noise": noise, "severities": args.severities, "seed": args.seed,
              "kernel_cosine_similarity": similarity, "filters": [r.to_json() for r in results]}
    if args.average:
        report["mean_over_test_images"] = _average_correlations(responses, noise, args)
    titles = ["clean"] + [f"{noise} s{s}" for s in args.severities]
    plot_responses(images, titles, results, str(args.out / "responses.png"))
    write_json(report, args.out / "responses.json")
    for r in results:
        print(f"{r.label} {r.layer}[{r.channel}]: correlation with clean "
              + " ".join(f"{c:.3f}" for c in r.correlations))
    for label, mean in report.get("mean_over_test_images", {}).get("correlation_with_clean", {}).items():
        print(f"{label}: mean over {args.average} test images " + " ".join(f"{c:.3f}" for c in mean))
    print(f"wrote {args.out / 'responses.png'} and {args.out / 'responses.json'}")
    return 0


def _average_correlations(responses: Callable, noise: str, args: argparse.Namespace) -> dict:
    """Mean correlation with the clean response over ``--average`` test images spread over the set."""
    import numpy as np

    from ..data.corruptions import corrupt
    from ..engine.evaluate import strided_indices

    if args.data is None:
        raise UsageError("--average needs the test set: give it with --data")
    test, _ = _test_set(args)
    index = strided_indices(len(test), args.average)
    noisy = [corrupt(test[index], noise, s, seed=args.seed, indices=index) for s in args.severities]
    collected: dict[str, list[list[float]]] = {}
    for k, i in enumerate(index):
        for r in responses(np.stack([test[i], *(n[k] for n in noisy)])):
            collected.setdefault(r.label, []).append(r.correlations)
    return {"images": len(index), "indices": index.tolist(),
            "correlation_with_clean": {label: np.mean(c, 0).tolist() for label, c in collected.items()}}


def _run_spectrum(args: argparse.Namespace) -> int:
    import numpy as np

    from ..analysis import frequency_response
    from ..analysis._figures import write_json
    from ..analysis.spectrum import plot_spectrum

    if args.frequencies < 2 or args.orientations < 1 or not 0 < args.contrast <= 0.5:
        raise UsageError("need --frequencies >= 2, --orientations >= 1 and 0 < --contrast <= 0.5")
    frequencies = np.linspace(0.5 / args.frequencies, 0.5, args.frequencies)
    orientations = np.arange(args.orientations) * 180.0 / args.orientations
    spectra = []
    models = _load_models(args.models, args)
    for (model, label, _, std), name in zip(models, _layer_names(models, args)):
        try:
            spectra.append((label, frequency_response(model.get_submodule(name), std, name=name,
                                                      frequencies=frequencies, orientations=orientations,
                                                      contrast=args.contrast)))
        except ValueError as e:
            raise UsageError(str(e)) from None
        channels = next(iter(spectra[-1][1].responses.values())).shape[0]
        if args.channels and not all(0 <= c < channels for c in args.channels):
            raise UsageError(f"--channels out of range: {label} {name} has {channels} channels")
    plot_spectrum(spectra, str(args.out / "spectrum.png"), args.channels)
    write_json({"contrast": args.contrast, "models": {label: s.to_json() for label, s in spectra}},
               args.out / "spectrum.json")
    for label, spec in spectra:
        op = "push_pull" if "push_pull" in spec.responses else "conv"
        peaks = [spec.summary(op, c) for c in range(spec.responses[op].shape[0])]
        print(f"{label} {spec.layer} ({op}): median preferred frequency "
              f"{np.median([p['peak_frequency'] for p in peaks]):.3f} cycles/pixel, median half-height bandwidth "
              f"{np.median([p['half_height_bandwidth'] for p in peaks]):.3f}")
    print(f"wrote {args.out / 'spectrum.png'} and {args.out / 'spectrum.json'}")
    return 0


def _run_weights(args: argparse.Namespace) -> int:
    import numpy as np

    from ..analysis import first_block, select_layers, sparsity_stats
    from ..analysis._figures import write_json
    from ..analysis.sparsity import DEFAULT_THRESHOLDS, activations, plot_sparsity, stem_activation, weight_values
    from ..engine.evaluate import Normalize, strided_indices

    thresholds = args.thresholds or DEFAULT_THRESHOLDS
    if any(t < 0 for t in thresholds):
        raise UsageError(f"--thresholds must be non-negative, got {list(thresholds)}")
    batch = None
    if args.data is not None:
        images, _ = _test_set(args)
        # The test set is ordered by class: spread the subset over it.
        batch = images[strided_indices(len(images), args.num_images)]
    weights, acts, report = {}, {}, {}
    for model, label, mean, std in _load_models(args.models, args):
        try:
            layers = select_layers(model, args.layers)
        except ValueError as e:
            raise UsageError(str(e)) from None
        values = weight_values(layers)
        weights[label] = values
        entry = {"layers": {n: sparsity_stats(v, thresholds) for n, v in values.items()},
                 "all_layers": sparsity_stats(np.concatenate(list(values.values())), thresholds)}
        if batch is not None:
            x = Normalize(mean, std)(batch)
            try:
                modules = args.activations or [m for m in (stem_activation(model), first_block(model)) if m]
                acts[label] = {m: activations(model, m, x).ravel() for m in modules}
            except (ValueError, AttributeError) as e:
                raise UsageError(f"{label}: activations: {e}") from None
            entry["activations"] = {m: {"images": len(batch), **sparsity_stats(v, thresholds)}
                                    for m, v in acts[label].items()}
        report[label] = entry
    plot_sparsity(weights, acts, str(args.out / "weights.png"))
    write_json({"thresholds": list(thresholds), "models": report}, args.out / "weights.json")
    for label, entry in report.items():
        w = entry["all_layers"]
        kurtosis = "undefined" if w["excess_kurtosis"] is None else f"{w['excess_kurtosis']:.2f}"
        line = (f"{label} weights of {', '.join(entry['layers'])}: Hoyer {w['hoyer']:.3f}, "
                f"excess kurtosis {kurtosis}, |w|<={thresholds[0]:g}: {next(iter(w['fraction_near_zero'].values())):.3f}")
        for module, a in entry.get("activations", {}).items():
            line += f"; activations of {module}: zero {a['fraction_zero']:.3f}, Hoyer {a['hoyer']:.3f}"
        print(line)
    print(f"wrote {args.out / 'weights.png'} and {args.out / 'weights.json'}")
    return 0
