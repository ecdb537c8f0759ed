"""The model zoo: every network of the paper in every variant, behind one registry.

``create_model(name, pretrained=..., **options)``, ``list_models(pattern)``, ``convert(model,
scope)`` for any ConvNet, ``load_model(spec)`` (the one resolver: saved model, original
checkpoint, weights name, registry/torchvision/timm name + weights -> model, normalisation,
origin), ``save_model`` (safetensors + JSON sidecar), ``import_official`` for the original
authors' checkpoints, and ``list_weights()``/``get_weights(name)``: pretrained weights and
their metadata."""

from .convert import ConversionReport, Replacement, convert, to_push_pull, trace_convolutions
from .io import UnsafeCheckpointError, read_metadata, save_model
from .load import LoadedModel, import_official, load_model
from .registry import ModelInfo, canonical_name, create_model, list_models, model_info
from .weights import Weights, get_weights, list_weights

__all__ = [
    "ConversionReport", "LoadedModel", "ModelInfo", "Replacement", "UnsafeCheckpointError", "Weights",
    "canonical_name", "convert", "create_model", "get_weights", "import_official", "list_models", "list_weights",
    "load_model", "model_info", "read_metadata", "save_model", "to_push_pull", "trace_convolutions",
]
