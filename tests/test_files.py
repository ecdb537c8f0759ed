"""Atomic files: the target changes only when the writer finishes, and nothing is left behind."""

from __future__ import annotations

import pytest

from pushpull._files import atomic_path, atomic_write, read_json, write_json


def test_atomic_path_replaces_the_target_when_the_block_succeeds(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".json" and tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"  # not yet: only when the block ends
    assert target.read_text() == "new"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_path_keeps_the_old_file_and_no_temp_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_path_names_are_unique(tmp_path):
    target = tmp_path / "x.png"
    with atomic_path(target) as a, atomic_path(target) as b:
        assert a != b
        a.write_bytes(b"a")
        b.write_bytes(b"b")
    assert target.read_bytes() == b"a"  # the outer block finishes last
    assert list(tmp_path.iterdir()) == [target]


def test_a_folder_in_the_way_is_named_before_anything_is_written(tmp_path):
    from pushpull.cli import _one_line

    (tmp_path / "r.json").mkdir()
    with pytest.raises(IsADirectoryError) as err:
        with atomic_path(tmp_path / "r.json") as tmp:
            pytest.fail(f"the block ran: {tmp}")
    assert _one_line(err.value) == f"{tmp_path / 'r.json'}: is a folder; give a file name"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_parent_folders_are_created(tmp_path):
    target = tmp_path / "a" / "b" / "c.txt"
    atomic_write(target, "hi")
    assert target.read_text() == "hi"


@pytest.mark.parametrize("data, expected", [("héllo\n", "héllo\n".encode()), (b"\x00\xff", b"\x00\xff")])
def test_atomic_write_takes_str_and_bytes(tmp_path, data, expected):
    target = tmp_path / "f"
    atomic_write(str(target), data)
    assert target.read_bytes() == expected
    assert list(tmp_path.iterdir()) == [target]


def test_read_json_returns_the_value_and_names_the_file_when_invalid(tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"a": [1, 2]}')
    bad.write_text("{not json")
    assert read_json(good) == {"a": [1, 2]}
    with pytest.raises(ValueError, match=r"^baseline file .*bad\.json is not valid JSON"):
        read_json(bad, "baseline file ")


def test_write_json_is_indented_atomic_and_leaves_the_old_file_on_bad_data(tmp_path):
    target = tmp_path / "sub" / "results.json"
    write_json(target, {"b": [1, 2], "é": None})
    assert target.read_text(encoding="utf-8") == '{\n  "b": [\n    1,\n    2\n  ],\n  "\\u00e9": null\n}\n'
    assert read_json(target) == {"b": [1, 2], "é": None}
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json(target, {"a": object()})
    assert read_json(target) == {"b": [1, 2], "é": None}
    assert list(target.parent.iterdir()) == [target]


def test_read_json_names_a_binary_file(tmp_path):
    path = tmp_path / "r.json"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ValueError, match=f"results {path} is not valid JSON"):
        read_json(path, "results ")


def test_background_writes_finish_before_the_block_ends_and_raise_the_first_error(tmp_path):
    from pushpull._files import BackgroundWrites

    with BackgroundWrites() as files:
        for i in range(50):
            files.write(tmp_path / "out" / f"{i}.bin", bytes([i]) * 1000)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{i}.bin" for i in range(50))
    assert all((tmp_path / "out" / f"{i}.bin").read_bytes() == bytes([i]) * 1000 for i in range(50))
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(OSError), BackgroundWrites() as files:
        files.write(tmp_path / "ok.bin", b"1")
        files.write(tmp_path / "blocker" / "x.bin", b"2")
    assert (tmp_path / "ok.bin").read_bytes() == b"1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "ok.bin", "out"]  # no temporary file left
