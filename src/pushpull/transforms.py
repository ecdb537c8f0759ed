"""Corruptions as torchvision v2 transforms: ``Corrupt`` (one corruption, one severity) and ``RandomCorrupt``.

They take a PIL image, a uint8 tensor (3, H, W) (plain or ``tv_tensors.Image``) or a uint8
numpy array (H, W, 3), at any size, and give the same type back; in a v2 sample (a tuple or
dict) they corrupt the image and pass labels, masks and boxes through. Put them before
``v2.ToDtype(torch.float32, scale=True)``: they work on 0..255 pixels.

Randomness. Called as ``t(image, index=i)`` (one image, e.g. in a Dataset's ``__getitem__``), an
image's noise, crop, angle (and ``RandomCorrupt``'s choice) come only from (seed, corruption,
severity, i), ``seed`` None counting as 0: with a table's ``params`` that is exactly
``pushpull.corrupt(..., seed=seed, indices=i)``. Called plainly (in a ``v2.Compose``) with
``seed`` given, the key is a hash of the image's pixels instead. Either way an evaluation
Dataset is the same whatever the DataLoader's worker count, order or batching. Called plainly
with ``seed=None``, each call draws its key from torch's generator, as torchvision's random
transforms do (seeded per DataLoader worker by torch).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ._names import check_name, check_names
from .data.corruptions import CORRUPTION_GROUPS, CORRUPTIONS
from .data.corruptions.per_image import checked_corrupt, get_corrupter
from .data.robustness_sets import SEVERITIES, check_severities, check_severity
from .data.streams import image_stream

_KEY_LIMIT = 2 ** 63  # keys are non-negative int64


def _is_array_image(inpt: Any) -> bool:
    return isinstance(inpt, np.ndarray) and inpt.ndim == 3 and inpt.shape[-1] == 3


def _is_pure_tensor(inpt: Any) -> bool:
    return isinstance(inpt, torch.Tensor) and not isinstance(inpt, tv_tensors.TVTensor)


def _to_array(inpt: Any) -> np.ndarray:
    """The image as uint8 (H, W, 3) RGB; other layouts and dtypes get an error saying what is expected."""
    if isinstance(inpt, PIL.Image.Image):
        return np.asarray(inpt.convert("RGB"))
    if isinstance(inpt, torch.Tensor):
        if inpt.dtype != torch.uint8:
            raise TypeError(f"Corrupt takes uint8 images (0..255), got a {inpt.dtype} tensor: put it before "
                            f"v2.ToDtype(torch.float32, scale=True)")
        if inpt.ndim != 3 or inpt.shape[0] != 3:
            raise ValueError(f"Corrupt takes one (3, H, W) image tensor, got shape {tuple(inpt.shape)} (grey: "
                             f"repeat the channel, x.expand(3, -1, -1); batches: pushpull.corrupt)")
        return np.ascontiguousarray(inpt.detach().cpu().permute(1, 2, 0).numpy())
    if inpt.dtype != np.uint8:
        raise TypeError(f"Corrupt takes uint8 images (0..255), got a {inpt.dtype} array")
    return inpt


def _like(out: np.ndarray, inpt: Any) -> Any:
    """``out`` (H, W, 3) uint8 in the type and layout of ``inpt``."""
    if isinstance(inpt, PIL.Image.Image):
        return PIL.Image.fromarray(out)
    if isinstance(inpt, torch.Tensor):
        tensor = torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).contiguous().to(inpt.device)
        return tv_tensors.wrap(tensor, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else tensor
    return out


def content_key(image: np.ndarray) -> int:
    """A key from the pixels alone (BLAKE2b of the shape and bytes), below 2**63."""
    digest = hashlib.blake2b(np.asarray(image.shape, np.int64).tobytes(), digest_size=8)
    digest.update(np.ascontiguousarray(image).tobytes())
    return int.from_bytes(digest.digest(), "big") >> 1


def _check_seed(seed: int | None) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return None if seed is None else int(seed)


class _Corruption(v2.Transform):
    """What both transforms share: the image types, the per-call key, and the per-image corrupter."""

    _transformed_types = (PIL.Image.Image, tv_tensors.Image, _is_pure_tensor, _is_array_image)

    def __init__(self, params: str, seed: int | None) -> None:
        super().__init__()
        self.params, self.seed = params, _check_seed(seed)
        self._corrupter = get_corrupter(params)

    def forward(self, *inputs: Any, index: int | None = None) -> Any:
        """A v2 transform of ``inputs``; ``index`` (one image, not in a ``Compose``) keys it by the sample's index."""
        if index is None:
            return super().forward(*inputs)
        image = inputs[0] if len(inputs) == 1 else None
        if not isinstance(image, (PIL.Image.Image, torch.Tensor)) and not _is_array_image(image):
            raise TypeError("index= goes with one image (PIL, (3, H, W) uint8 tensor or (H, W, 3) uint8 array)")
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < _KEY_LIMIT:
            raise ValueError(f"index must be a non-negative integer, got {index!r}")
        return self.transform(image, self._params_for(int(index), fresh=False))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """One draw per sample: the key (from the first image's pixels, or torch's generator without a seed)."""
        if self.seed is None or not flat_inputs:
            return self._params_for(int(torch.randint(0, _KEY_LIMIT - 1, ()).item()), fresh=True)
        return self._params_for(content_key(_to_array(flat_inputs[0])), fresh=False)

    def _params_for(self, key: int, fresh: bool) -> dict[str, Any]:
        """The corruption, severity and key of one call; ``fresh``: draw any choice from torch's generator."""
        raise NotImplementedError

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = checked_corrupt(self._corrupter, _to_array(inpt), params["name"], params["severity"],
                              self.seed or 0, params["key"])
        return _like(out, inpt)

    # torchvision 0.19-0.20 (pyproject allows them) call the two methods by their private names.
    _get_params = make_params
    _transform = transform


