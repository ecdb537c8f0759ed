"""One image under every corruption (rows) and severity (columns): the picture to check first."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .robustness_sets import SEVERITIES, read_image

PAD = 4
LABEL_WIDTH = 150
HEADER_HEIGHT = 28
# CIFAR tiles are 32 px shown 3x, the 64-pixel tables' 64 px shown 2x (nearest), ImageNet 224 px shrunk.
TILE = {"cifar": 96, "imagenet": 160, "tinyimagenet": 128, "imagenet64": 128}


def prepare_image(path: str | Path, params: str = "cifar") -> np.ndarray:
    """uint8 (H, W, 3) at the table's size: 224 px (resize 256, crop) for ImageNet, else the centre
    square downscaled to the table's side (32 or 64 px)."""
    from .corruptions.params import TABLE_SIZES, check_table

    if check_table(params) == "imagenet":
        from .generate import load_resized

        return load_resized(Path(path), 224)
    img = read_image(path)
    side, size = min(img.size), TABLE_SIZES[params]
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return np.asarray(img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS))


def tile_box(row: int, column: int, params: str = "cifar") -> tuple[int, int, int, int]:
    """Pixel box (left, top, right, bottom) of a tile; column 0 is the clean image, then severities 1..5."""
    tile = TILE[params]
    left, top = LABEL_WIDTH + PAD + column * (tile + PAD), HEADER_HEIGHT + PAD + row * (tile + PAD)
    return left, top, left + tile, top + tile


def contact_sheet(image: np.ndarray, corruptions: Sequence[str] | None = None, *, params: str = "cifar",
                  seed: int = 0, severities: Sequence[int] = SEVERITIES) -> Image.Image:
    """The labelled grid of ``image`` (uint8 (H, W, 3) at the benchmark's size) under each corruption."""
    from .corruptions import CORRUPTIONS, corrupt

    names = list(CORRUPTIONS if corruptions is None else corruptions)
    tile = TILE[params]
    width = tile_box(0, len(severities), params)[2] + PAD
    height = tile_box(len(names) - 1, 0, params)[3] + PAD
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=15)
    resample = Image.Resampling.LANCZOS if params == "imagenet" else Image.Resampling.NEAREST

    def paste(array: np.ndarray, row: int, column: int) -> None:
        sheet.paste(Image.fromarray(array).resize((tile, tile), resample), tile_box(row, column, params)[:2])

    for column, title in enumerate(["clean"] + [f"severity {s}" for s in severities]):
        left, _, right, _ = tile_box(0, column, params)
        draw.text(((left + right) / 2, HEADER_HEIGHT / 2), title, fill="black", font=font, anchor="mm")
    for row, name in enumerate(names):
        top, bottom = tile_box(row, 0, params)[1::2]
        draw.text((PAD, (top + bottom) / 2), name.replace("_", " "), fill="black", font=font, anchor="lm")
        paste(image, row, 0)
        for column, severity in enumerate(severities, start=1):
            paste(corrupt(image[None], name, severity, seed=seed, params=params)[0], row, column)
    return sheet
