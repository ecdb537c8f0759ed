"""One way from a model spec to a ready model: :func:`load_model` -> :class:`LoadedModel`.

Everything that takes a model by name or by file (``evaluate``, ``pushpull eval``,
``pushpull analyze``, ``import_official``) resolves it here, so a spec means the same
everywhere. A spec is, checked in this order:

1. an ``nn.Module`` (``weights`` are loaded into it when given);
2. ``torchvision:NAME`` or ``timm:NAME``, built without downloading anything;
3. a folder: the checkpoint in it (:func:`checkpoint_in_folder`), then as 4 or 5;
4. a saved model: ``.safetensors`` or ``.json`` (weights + JSON sidecar, :mod:`.io`);
5. any other file: an original push-pull checkpoint (:mod:`.official`), its architecture
   from its folder or file name or ``arch``;
6. a weights name (``resnet20_pp.official``, or yours: :mod:`.weights`): its saved model,
   fetched, verified and converted into the weights cache the first time;
7. a registry name or paper spelling (``resnet20_pp``, ``ResNet-20-pp``).

Names (2, 7) take ``weights`` (a ``.safetensors`` or ``torch.save`` file of a state dict);
without them the model is randomly initialised and ``info.weights`` is None.

Normalisation: the first rule that applies gives ``LoadedModel.normalization``.

1. explicit ``mean`` and ``std``: what the user typed wins, e.g. for weights trained with
   other statistics than their metadata says;
2. the weights' own metadata: a saved model's sidecar; an original checkpoint's CIFAR-10
   statistics (the original code's transforms);
3. the ``dataset``'s statistics: what pushpull's recipes train with on that dataset
   (a CIFAR-100 ResNet-20 uses CIFAR-100's, while its registry entry, which describes the
   architecture's input, says CIFAR-10's);
4. the architecture's entry: ``ModelInfo.mean/std`` of the registry, ImageNet's for
   torchvision, a timm model's ``pretrained_cfg``;
5. otherwise ``ValueError`` (an ``nn.Module`` with neither statistics nor dataset).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._names import check_name, split_names, unknown_name_message
from ..data.cifar import cifar_normalization
from ..data.constants import IMAGENET_MEAN, IMAGENET_STD
from . import official, weights as weights_table
from .io import (check_fits, file_sha256, read_checkpoint, read_metadata, save_model, sidecar_path, state_dict_in,
                 three_channels)
from .registry import ModelInfo, create_model, is_external, list_models, model_info

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pth.tar", ".pt", ".ckpt")
# In a folder of several checkpoints: a pushpull training run's final model, then the original code's best.
PREFERRED_IN_FOLDER = ("model.safetensors", "model_best.pth.tar")
GENERIC_STEMS = ("model", "model_best", "checkpoint")  # file names that say less than their folder's
DATASETS = ("cifar10", "cifar100", "imagenet")
_SPEC_FORMS = (" (a model is a name `pushpull models` lists, a weights name `pushpull weights list` lists, "
               "torchvision:NAME, timm:NAME, "
               "or an existing saved model, checkpoint or folder)")


class SpecKind(str, Enum):
    """What a spec turned out to be."""

    MODULE = "module"
    SAVED = "saved model"
    OFFICIAL = "original checkpoint"
    REGISTRY = "registry model"
    TORCHVISION = "torchvision model"
    TIMM = "timm model"


@dataclass(frozen=True)
class Normalization:
    """The input normalisation a model expects, in [0, 1] units, and the rule that chose it."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str  # "given", "model metadata", "default for cifar10", "registry entry of resnet20", ...


@dataclass(frozen=True)
class LoadInfo:
    """Where a loaded model came from: what results files and reports record."""

    name: str  # registry name, torchvision:/timm: spec, or the module's class name
    kind: SpecKind
    label: str  # the model's name in reports and figure legends
    spec: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    weights: Path | None = None  # None: randomly initialised, or a module taken as given
    sha256: str = ""  # of the weights file; of the state dict when there is no file
    source: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # a sidecar; an original checkpoint's epoch/best_prec1


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode, the normalisation its inputs need, and where it came from."""

    model: nn.Module
    normalization: Normalization
    info: LoadInfo

    def describe(self) -> dict[str, Any]:
        """The model's entry in a results file."""
        info, norm = self.info, self.normalization
        return {"name": info.name, "spec": info.spec, "label": info.label, "model_kwargs": dict(info.model_kwargs),
                "weights": str(info.weights) if info.weights else None, "weights_sha256": info.sha256,
                "normalization": {"mean": list(norm.mean), "std": list(norm.std), "from": norm.source},
                "source": info.source}


