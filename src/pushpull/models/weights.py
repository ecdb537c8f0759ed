"""Pretrained weights: a table of what exists, where it comes from, and how to use it; a cache that serves it.

Each :class:`Weights` says which model it fits, where the file is published (URL, sha256, size),
its licence and origin, the input it expects (normalisation, size, classes) and its measured
error with the data it was measured on. Two tables share one namespace of names:

- the original authors' 12 CIFAR-10 checkpoints (``resnet20_pp.official`` ...): downloaded once
  into :func:`weights_dir` (resumable, hash-checked before anything is unpickled), converted
  once to a saved model (safetensors + sidecar), read from there on;
- your own: a ``pushpull train`` run registered under a name (:func:`register_weights`), kept
  as a saved model in ``weights_dir()/user``.

:func:`weights_file` gives the saved model a name stands for; ``load_model(NAME)``,
``create_model(model, pretrained=...)`` and ``pushpull eval --pretrained`` all go through it.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._files import atomic_path, write_json
from .._names import unknown_name_message
from ..data.constants import CIFAR10_MEAN, CIFAR10_STD
from .download import DownloadError, check_sha256, download
from .io import file_sha256, read_checkpoint, read_metadata, save_model, sidecar_path, three_channels
from .official import official_extra, official_model
from .registry import is_external, model_info

DIR_ENV = "PUSHPULL_WEIGHTS_DIR"
MIRROR_ENV = "PUSHPULL_WEIGHTS_MIRROR"
# The original repository at a fixed commit, so a URL always names the same bytes.
ORIGINAL_BASE = ("https://raw.githubusercontent.com/nicstrisc/Push-Pull-CNN-layer/"
                 "c340f329368e60c888ebdca8e30c373cdad9d29f/")
ORIGINAL_SOURCE = ("Strisciuglio, Lopez-Antequera, Petkov, Enhanced robustness of convolutional networks with a "
                   "push-pull inhibition layer, Neural Computing and Applications 2020; "
                   "github.com/nicstrisc/Push-Pull-CNN-layer")
ORIGINAL_LICENSE = "MIT (Copyright (c) 2020 Nicola Strisciuglio)"
MEASURED_ON = ("CIFAR-10 test set, JPEG q75 copy, all 10,000 images, float32 on the CPU (JPEG at q75 is itself a "
               "strong corruption at 32x32: resnet20 has 7.57% error on the lossless original, 19.06% here)")
TRAIN_MEASURED_ON = "the run's test split after its last epoch (pushpull train)"
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Weights:
    """One set of pretrained weights and what a user needs to know to use them right."""

    name: str  # what load_model, create_model(pretrained=...) and the CLI take
    model: str  # registry name of the architecture
    url: str | None  # where the file is published; None for your own (local only)
    sha256: str  # of the published file (for your own: of the safetensors)
    size: int  # bytes of that file
    license: str
    source: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: tuple[int, int, int]
    num_classes: int
    top1_error: float | None  # percent
    measured_on: str
    file: Path | None = None  # your own: the registered safetensors

    @property
    def official(self) -> bool:
        return self.url is not None

    def describe(self) -> dict[str, Any]:
        """The entry as JSON values (``pushpull weights list --json``)."""
        return {"name": self.name, "model": self.model, "url": self.url, "sha256": self.sha256, "size": self.size,
                "license": self.license, "source": self.source, "mean": list(self.mean), "std": list(self.std),
                "input_size": list(self.input_size), "num_classes": self.num_classes,
                "top1_error": self.top1_error, "measured_on": self.measured_on,
                "file": str(self.file) if self.file else None}


def _original(model: str, path: str, size: int, top1_error: float, sha256: str) -> Weights:
    return Weights(f"{model}.official", model, ORIGINAL_BASE + path, sha256, size, ORIGINAL_LICENSE,
                   f"{ORIGINAL_SOURCE}, {path}", CIFAR10_MEAN, CIFAR10_STD, (3, 32, 32), 10, top1_error, MEASURED_ON)


_R, _D = "models/resnet-cifar/resnet-", "models/densenet-cifar/"
_F = "/model_best.pth.tar"
OFFICIAL: dict[str, Weights] = {w.name: w for w in (  # model, path in the repository, size, error %, sha256
    _original("resnet20", f"{_R}20{_F}", 1117962, 19.06,
              "8e45095e4bee87fb9c788f5969559008483556460b827a8891b7e19107aae6da"),
    _original("resnet20_pp", f"{_R}20-pp{_F}", 1118075, 17.20,
              "3dc9714bca0da4c79dd7fad5e66b1e14b84c6abf20c30c91eb87de2a1b6ba54c"),
    _original("resnet32", f"{_R}32{_F}", 1911636, 17.98,
              "f35f6c21032d4043e8948368b306ebe304c1218fa304c193ee17fa3bb5896d1c"),
    _original("resnet32_pp", f"{_R}32-pp{_F}", 1911749, 15.89,
              "942d17da9e019118e964af11c99d5e66d2fdaf9b466aaeb623c0f9a4545f3a95"),
    _original("resnet44", f"{_R}44{_F}", 2705361, 17.56,
              "f37445e3b64bef089d94446020ea3d73d94ca606264c08b84d210ba5ea2b4700"),
    _original("resnet44_pp", f"{_R}44-pp{_F}", 2705474, 15.69,
              "3ccfca29f9a39c0105fbff40635b5fddb3950a5d2be283e3441d6d6098569efc"),
    _original("resnet56", f"{_R}56{_F}", 3499251, 16.89,
              "54b2947911396c00e60c189bba19f8e1acb7cdeaacce0e16774c48dce04184d9"),
    _original("resnet56_pp", f"{_R}56-pp{_F}", 3499364, 14.76,
              "f7e2a873230fb6c7b4303c87e2cc8f9b10d065c7db98ea4ace4d24fb4d432895"),
    _original("densenet40_12", f"{_D}40-12{_F}", 775030, 19.52,
              "c361de495949d0c1ac25f1974a31998636526703c0d8ebcddb3035971bb3f311"),
    _original("densenet40_12_pp", f"{_D}40-12-pp{_F}", 775169, 17.37,
              "6166585347b572d4de7d12ba2f15937d6e01cfd867aed447a903777fc7bad232"),
    _original("densenet100_12", f"{_D}100-12{_F}", 3301705, 15.77,
              "4542114d0b68ee0f2dde2d3de1bc75e6aff5e42fa4cf0ba8b9097f865d557144"),
    _original("densenet100_12_pp", f"{_D}100-12-pp{_F}", 3301845, 14.12,
              "5d163846a74ac863b0696b3f5dbbb76eda47386e7169144aa978ef1f66c25dbc"),
)}
DEFAULT = {w.model: w.name for w in OFFICIAL.values()}  # what pretrained=True means for a model


# ----------------------------------------------------------------------------- the tables


def weights_dir() -> Path:
    """``$PUSHPULL_WEIGHTS_DIR``, else ``<torch.hub.get_dir()>/checkpoints/pushpull`` (``$TORCH_HOME`` moves it)."""
    env = os.environ.get(DIR_ENV)
    if env:
        return Path(env).expanduser()
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / "pushpull"


def _user_dir() -> Path:
    return weights_dir() / "user"


def _user_weights() -> dict[str, Weights]:
    folder = _user_dir()
    found = {}
    for meta_path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        if _USER_NAME.fullmatch(meta_path.stem) and not _is_model_name(meta_path.stem):  # as find_weights
            try:
                found[meta_path.stem] = _from_sidecar(meta_path)
            except (ValueError, KeyError, TypeError) as err:  # one damaged file must not hide the others
                warnings.warn(f"skipping registered weights {meta_path}: {err}", stacklevel=2)
    return found


def _from_sidecar(meta_path: Path) -> Weights:
    meta = read_metadata(meta_path)
    file = meta_path.with_name(meta.get("weights") or f"{meta_path.stem}.safetensors")
    info = model_info(meta["model"])
    history = meta.get("extra", {}).get("history") or []
    error = history[-1].get("test_error") if history and isinstance(history[-1], dict) else None
    norm = meta["normalization"]
    size = file.stat().st_size if file.is_file() else 0
    return Weights(meta_path.stem, info.name, None, meta.get("sha256", ""), size,
                   meta.get("extra", {}).get("license") or "not stated", meta.get("source") or "",
                   three_channels(norm["mean"], "mean"), three_channels(norm["std"], "std"),
                   info.input_size, int(meta.get("num_classes", info.num_classes)),
                   None if error is None else round(100 * float(error), 2), TRAIN_MEASURED_ON, file)


def list_weights(pattern: str | None = None) -> list[str]:
    """Names of the available weights (the original checkpoints, then yours), optionally fnmatch-filtered
    on the weights name or the model name."""
    table = {**OFFICIAL, **_user_weights()}
    if pattern is None:
        return list(table)
    return [n for n, w in table.items() if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(w.model, pattern)]


def find_weights(name: str) -> Weights | None:
    """The weights called exactly ``name``, or None (a model name is never a weights name: it stays a bare
    architecture, whatever files the user folder holds)."""
    if name in OFFICIAL:
        return OFFICIAL[name]
    if _USER_NAME.fullmatch(name) and not _is_model_name(name) and sidecar_path(_user_dir() / f"{name}.safetensors").is_file():
        return _from_sidecar(sidecar_path(_user_dir() / f"{name}.safetensors"))
    return None


def get_weights(name: str) -> Weights:
    """The weights called ``name``; a model name gives its default (original) weights."""
    found = find_weights(name)
    if found is not None:
        return found
    try:
        model = model_info(name).name
    except ValueError:
        model = None
    if model in DEFAULT:
        return OFFICIAL[DEFAULT[model]]
    raise ValueError(unknown_name_message("weights", name, list_weights(),
                                          " (pushpull.list_weights() or `pushpull weights list`)"))


def pretrained_weights(model: str, pretrained: bool | str) -> Weights:
    """The weights ``create_model(model, pretrained=...)`` means: ``True`` its default, a string those weights."""
    if is_external(model):
        raise ValueError(f"pretrained weights are pushpull's (`pushpull weights list`); for {model} give a weights "
                         "file (--weights FILE)")
    name = model_info(model).name
    if pretrained is True:
        if name not in DEFAULT:
            raise ValueError(f"no pretrained weights for {name}; models with weights: {', '.join(DEFAULT)} "
                             "(or register your own: pushpull weights register RUN_DIR --name NAME)")
        return OFFICIAL[DEFAULT[name]]
    if not isinstance(pretrained, str):
        raise ValueError(f"pretrained must be True, False or a weights name, got {pretrained!r}")
    weights = get_weights(pretrained)
    if weights.model != name:
        raise ValueError(f"weights {weights.name} are for {weights.model}, not {name}")
    return weights


# ----------------------------------------------------------------------------- the cache


def download_path(weights: Weights) -> Path:
    """Where the published file of original weights is kept (and where to put it by hand when offline)."""
    return weights_dir() / "downloads" / f"{weights.name}.pth.tar"


def converted_path(weights: Weights) -> Path:
    """The saved model (safetensors + sidecar) the weights are read from."""
    return weights.file if weights.file is not None else weights_dir() / f"{weights.name}.safetensors"


def download_url(weights: Weights) -> str:
    """The URL to fetch, through ``$PUSHPULL_WEIGHTS_MIRROR`` (a copy of the original repository) when set."""
    mirror = os.environ.get(MIRROR_ENV)
    assert weights.url is not None
    if not mirror or not weights.url.startswith(ORIGINAL_BASE):
        return weights.url
    return mirror.rstrip("/") + "/" + weights.url[len(ORIGINAL_BASE):]


def weights_file(weights: str | Weights, *, download_missing: bool = True, progress: bool = True,
                 timeout: float | None = None) -> Path:
    """The saved model that ``weights`` stands for: fetched, verified and converted the first time."""
    weights = get_weights(weights) if isinstance(weights, str) else weights
    out = converted_path(weights)
    if not weights.official:
        if not out.is_file():
            raise FileNotFoundError(f"the weights file of {weights.name} is missing: {out}")
        return out
    if out.is_file() and sidecar_path(out).is_file():
        return out
    raw = download_path(weights)
    if raw.is_file():
        check_sha256(raw, weights.sha256, str(raw))
    elif not download_missing:
        raise FileNotFoundError(f"{weights.name} is not downloaded yet; {_offline_help(weights)}")
    else:
        url = download_url(weights)
        try:
            download(url, raw, sha256=weights.sha256, size=weights.size, timeout=timeout, progress=progress)
        except DownloadError as err:
            raise DownloadError(f"cannot download {weights.name}: {err}; {_offline_help(weights)}") from None
    return _convert(weights, raw, out)


def _offline_help(weights: Weights) -> str:
    return (f"without network: get {weights.url} (sha256 {weights.sha256}) another way, then run `pushpull weights "
            f"import FILE` or save it as {download_path(weights)}")


def _convert(weights: Weights, raw: Path, out: Path) -> Path:
    """The original checkpoint as a saved model; only called once ``raw`` matched the pinned sha256."""
    checkpoint = read_checkpoint(raw)  # still the safe reader: weights_only unpickling
    model, kwargs = official_model(checkpoint, raw, weights.model)
    extra = {"weights": weights.name, "url": weights.url, "original_sha256": weights.sha256,
             "license": weights.license, **official_extra(checkpoint)}
    return save_model(model, out, name=weights.model, model_kwargs=kwargs, mean=weights.mean, std=weights.std,
                      source=weights.source, extra=extra)


def import_weights_file(path: str | os.PathLike) -> Weights:
    """Install a downloaded original checkpoint: recognised by its sha256, copied into the cache, converted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    digest = file_sha256(path)
    weights = next((w for w in OFFICIAL.values() if w.sha256 == digest), None)
    if weights is None:
        raise ValueError(f"{path} (sha256 {digest}) is none of the pinned weights files (`pushpull weights list`)")
    raw = download_path(weights)
    if path.resolve() != raw.resolve():
        with atomic_path(raw) as tmp:
            shutil.copyfile(path, tmp)
    check_sha256(raw, weights.sha256, str(raw))
    _convert(weights, raw, converted_path(weights))
    return weights


