"""pushpull: inhibition-augmented (push-pull) ConvNets and the CIFAR-10-C/-P, ImageNet-C/-P robustness benchmarks.

The public API (``help(pushpull.NAME)`` for each; the command line ``pushpull --help`` does the same work):

Layer
    PushPullConv2d              drop-in for ``nn.Conv2d``: a kernel minus its larger, inverted copy
    push_pull_conv2d            the layer as a function (exact fast paths)
    push_pull_conv2d_reference  the naive two-convolution definition the fast paths are tested against
    pull_kernel                 the pull (inhibitory) kernel derived from a push kernel
    pull_kernel_size            the side of that pull kernel for a push size and scale

Models
    create_model                build a network of the zoo ("resnet20_b1", "ResNet-20-b1", aa=3 ...)
    list_models                 the zoo's names, optionally filtered by a pattern
    convert                     give any ConvNet push-pull layers (in place), report what changed
    save_model                  write weights (safetensors) and a JSON sidecar that rebuilds the model
    load_model                  the one resolver: a saved model, original checkpoint or name + weights
                                -> LoadedModel (model, input normalisation, where it came from)
    LoadedModel                 what load_model returns
    list_weights                the pretrained weights pushpull knows (the original authors', yours)
    get_weights                 one weights entry: URL, sha256, normalisation, measured error, ...

Robustness benchmarks
    corrupt                     one of the 19 corruptions at severity 1-5 on uint8 images (numpy or torch)
    CORRUPTIONS                 the 19 corruption names (the 15 of mCE first)
    Corrupt                     a corruption as a torchvision v2 transform (PIL, tensor or array, any size)
    RandomCorrupt               a random corruption and severity per sample, for training with corruptions
    corrupt_image               imagecorruptions' call: one image of any size (>= 32), seeded
    get_corruption_names        imagecorruptions' name lists ("common", "validation", "all", a family)
    perturb                     the -P perturbation sequences of uint8 images
    evaluate                    clean error, -C errors and -P flip statistics of a model: a results dict
    write_report                the paper's tables and Figure 3 from results files

Training
    train                       train a model of the zoo or any module with a recipe of the paper
    load_recipe                 a shipped training recipe (or a JSON file), with overrides
    list_recipes                the names of the shipped recipes

Submodules hold the rest: ``pushpull.metrics`` (E, CE, rCE, FP, FR), ``pushpull.data``,
``pushpull.models``, ``pushpull.engine``, ``pushpull.analysis``.
"""

from .layers import PushPullConv2d, pull_kernel, pull_kernel_size, push_pull_conv2d, push_pull_conv2d_reference

__version__ = "0.1.0"

# Lazily imported public names (name -> submodule), so `import pushpull` stays light.
_LAZY = {
    "create_model": "models",
    "list_models": "models",
    "convert": "models",
    "save_model": "models",
    "load_model": "models",
    "LoadedModel": "models",
    "list_weights": "models",
    "get_weights": "models",
    "corrupt": "data.corruptions",
    "CORRUPTIONS": "data.corruptions",
    "Corrupt": "transforms",
    "RandomCorrupt": "transforms",
    "corrupt_image": "data.corruptions.any_size",
    "get_corruption_names": "data.corruptions.any_size",
    "perturb": "data.perturbations",
    "evaluate": "engine.evaluate",
    "write_report": "report",
    "train": "engine.train",
    "load_recipe": "recipes",
    "list_recipes": "recipes",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names and the lazy ones, so ``dir(pushpull)``, completion and ``help`` show them."""
    return sorted({*globals(), *_LAZY})


__all__ = [
    "PushPullConv2d",
    "pull_kernel",
    "pull_kernel_size",
    "push_pull_conv2d",
    "push_pull_conv2d_reference",
    *_LAZY,
    "__version__",
]