def load_model(spec: str | os.PathLike | nn.Module, *, weights: str | os.PathLike | None = None,
               num_classes: int | None = None, model_kwargs: dict[str, Any] | None = None, arch: str | None = None,
               dataset: str | None = None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
               allow_pickle: bool = False, verify: bool = True,
               device: str | torch.device | None = None) -> LoadedModel:
    """Resolve ``spec`` (see the module docstring for the forms and the normalisation rule).

    ``num_classes`` and ``model_kwargs`` configure a name's builder (for a module they are
    only recorded; a saved model or checkpoint records its own and refuses different ones).
    ``arch`` names an original checkpoint's architecture when its folder name does not.
    ``allow_pickle`` permits a code-running unpickle of a checkpoint that needs one;
    ``verify`` checks a saved model's weights against its sidecar's sha256. ``device``:
    where to put the model (default: the CPU; a given module stays where it is). Nothing
    is downloaded, except a weights name's file the first time it is used (:mod:`.weights`).
    """
    if mean is not None or std is not None:
        normalization(mean, std)  # bad statistics fail before any work
    if dataset is not None:
        check_name(dataset, DATASETS, "dataset")
    kwargs = dict(model_kwargs or {})
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if isinstance(spec, nn.Module):
        model = spec
        info = LoadInfo(type(spec).__name__, SpecKind.MODULE, type(spec).__name__, model_kwargs=kwargs)
        fallback = None
    else:
        text = os.fspath(spec)
        path = _named_file(text)
        named = weights_table.find_weights(text) if path is None else None
        if path is not None or named is not None:
            if weights is not None:
                raise ValueError(f"{text} carries its own weights: weights (--weights) are for registry, "
                                 "torchvision and timm names")
            if named is not None:
                path = weights_table.weights_file(named)  # fetched and converted the first time
            model, info, stats = _saved(path, verify) if path.suffix in (".safetensors", ".json") \
                else _official(path, arch, allow_pickle)
            _check_recorded(text, kwargs, info)
            info = replace(info, spec=text, label=named.name if named else spec_label(text))
            return LoadedModel(model.to(device or "cpu").eval(),
                               normalization(mean, std, metadata=stats, dataset=dataset), info)
        model, info, fallback = _architecture(text, kwargs)
    if weights is not None:
        weights = Path(weights)
        state = state_dict_in(read_checkpoint(weights, allow_pickle=allow_pickle), weights)
        check_fits(state, model.state_dict(), f"{info.name} ({weights.name})")
        model.load_state_dict(state)
        info = replace(info, weights=weights, sha256=file_sha256(weights))
    else:
        info = replace(info, sha256=state_dict_sha256(model))
    if device is not None or info.kind is not SpecKind.MODULE:
        model = model.to(device or "cpu")
    return LoadedModel(model.eval(), normalization(mean, std, dataset=dataset, architecture=fallback), info)


def normalization(mean: Sequence[float] | None, std: Sequence[float] | None, *,
                  metadata: tuple[Sequence[float], Sequence[float]] | None = None, dataset: str | None = None,
                  architecture: tuple[Sequence[float], Sequence[float], str] | None = None) -> Normalization:
    """The normalisation rule of :func:`load_model`: explicit, metadata, dataset, architecture, else an error."""
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (--mean and --std), or neither")
    if mean is not None:
        return _checked(mean, std, "given")
    if metadata is not None:
        return _checked(*metadata, "model metadata")
    if dataset is not None:
        return _checked(*dataset_normalization(dataset), f"default for {dataset}")
    if architecture is not None:
        return _checked(*architecture)
    raise ValueError("no normalisation known for this model: pass mean and std (--mean/--std), or the dataset")


def dataset_normalization(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) that pushpull's recipes train with on ``dataset``."""
    check_name(dataset, DATASETS, "dataset")
    return (IMAGENET_MEAN, IMAGENET_STD) if dataset == "imagenet" else cifar_normalization(dataset)


