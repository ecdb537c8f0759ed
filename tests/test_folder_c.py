"""``make-c --dataset folder``: any folder of images, each corrupted at its own size, resumable and shardable."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import real_photos
from pushpull.cli import main
from pushpull.data.corruptions import corrupt
from pushpull.data.folder import folder_images, make_folder_c, output_name, read_rgb
from pushpull.data.robustness_sets import DamagedFileError
from pushpull.data.streams import path_key
from pushpull.engine.distributed import Shard

NAMES = ["gaussian_noise", "pixelate"]


def photo_folder(root: Path, side: int = 96) -> list[str]:
    """Real photos at three sizes in nested folders, JPEG and PNG: the relative paths written."""
    rels = ["top.jpg", "city/a/street.JPEG", "city/b/crop.png"]
    for k, (rel, (_, photo)) in enumerate(zip(rels, real_photos())):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(photo[: side + 10 * k, : side + 17 * k])
        image.save(path, **({"quality": 92} if path.suffix.lower() != ".png" else {}))
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"skipped: hidden")
    return sorted(rels)


def expected(root: Path, rel: str, name: str, severity: int, seed: int = 0, params: str = "imagenet") -> np.ndarray:
    """What the folder writer must hold for one image: the table's corruption of its RGB pixels, keyed by its path."""
    image = np.asarray(Image.open(root / rel).convert("RGB"))
    return corrupt(image, name, severity, seed=seed, indices=path_key(rel), params=params)


def tree(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
            and p.name != "pushpull-benchmark.json"}