def verify_weights(name: str) -> str:
    """Check what the cache holds for ``name`` against the pinned and recorded digests; a one-line status.

    A file that does not match is deleted (:class:`~.download.HashMismatchError`)."""
    weights = get_weights(name)
    out = converted_path(weights)
    parts = []
    if weights.official:
        raw = download_path(weights)
        if raw.is_file():
            check_sha256(raw, weights.sha256, str(raw))
            parts.append("download matches the pinned sha256")
    if out.is_file() and sidecar_path(out).is_file():
        recorded = read_metadata(out).get("sha256")
        if recorded:
            check_sha256(out, recorded, str(out))
            parts.append("saved model matches its sidecar")
        else:  # the loader accepts such a sidecar too: nothing to compare, nothing to delete
            parts.append("saved model (its sidecar records no sha256 to check)")
    return f"{weights.name}: " + ("; ".join(parts) if parts else "not downloaded")


def register_weights(run: str | os.PathLike, name: str, *, overwrite: bool = False) -> Weights:
    """Keep a trained model (a ``pushpull train`` folder or a saved ``.safetensors``) as your weights ``name``."""
    if not _USER_NAME.fullmatch(name):
        raise ValueError(f"weights name {name!r} must be letters, digits, '_', '-' or '.', starting with a letter "
                         "or digit")
    if name in OFFICIAL or name.endswith(".official") or _is_model_name(name):
        raise ValueError(f"{name!r} is taken by a model or by the original weights (names ending in .official): "
                         "choose another")
    run = Path(run)
    source = run / "model.safetensors" if run.is_dir() else run  # a training run's final model
    if not source.is_file():
        raise FileNotFoundError(f"no trained model at {source} (is {run} a finished `pushpull train` folder?)")
    if source.suffix != ".safetensors":
        raise ValueError(f"{source} is not a saved model (.safetensors + .json): register a `pushpull train` "
                         "folder, or import the checkpoint first (pushpull import-official)")
    meta = read_metadata(source)
    weights = source  # the file given is the one kept (as load_model loads it), whatever the sidecar names
    if meta.get("sha256") and file_sha256(weights) != meta["sha256"]:
        raise ValueError(f"{weights} does not match the sha256 in {sidecar_path(source).name}: corrupt or replaced")
    out = _user_dir() / f"{name}.safetensors"
    if sidecar_path(out).exists() and not overwrite:
        raise ValueError(f"weights {name!r} are already registered ({out}): choose another name, or overwrite")
    with atomic_path(out) as tmp:
        shutil.copyfile(weights, tmp)
    extra = {**meta.get("extra", {}), "registered_from": str(source.resolve())}
    write_json(sidecar_path(out), {**meta, "weights": out.name, "sha256": meta.get("sha256") or file_sha256(out),
                                   "extra": extra})
    return _from_sidecar(sidecar_path(out))


def _is_model_name(name: str) -> bool:
    try:
        model_info(name)
    except ValueError:
        return False
    return True


__all__ = ["DIR_ENV", "MIRROR_ENV", "OFFICIAL", "Weights", "converted_path", "download_path", "download_url",
           "find_weights", "get_weights", "import_weights_file", "list_weights", "pretrained_weights",
           "register_weights", "verify_weights", "weights_dir", "weights_file"]
