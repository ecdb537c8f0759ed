"""The model zoo: every network of the paper in every variant, behind one registry.

``create_model(name, **options)``, ``list_models(pattern)``, ``convert(model, scope)`` for
any ConvNet, ``load_model(spec)`` (the one resolver: saved model, original checkpoint,
registry/torchvision/timm name + weights -> model, normalisation, origin), ``save_model``
(safetensors + JSON sidecar) and ``import_official`` for the original authors' checkpoints.
"""

from .convert import ConversionReport, Replacement, convert, to_push_pull, trace_convolutions
from .io import UnsafeCheckpointError, read_metadata, save_model
from .load import LoadedModel, import_official, load_model
from .registry import ModelInfo, canonical_name, create_model, list_models, model_info

__all__ = [
    "ConversionReport", "LoadedModel", "ModelInfo", "Replacement", "UnsafeCheckpointError", "canonical_name",
    "convert", "create_model", "import_official", "list_models", "load_model", "model_info", "read_metadata",
    "save_model", "to_push_pull", "trace_convolutions",
]