def test_nested_folders_png_keep_paths_and_sizes(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    rels = photo_folder(src)
    assert folder_images(src) == rels
    written = make_folder_c(src, out, NAMES, severities=[1, 4], progress=False)
    assert written == len(rels) * len(NAMES) * 2
    for rel in rels:
        for name in NAMES:
            for severity in (1, 4):
                target = out / name / str(severity) / output_name(rel, "png")
                got = np.asarray(Image.open(target))
                np.testing.assert_array_equal(got, expected(src, rel, name, severity), err_msg=str(target))
    assert (out / "pixelate" / "4" / "city" / "a" / "street.png").is_file()  # suffix names the format
    assert {p.name for p in out.iterdir()} == {*NAMES, "pushpull-benchmark.json"}


def test_jpeg_out_with_quality(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    rels = photo_folder(src)
    make_folder_c(src, out, ["fog"], severities=[2], fmt="jpeg", quality=70, progress=False)
    for rel in rels:
        target = out / "fog" / "2" / output_name(rel, "jpeg")
        buffer = io.BytesIO()
        Image.fromarray(expected(src, rel, "fog", 2)).save(buffer, "JPEG", quality=70, optimize=True)
        assert target.read_bytes() == buffer.getvalue(), target
    assert output_name("city/a/street.JPEG", "jpeg") == "city/a/street.JPEG"
    assert output_name("city/b/crop.png", "jpeg") == "city/b/crop.jpg"
    with pytest.raises(ValueError, match="other options"):  # the manifest refuses mixing formats
        make_folder_c(src, out, ["fog"], severities=[2], fmt="png", progress=False)


def test_seeds_come_from_the_path_not_the_listing(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    rels = photo_folder(src)
    full = tmp_path / "full"
    make_folder_c(src, full, ["shot_noise"], severities=[3], progress=False)
    for k in range(3):  # three shards of the sorted paths make the same files as one run
        make_folder_c(src, out, ["shot_noise"], severities=[3], shard=Shard(k, 3), progress=False)
    assert tree(out) == tree(full)
    Image.fromarray(real_photos()[0][1][:50, :60]).save(src / "aaa_new.png")  # first in the listing now
    more = tmp_path / "more"
    make_folder_c(src, more, ["shot_noise"], severities=[3], progress=False)
    assert {k: v for k, v in tree(more).items() if "aaa_new" not in k} == tree(full)
    assert len(tree(more)) == len(rels) + 1


def test_resume_after_a_killed_run(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    photo_folder(src, side=160)
    argv = [sys.executable, "-m", "pushpull", "make-c", "--dataset", "folder", "--data", str(src), "--out", str(out),
            "--corruptions", "glass_blur,zoom_blur", "--workers", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(out.rglob("*.png"))) < 2 and proc.poll() is None:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = tree(out)
    assert 0 < len([k for k in before if not Path(k).name.startswith(".")]) < 30, "the run was not cut short"
    written = make_folder_c(src, out, ["glass_blur", "zoom_blur"], progress=False)
    done = {k: v for k, v in before.items() if not Path(k).name.startswith(".")}
    assert written == 30 - len(done)  # files present are kept, only the rest is made
    clean = tmp_path / "clean"
    make_folder_c(src, clean, ["glass_blur", "zoom_blur"], progress=False)
    after = {k: v for k, v in tree(out).items() if not Path(k).name.startswith(".")}
    assert after == tree(clean)


def test_a_damaged_file_is_named_and_nothing_is_half_written(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    photo_folder(src)
    cut = src / "city" / "a" / "street.JPEG"
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # the header is intact: found when its pixels are decoded
    with pytest.raises(DamagedFileError, match=str(cut)):
        make_folder_c(src, out, ["contrast"], severities=[1], workers=1, progress=False)
    assert not (out / "contrast" / "1" / "city" / "a").exists()
    assert all(not p.name.startswith(".") for p in out.rglob("*"))  # no temporary file left behind
    (src / "city" / "b" / "crop.png").write_bytes(b"garbage")  # not an image at all: found before any work
    again = tmp_path / "again"
    with pytest.raises(DamagedFileError, match="crop.png"):
        make_folder_c(src, again, ["contrast"], severities=[1], progress=False)
    assert not again.exists()


def test_conversions_rgba_grey_and_16_bit(tmp_path):
    photo = real_photos()[1][1][:64, :80]
    cases = {
        "rgba": Image.fromarray(np.dstack([photo, np.full(photo.shape[:2], 7, np.uint8)]), "RGBA"),
        "grey": Image.fromarray(photo[..., 1]),
        "grey16": Image.fromarray((photo[..., 1].astype(np.uint16) << 8 | 0xAB).astype(np.uint16)),
    }
    want = {"rgba": photo, "grey": np.repeat(photo[..., 1:2], 3, 2), "grey16": np.repeat(photo[..., 1:2], 3, 2)}
    for kind, image in cases.items():
        src = tmp_path / kind
        src.mkdir()
        image.save(src / "x.png")
        np.testing.assert_array_equal(read_rgb(src / "x.png"), want[kind], err_msg=kind)
        make_folder_c(src, tmp_path / f"{kind}-out", ["brightness"], severities=[2], progress=False)
        got = np.asarray(Image.open(tmp_path / f"{kind}-out" / "brightness" / "2" / "x.png"))
        np.testing.assert_array_equal(got, corrupt(want[kind], "brightness", 2, indices=path_key("x.png"),
                                                   params="imagenet"), err_msg=kind)


@pytest.mark.parametrize("shape, name, message", [
    ((3, 40), "pixelate", r"3x40: pixelate severity 4 shrinks by 0.3: needs at least 4 px a side"),
    ((320, 200), "frost", r"320x200: frost with the imagenet table .* at most 314x526"),
])
def test_images_a_corruption_cannot_take_are_refused_before_any_work(tmp_path, shape, name, message):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(src / "fine.png")
    Image.fromarray(np.zeros((*shape, 3), np.uint8)).save(src / "odd.png")
    with pytest.raises(ValueError, match=f"odd.png is {message}"):
        make_folder_c(src, tmp_path / "out", ["contrast", name], progress=False)
    assert not (tmp_path / "out").exists()


def test_out_inside_the_folder_and_colliding_names_are_refused(tmp_path):
    src = tmp_path / "in"
    photo_folder(src)
    with pytest.raises(ValueError, match="inside the image folder"):
        make_folder_c(src, src / "c", ["fog"], progress=False)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(src / "top.png")
    with pytest.raises(ValueError, match="top.jpg and .*top.png would both be written as top.png"):
        make_folder_c(src, tmp_path / "out", ["fog"], progress=False)


def test_cli_folder_with_a_table_and_jpeg(tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    rels = photo_folder(src, side=64)
    argv = ["make-c", "--dataset", "folder", "--data", str(src), "--out", str(out), "--corruptions", "frost",
            "--severities", "5", "--params", "tinyimagenet", "--format", "jpeg", "--quality", "90", "--no-progress"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == f"wrote {len(rels)} images under {out}"
    assert main(argv) == 0 and capsys.readouterr().out.strip() == f"wrote 0 images under {out}"  # resumed: all present
    first = Image.open(out / "frost" / "5" / "top.jpg")
    assert first.format == "JPEG" and first.size == Image.open(src / "top.jpg").size


def test_imagecorruptions_semantics_at_native_size(tmp_path):
    """``--params imagecorruptions``: each photo gets corrupt_image's output at its own size, keyed by its path."""
    from pushpull.data.corruptions.any_size import corrupt_image

    src, out = tmp_path / "in", tmp_path / "out"
    rels = photo_folder(src, side=64)
    names = ["zoom_blur", "frost"]  # a size rule of imagecorruptions' own, and a texture crop the tables refuse
    make_folder_c(src, out, names, severities=[3], params="imagecorruptions", progress=False)
    for rel in rels:
        image = np.asarray(Image.open(src / rel).convert("RGB"))
        for name in names:
            got = np.asarray(Image.open(out / name / "3" / output_name(rel, "png")))
            want = corrupt_image(image, 3, name, seed=0, index=path_key(rel))
            np.testing.assert_array_equal(got, want, err_msg=f"{name} {rel}")
    small = tmp_path / "small"
    small.mkdir()
    Image.fromarray(real_photos()[0][1][:31, :40]).save(small / "tiny.png")
    with pytest.raises(ValueError, match=r"tiny\.png.*at least 32x32"):
        make_folder_c(small, tmp_path / "o2", ["gaussian_noise"], params="imagecorruptions", progress=False)
