"""pushpull: inhibition-augmented ConvNets and robustness benchmarks (-C / -P)."""

from .layers import PushPullConv2d, pull_kernel, pull_kernel_size, push_pull_conv2d, push_pull_conv2d_reference

__version__ = "0.1.0"

# Lazily imported public names (name -> submodule), so `import pushpull` stays light.
_LAZY = {"create_model": "models", "list_models": "models", "convert": "models", "load_model": "models",
         "LoadedModel": "models", "list_weights": "models", "get_weights": "models", "evaluate": "engine.evaluate",
         "corrupt": "data.corruptions", "CORRUPTIONS": "data.corruptions", "train": "engine.train",
         "load_recipe": "recipes", "list_recipes": "recipes"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PushPullConv2d",
    "pull_kernel",
    "pull_kernel_size",
    "push_pull_conv2d",
    "push_pull_conv2d_reference",
    *_LAZY,
    "__version__",
]
