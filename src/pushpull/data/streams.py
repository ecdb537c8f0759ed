"""Per-image random streams: one rule for the -C corruptions and the -P perturbations.

Image i's randomness comes only from ``numpy.random.default_rng([seed, stream_id(name), *keys])``
(keys: the severity and the image's index in the clean set for a corruption, the index for a
perturbation), so the output never depends on batching, workers, ``--limit`` or the machine.
A name's stream id is derived from the name alone, never from its position in a list: adding,
removing or reordering corruptions leaves every other name's images as they were.
"""

from __future__ import annotations

import hashlib
import unicodedata
import zlib
from collections.abc import Sequence
from pathlib import PurePath

import numpy as np

STREAM_RULE = 2
"""The version of the rule above, recorded in generated folders and results files.

1: a corruption's id was its position in ``CORRUPTIONS`` (perturbations already used rule 2);
2: every name's id is the CRC-32 of its UTF-8 bytes. Outputs of different rules are never mixed.
"""


def stream_id(name: str) -> int:
    """The fixed id of a corruption's or perturbation's random stream: CRC-32 of the name."""
    return zlib.crc32(name.encode("utf-8"))


def image_stream(seed: int, name: str, *keys: int) -> np.random.Generator:
    """The generator of one image under ``name``: a function of (seed, name, keys) only."""
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return np.random.default_rng([int(seed), stream_id(name), *(int(k) for k in keys)])


def image_streams(seed: int, name: str, severity: int, indices: Sequence[int]) -> list[np.random.Generator]:
    """One independent generator per image of a corruption at ``severity``, ``indices`` in the clean set."""
    return [image_stream(seed, name, severity, i) for i in indices]


def path_key(relative_path: str | PurePath) -> int:
    """The stable key of an image of a folder (the index of a folder image): 63 bits of BLAKE2b of its path.

    The path relative to the folder, with ``/`` separators, Unicode NFC (so the same name on macOS
    and Linux is one key): never a position in a listing, so adding or removing files changes no
    other file's images. 63 bits keep keys distinct in folders of millions of files.
    """
    text = unicodedata.normalize("NFC", PurePath(relative_path).as_posix())
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1