def checkpoint_in_folder(folder: str | os.PathLike) -> Path:
    """The checkpoint a folder stands for: its only one, else ``model.safetensors``, else ``model_best.pth.tar``."""
    folder = Path(folder)
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(CHECKPOINT_SUFFIXES))
    if not found:
        raise FileNotFoundError(f"{folder} is a folder without a .pth, .pth.tar, .pt, .ckpt or .safetensors checkpoint")
    if len(found) == 1:
        return found[0]
    for name in PREFERRED_IN_FOLDER:
        if folder / name in found:
            return folder / name
    raise ValueError(f"{folder} holds {len(found)} checkpoints ({', '.join(p.name for p in found)}): name the file")


def state_dict_sha256(model: nn.Module) -> str:
    """A fingerprint of a model's weights when no weights file names them."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def import_official(path: str | os.PathLike, model_name: str | None = None, *, out: str | os.PathLike | None = None,
                    allow_pickle: bool = False) -> nn.Module:
    """Load an original CIFAR-10 checkpoint (file or folder) into our model, strictly, in eval mode.

    ``model_name`` defaults to what the folder name says. With ``out`` the model is also
    saved in our format (``.safetensors`` + JSON), recording the original normalisation,
    the source file and the checkpoint's epoch and best accuracy.
    """
    loaded = load_model(path, arch=model_name, allow_pickle=allow_pickle)
    info = loaded.info
    if info.kind is not SpecKind.OFFICIAL:
        raise ValueError(f"{path} is a {info.kind.value}, not an original push-pull checkpoint")
    if out is not None:
        save_model(loaded.model, out, name=info.name, model_kwargs=info.model_kwargs,
                   mean=loaded.normalization.mean, std=loaded.normalization.std, source=info.source,
                   extra=info.metadata)
    return loaded.model


# ----------------------------------------------------------------------------- the forms


def _named_file(spec: str) -> Path | None:
    """The checkpoint file ``spec`` names (folders resolved), or None when it is a name."""
    if is_external(spec):
        return None
    path = Path(spec)
    if path.is_dir():
        return checkpoint_in_folder(path)
    if path.is_file() or path.name.endswith((".json", *CHECKPOINT_SUFFIXES)):
        return path
    if "/" in spec or os.sep in spec:
        raise FileNotFoundError(f"no such file or folder: {spec}")
    return None


def spec_label(spec: str | os.PathLike) -> str:
    """The name a spec goes by in reports and default file names: a file's or folder's name (the
    folder's for generic files such as ``model_best.pth.tar``), else the spec as typed."""
    path = Path(spec)
    return _label(path) if path.exists() else os.fspath(spec)


def _label(path: Path) -> str:
    """A file's name without suffixes, or its folder's when the file's name is generic (``model_best.pth.tar``)."""
    path = path.resolve() if path.name in ("", ".", "..") else path
    stem = path.name if path.is_dir() else path.name.split(".")[0]
    return path.parent.name if path.is_file() and stem in GENERIC_STEMS and path.parent.name else stem


def _saved(path: Path, verify: bool) -> tuple[nn.Module, LoadInfo, tuple]:
    """A saved model rebuilt from its sidecar, its weights loaded strictly (no pickle involved)."""
    if not path.exists() and not sidecar_path(path).exists():
        raise FileNotFoundError(f"saved model not found: {path}")
    meta = read_metadata(path)
    # The weights file given is the one loaded; a sidecar given alone names its weights.
    weights = path if path.suffix == ".safetensors" else \
        sidecar_path(path).with_name(meta.get("weights") or path.with_suffix(".safetensors").name)
    if not weights.is_file():
        raise FileNotFoundError(f"model weights not found: {weights}")
    digest = file_sha256(weights) if verify or not meta.get("sha256") else meta["sha256"]
    if verify and meta.get("sha256") and digest != meta["sha256"]:
        raise ValueError(f"{weights} does not match the sha256 in {sidecar_path(path).name}: "
                         "the file is corrupt or was replaced")
    model = create_model(meta["model"], **meta["model_kwargs"])
    state = state_dict_in(read_checkpoint(weights), weights)
    check_fits(state, model.state_dict(), f"{meta['model']} {meta['model_kwargs']}")
    model.load_state_dict(state, strict=True)
    norm = meta["normalization"]
    info = LoadInfo(model_info(meta["model"]).name, SpecKind.SAVED, "", model_kwargs=meta["model_kwargs"],
                    weights=weights, sha256=digest, source=meta.get("source"), metadata=meta)
    return model, info, (norm["mean"], norm["std"])


def _official(path: Path, arch: str | None, allow_pickle: bool) -> tuple[nn.Module, LoadInfo, tuple]:
    """An original push-pull checkpoint in our model (strictly), its architecture from ``arch`` or its name."""
    checkpoint = read_checkpoint(path, allow_pickle=allow_pickle)
    name = _registry_entry(arch).name if arch else official.guess_model_name(path)
    model, kwargs = official.official_model(checkpoint, path, name)
    info = LoadInfo(name, SpecKind.OFFICIAL, "", model_kwargs=kwargs, weights=path, sha256=file_sha256(path),
                    source=f"official push-pull checkpoint {path.resolve()}",
                    metadata=official.official_extra(checkpoint))
    return model, info, official.NORMALIZATION


def _architecture(spec: str, kwargs: dict[str, Any]) -> tuple[nn.Module, LoadInfo, tuple | None]:
    """A randomly initialised model named by ``spec``, and its architecture's normalisation (or None)."""
    library, _, name = spec.partition(":") if is_external(spec) else ("", "", spec)
    try:
        if library == "torchvision":
            import torchvision

            check_name(name, torchvision.models.list_models(), "torchvision model")
            model = torchvision.models.get_model(name, weights=None, **kwargs)
            return model, LoadInfo(spec, SpecKind.TORCHVISION, spec, spec, kwargs), \
                (IMAGENET_MEAN, IMAGENET_STD, "ImageNet statistics of torchvision models")
        if library == "timm":
            try:
                import timm
            except ImportError:
                raise ValueError(f"{spec} needs timm, which is not installed (pip install timm)") from None
            check_name(name, timm.list_models(), "timm model")
            model = timm.create_model(name, pretrained=False, **kwargs)
            cfg = getattr(model, "pretrained_cfg", None) or {}
            fallback = (cfg["mean"], cfg["std"], f"pretrained_cfg of timm model {name}") \
                if cfg.get("mean") and cfg.get("std") else None
            return model, LoadInfo(spec, SpecKind.TIMM, spec, spec, kwargs), fallback
        entry = _registry_entry(spec)
        model = create_model(entry.name, **kwargs)
    except TypeError as err:  # an option the builder does not take
        raise ValueError(f"{spec}: {err}") from None
    return model, LoadInfo(entry.name, SpecKind.REGISTRY, spec, spec, kwargs), \
        (entry.mean, entry.std, f"registry entry of {entry.name}")


def _registry_entry(name: str) -> ModelInfo:
    try:
        return model_info(name)
    except ValueError:
        raise ValueError(unknown_name_message("model", name, list_models(), _SPEC_FORMS)) from None


def _check_recorded(spec: str, kwargs: dict[str, Any], info: LoadInfo) -> None:
    """Refuse builder options that differ from what a saved model or checkpoint records."""
    recorded = {"num_classes": model_info(info.name).num_classes, **info.model_kwargs}
    for key, value in kwargs.items():
        if recorded.get(key) != value:
            raise ValueError(f"{spec} records its own architecture ({info.name} {recorded}): {key}={value!r} does "
                             "not apply (options are for registry, torchvision and timm names)")


def _checked(mean: Sequence[float], std: Sequence[float], source: str) -> Normalization:
    """3 values each (one value stands for all three channels), std positive."""
    stats = []
    for what, values in (("mean", mean), ("std", std)):
        try:
            values = tuple(float(v) for v in (split_names(values) if isinstance(values, str) else values))
        except (TypeError, ValueError):
            raise ValueError(f"normalisation {what} must be numbers (a list or 'R,G,B'), got {values!r}") from None
        stats.append(three_channels(values, what))
    if not all(s > 0 for s in stats[1]):
        raise ValueError(f"normalisation std must be positive, got {list(stats[1])}")
    return Normalization(stats[0], stats[1], source)


__all__ = ["LoadInfo", "LoadedModel", "Normalization", "SpecKind", "checkpoint_in_folder", "dataset_normalization",
           "import_official", "load_model", "normalization", "spec_label", "state_dict_sha256"]
