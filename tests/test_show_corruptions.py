"""``pushpull show-corruptions`` says where it wrote the sheet (an absolute path) and what it holds."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pushpull.cli import main


def test_prints_the_absolute_path_it_wrote(tmp_path, capsys, monkeypatch):
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(image)
    monkeypatch.chdir(tmp_path)
    assert main(["show-corruptions", "photo.png", "--out", "sheet.png", "--corruptions", "fog,contrast"]) == 0
    line = capsys.readouterr().out.strip()
    with Image.open(tmp_path / "sheet.png") as sheet:
        size = f"{sheet.width}x{sheet.height} px"
    assert line.startswith(f"wrote {tmp_path / 'sheet.png'}: {size}, 2 corruption(s)")


def test_a_folder_is_named_as_a_folder(tmp_path, capsys):
    assert main(["show-corruptions", str(tmp_path), "--out", str(tmp_path / "sheet.png")]) == 1
    err = capsys.readouterr().err
    assert err == (f"pushpull show-corruptions: error: {tmp_path} is a folder: give one image file "
                   "(make-c --dataset folder does folders)\n")