class Corrupt(_Corruption):
    """Corruption ``name`` at ``severity`` (1..5) with the per-image semantics ``params`` (a table name).

    ``params``: "cifar", "imagenet", "tinyimagenet", "imagenet64" (``corruptions.params.TABLES``),
    applied at the image's own size, or "imagecorruptions" (that package's size rules,
    :func:`pushpull.corrupt_image`): the names of ``corruptions.per_image.CORRUPTERS``. ``seed``: see the module's docstring.
    """

    def __init__(self, name: str, severity: int, *, params: str, seed: int | None = None) -> None:
        super().__init__(params, seed)
        self.name = check_name(name, CORRUPTIONS, "corruption")
        self.severity = check_severity(severity)

    def _params_for(self, key: int, fresh: bool) -> dict[str, Any]:
        return {"name": self.name, "severity": self.severity, "key": key}

    def extra_repr(self) -> str:
        return f"name={self.name!r}, severity={self.severity}, params={self.params!r}, seed={self.seed}"


class RandomCorrupt(_Corruption):
    """A corruption and a severity drawn per sample (uniformly), for training with corruptions.

    ``corruptions``: names or groups (``"benchmark"``, ``"extra"``, ``"all"``; default all 19);
    ``severities``: the severities to draw from (default 1..5). With ``seed``, the draw is a
    function of the image's pixels (or its ``index``), so an epoch is reproducible whatever the workers.
    """

    def __init__(self, corruptions: str | Sequence[str] | None = None, severities: str | Sequence[int] = SEVERITIES,
                 *, params: str, seed: int | None = None) -> None:
        super().__init__(params, seed)
        self.corruptions = tuple(check_names(corruptions, CORRUPTIONS, "corruption", groups=CORRUPTION_GROUPS))
        self.severities = tuple(check_severities(severities))

    def _params_for(self, key: int, fresh: bool) -> dict[str, Any]:
        if fresh:  # the choice from torch's generator, as the key
            pick = torch.randint(0, len(self.corruptions) * len(self.severities), ()).item()
        else:
            pick = image_stream(self.seed or 0, "random_corrupt", key).integers(len(self.corruptions) *
                                                                               len(self.severities))
        name, severity = divmod(int(pick), len(self.severities))
        return {"name": self.corruptions[name], "severity": self.severities[severity], "key": key}

    def extra_repr(self) -> str:
        return (f"corruptions={len(self.corruptions)}, severities={list(self.severities)}, params={self.params!r}, "
                f"seed={self.seed}")


__all__ = ["Corrupt", "RandomCorrupt", "content_key"]
