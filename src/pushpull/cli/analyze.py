"""``pushpull analyze``: response maps under noise, frequency tuning, weight and activation sparsity."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from . import UsageError
from ._options import add_data, add_normalization, add_seed, add_severities, positive_int



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
    add_normalization(common, "default: the model's metadata, else --dataset's, else the architecture's: docs/models.md")
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
    """``--noise``: any corruption, or a noise by its short name (``gaussian``); the rule is the library's."""
    from ..analysis import noise_corruption

    try:
        return noise_corruption(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _load_model(spec: str, args: argparse.Namespace):  # noqa: ANN202 - (nn.Module, label, mean, std)
    """Any model ``pushpull.load_model`` takes (a name gets random weights), with its normalisation."""
    from ..models import load_model

    try:
        loaded = load_model(spec, dataset=getattr(args, "dataset", None), mean=args.mean, std=args.std,
                            allow_pickle=args.allow_pickle)
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"cannot load model {spec!r}: {e}") from None
    if loaded.info.weights is None:
        print(f"note: {spec} is the {loaded.info.kind.value}'s architecture with random weights", file=sys.stderr)
    return loaded.model, loaded.info.label, loaded.normalization.mean, loaded.normalization.std


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
    from ..analysis import image_from_spec, is_test_index

    if is_test_index(args.image) and args.data is None:
        raise UsageError(f"--image {args.image} is a test-set index: give the dataset with --data")
    try:
        return image_from_spec(args.image, lambda: _test_set(args), f"{args.dataset} test set")
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"--image {e}") from None


def _run_responses(args: argparse.Namespace) -> int:
    from .._files import write_json
    from ..analysis import filter_responses, mean_correlations, most_similar_channels, noisy_versions, plot_responses
    from ..engine.evaluate import Normalize

    specs = args.models + ([args.compare] if args.compare else [])
    if len(specs) > 2:
        raise UsageError(f"responses compares at most two models, got {len(specs)}")
    noise = args.noise
    image, description, index = _image(args)
    models = _load_models(specs, args)
    layers = _layer_names(models, args)
    images = noisy_versions(image[None], noise, args.severities, seed=args.seed, indices=[index])[0]
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
        if args.data is None:
            raise UsageError("--average needs the test set: give it with --data")
        try:
            report["mean_over_test_images"] = mean_correlations(responses, _test_set(args)[0], noise,
                                                                args.severities, args.average, seed=args.seed)
        except ValueError as e:
            raise ValueError(f"--average: {e}") from None
    titles = ["clean"] + [f"{noise} s{s}" for s in args.severities]
    plot_responses(images, titles, results, str(args.out / "responses.png"))
    write_json(args.out / "responses.json", report)
    for r in results:
        print(f"{r.label} {r.layer}[{r.channel}]: correlation with clean "
              + " ".join(f"{c:.3f}" for c in r.correlations))
    for label, mean in report.get("mean_over_test_images", {}).get("correlation_with_clean", {}).items():
        print(f"{label}: mean over {args.average} test images " + " ".join(f"{c:.3f}" for c in mean))
    print(f"wrote {args.out / 'responses.png'} and {args.out / 'responses.json'}")
    return 0


def _run_spectrum(args: argparse.Namespace) -> int:
    import numpy as np

    from .._files import write_json
    from ..analysis import frequency_response, plot_spectrum

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
    write_json(args.out / "spectrum.json",
               {"contrast": args.contrast, "models": {label: s.to_json() for label, s in spectra}})
    for label, spec in spectra:
        op = "push_pull" if "push_pull" in spec.responses else "conv"
        peaks = [spec.summary(op, c) for c in range(spec.responses[op].shape[0])]
        print(f"{label} {spec.layer} ({op}): median preferred frequency "
              f"{np.median([p['peak_frequency'] for p in peaks]):.3f} cycles/pixel, median half-height bandwidth "
              f"{np.median([p['half_height_bandwidth'] for p in peaks]):.3f}")
    print(f"wrote {args.out / 'spectrum.png'} and {args.out / 'spectrum.json'}")
    return 0


def _run_weights(args: argparse.Namespace) -> int:
    from .._files import write_json
    from ..analysis import DEFAULT_THRESHOLDS, measure_sparsity, plot_sparsity
    from ..data.generate import select_indices
    from ..engine.evaluate import Normalize

    thresholds = args.thresholds or DEFAULT_THRESHOLDS
    if any(t < 0 for t in thresholds):
        raise UsageError(f"--thresholds must be non-negative, got {list(thresholds)}")
    batch = None
    if args.data is not None:
        images, _ = _test_set(args)
        # The test set is ordered by class: spread the subset over it.
        batch = images[select_indices(len(images), args.num_images)]
    weights, acts, report = {}, {}, {}
    for model, label, mean, std in _load_models(args.models, args):
        try:
            measured = measure_sparsity(model, args.layers, None if batch is None else Normalize(mean, std)(batch),
                                        args.activations, thresholds)
        except ValueError as e:
            raise UsageError(f"{label}: {e}") from None
        weights[label], acts[label], report[label] = measured.weights, measured.activations, measured.to_json()
    plot_sparsity(weights, acts, str(args.out / "weights.png"))
    write_json(args.out / "weights.json", {"thresholds": list(thresholds), "models": report})
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
