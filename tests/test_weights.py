"""Pretrained weights: the pinned table, and a cache that downloads, verifies, converts and then serves offline.

No internet: a loopback HTTP server (127.0.0.1, started and stopped here) plays the original
repository, serving the shared copies of its checkpoints, through ``$PUSHPULL_WEIGHTS_MIRROR``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

import pushpull
from pushpull.cli import main
from pushpull.models import create_model, import_official, load_model, save_model
from pushpull.models import weights as table
from pushpull.models.download import DownloadError, HashMismatchError, part_path
from pushpull.models.weights import OFFICIAL, ORIGINAL_BASE, download_path, get_weights, weights_file

from test_official import FOLDERS, checkpoint, error_percent, official, test_set  # noqa: F401  (shared fixtures)

ROOT = Path(__file__).resolve().parents[1]
NAME = "resnet20_pp.official"


def shared_file(official: Path, weights: table.Weights) -> Path:
    """The shared copy of an entry's published file."""
    return checkpoint(official, next(folder for folder, model in FOLDERS.items() if model == weights.model))


class Mirror:
    """A loopback copy of the original repository. ``mode``: ``ok``; ``truncate`` (the first response
    breaks off half-way); ``stall`` (some bytes, then silence); ``silent`` (no answer at all).
    ``ignore_range``: answer every request with the whole file (200), as some servers do."""

    def __init__(self, files: dict[str, Path]):
        self.files, self.mode, self.requests, self.ignore_range = files, "ok", [], False
        self.release = threading.Event()
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                mirror.requests.append((self.path, self.headers.get("Range")))
                if mirror.mode == "silent":
                    mirror.release.wait(10)
                    return
                file = mirror.files.get(self.path.lstrip("/"))
                if file is None:
                    self.send_error(404)
                    return
                data = file.read_bytes()
                asked = None if mirror.ignore_range else self.headers.get("Range")
                start = int(asked.removeprefix("bytes=").rstrip("-")) if asked else 0
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if mirror.mode == "truncate":
                    mirror.mode = "ok"
                    self.wfile.write(body[:len(body) // 2])
                    return
                if mirror.mode == "stall":
                    self.wfile.write(body[:1000])
                    self.wfile.flush()
                    mirror.release.wait(10)
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "weights"
    monkeypatch.setenv(table.DIR_ENV, str(folder))
    return folder


@pytest.fixture
def mirror(official, cache, monkeypatch):
    server = Mirror({w.url[len(ORIGINAL_BASE):]: shared_file(official, w) for w in OFFICIAL.values()})
    monkeypatch.setenv(table.MIRROR_ENV, server.base)
    yield server
    server.stop()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_table_pins_every_original_checkpoint(official):
    assert len(OFFICIAL) == 12 and pushpull.list_weights("*official") == list(OFFICIAL)
    for weights in OFFICIAL.values():
        file = shared_file(official, weights)
        assert table.file_sha256(file) == weights.sha256 and file.stat().st_size == weights.size, weights.name
        assert weights.url.startswith("https://raw.githubusercontent.com/nicstrisc/Push-Pull-CNN-layer/")
        assert pushpull.models.model_info(weights.model).name == weights.model
        assert weights.license.startswith("MIT") and "JPEG q75" in weights.measured_on
        assert weights.num_classes == 10 and weights.input_size == (3, 32, 32) and 10 < weights.top1_error < 25
    assert pushpull.get_weights("ResNet-20-pp") is OFFICIAL[NAME]  # a model name gives its default weights
    with pytest.raises(ValueError, match="resnet20_pp.official"):
        get_weights("resnet20_pp.oficial")
    with pytest.raises(ValueError, match="no pretrained weights for resnet110"):
        create_model("resnet110", pretrained=True)


def test_download_verify_convert_then_serve_from_the_cache_without_the_server(mirror, official, cache, monkeypatch):
    model = create_model("resnet20_pp", pretrained=True)
    assert model.training and same_weights(model, import_official(shared_file(official, OFFICIAL[NAME])))
    assert [r[0] for r in mirror.requests] == ["/" + OFFICIAL[NAME].url[len(ORIGINAL_BASE):]]
    meta = json.loads((cache / f"{NAME}.json").read_text())
    assert meta["extra"]["original_sha256"] == OFFICIAL[NAME].sha256 and meta["extra"]["epoch"] == 161
    mirror.stop()
    monkeypatch.setattr(table, "read_checkpoint", lambda *a, **k: pytest.fail("the legacy file was read again"))
    loaded = load_model(NAME)  # the safetensors now; the server is gone
    assert same_weights(loaded.model, model) and loaded.info.label == NAME
    assert loaded.normalization.mean == OFFICIAL[NAME].mean and loaded.normalization.source == "model metadata"
    assert same_weights(create_model("resnet20_pp", pretrained=NAME), model)
    with pytest.raises(ValueError, match="are for resnet20_pp, not resnet20"):
        create_model("resnet20", pretrained=NAME)


def test_a_download_with_the_wrong_hash_is_deleted_before_it_is_read(mirror, cache, monkeypatch):
    wrong = dataclasses.replace(OFFICIAL[NAME], sha256="0" * 64)
    monkeypatch.setitem(OFFICIAL, NAME, wrong)
    monkeypatch.setattr(table, "read_checkpoint", lambda *a, **k: pytest.fail("an unverified file was unpickled"))
    with pytest.raises(HashMismatchError, match="not the pinned 0000.*it was deleted"):
        load_model(NAME)
    assert not download_path(wrong).exists() and not part_path(download_path(wrong)).exists()
    download_path(wrong).write_bytes(b"not the checkpoint")  # dropped in by hand: checked the same way
    with pytest.raises(HashMismatchError, match=str(download_path(wrong))):
        weights_file(NAME)
    assert not download_path(wrong).exists()


def test_a_broken_off_download_resumes_where_it_stopped(mirror, cache):
    mirror.mode = "truncate"
    with pytest.raises(DownloadError, match="broke off after .* run again to resume"):
        weights_file(NAME, progress=False)
    kept = part_path(download_path(OFFICIAL[NAME])).stat().st_size
    assert 0 < kept < OFFICIAL[NAME].size
    assert weights_file(NAME, progress=False).is_file()
    assert mirror.requests[-1][1] == f"bytes={kept}-"
    assert table.file_sha256(download_path(OFFICIAL[NAME])) == OFFICIAL[NAME].sha256


def test_a_server_that_ignores_the_range_makes_the_download_start_over(mirror, cache):
    part = part_path(download_path(OFFICIAL[NAME]))
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 1000)  # not a prefix of the file: kept only if the server's 200 were appended
    mirror.ignore_range = True
    assert weights_file(NAME, progress=False).is_file() and mirror.requests[-1][1] == "bytes=1000-"
    assert table.file_sha256(download_path(OFFICIAL[NAME])) == OFFICIAL[NAME].sha256


@pytest.mark.parametrize("mode, said", [("stall", "stalled .no data for 0.3 s"), ("silent", "no answer within 0.3 s")])
def test_a_server_that_stalls_times_out_quickly_and_says_so(mirror, cache, monkeypatch, mode, said):
    mirror.mode = mode
    monkeypatch.setenv("PUSHPULL_DOWNLOAD_TIMEOUT", "0.3")
    start = time.monotonic()
    with pytest.raises(DownloadError, match=said):
        weights_file(NAME, progress=False)
    assert time.monotonic() - start < 5


def test_offline_with_an_empty_cache_says_where_to_get_the_file_and_where_to_put_it(official, cache, monkeypatch):
    monkeypatch.setenv(table.MIRROR_ENV, f"http://127.0.0.1:{closed_port()}")
    weights = OFFICIAL[NAME]
    with pytest.raises(DownloadError) as err:
        create_model("resnet20_pp", pretrained=True)
    message = str(err.value)
    assert "\n" not in message and "cannot connect" in message
    for part in (weights.url, weights.sha256, str(download_path(weights)), "pushpull weights import FILE"):
        assert part in message
    with pytest.raises(FileNotFoundError, match="not downloaded yet"):
        weights_file(NAME, download_missing=False)
    assert table.import_weights_file(shared_file(official, weights)) == weights  # recognised by its sha256
    assert load_model(NAME).info.weights == cache / f"{NAME}.safetensors"  # and served offline from now on


def test_cli_lists_downloads_verifies_and_imports(mirror, official, cache, tmp_path, capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in OFFICIAL) and "17.20%" in out and "JPEG q75" in out
    assert main(["weights", "download", "resnet20", "--quiet"]) == 0
    assert str(cache / "resnet20.official.safetensors") in capsys.readouterr().out
    assert main(["weights", "verify", "resnet20.official", NAME]) == 0
    out = capsys.readouterr().out
    assert "resnet20.official: download matches the pinned sha256; saved model matches its sidecar" in out
    assert f"{NAME}: not downloaded" in out
    assert main(["weights", "import", str(shared_file(official, OFFICIAL[NAME]))]) == 0
    assert f"is {NAME}: installed" in capsys.readouterr().out
    assert main(["weights", "list", "--json", "resnet20_pp*"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["sha256"] == OFFICIAL[NAME].sha256
    other = tmp_path / "other.pth"
    other.write_bytes(b"not a pinned file")
    with pytest.raises(ValueError, match="other.pth .sha256 [0-9a-f]{64}. is none of the pinned weights files"):
        table.import_weights_file(other)


def test_a_trained_run_registered_by_name_loads_like_the_originals(cache, tmp_path, fake_cifar10, capsys):
    run = tmp_path / "run"
    torch.manual_seed(0)
    trained = create_model("resnet20")
    save_model(trained, run / "model.safetensors", name="resnet20", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
               source="pushpull train, recipe test", extra={"history": [{"epoch": 1, "test_error": 0.25}]})
    assert main(["weights", "register", str(run), "--name", "my-r20"]) == 0
    assert "registered" in capsys.readouterr().out and "my-r20" in pushpull.list_weights()
    weights = get_weights("my-r20")
    assert weights.model == "resnet20" and weights.top1_error == 25.0 and weights.url is None
    assert weights.file == cache / "user" / "my-r20.safetensors"
    assert same_weights(create_model("resnet20", pretrained="my-r20"), trained)
    loaded = load_model("my-r20")
    assert same_weights(loaded.model, trained) and loaded.normalization.mean == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="already registered"):
        table.register_weights(run, "my-r20")
    for taken in ("ResNet-20", NAME, "mine.official"):
        with pytest.raises(ValueError, match="is taken by a model or by the original weights"):
            table.register_weights(run, taken)
    with pytest.raises(ValueError, match="must be letters, digits"):
        table.register_weights(run, "../escape")
    for suffix in (".safetensors", ".json"):  # files named like a model never turn the model into weights
        (cache / "user" / f"resnet20{suffix}").write_bytes((cache / "user" / f"my-r20{suffix}").read_bytes())
    assert load_model("resnet20").info.weights is None and "resnet20" not in pushpull.list_weights()
    root = fake_cifar10(tmp_path / "data", n_test=8).root
    assert main(["eval", "resnet20", "--pretrained", "my-r20", "--data", str(root), "--benchmark", "cifar10-c",
                 "--corruptions", "gaussian_noise", "--severities", "1", "--baseline", "none", "--quiet",
                 "--out", str(tmp_path / "r.json")]) == 0
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["model"]["spec"] == "my-r20" and results["model"]["weights"] == str(weights.file)


def test_registered_weights_the_damaged_and_the_unrecorded(cache, tmp_path):
    torch.manual_seed(0)
    trained = create_model("resnet20")
    path = save_model(trained, tmp_path / "a.safetensors", name="resnet20", mean=(0.5,) * 3, std=(0.25,) * 3,
                      source="unit test")
    cut = tmp_path / "cut.safetensors"  # a damaged copy beside a copy of a's sidecar (which names a.safetensors)
    cut.write_bytes(path.read_bytes()[:50_000])
    (tmp_path / "cut.json").write_text((tmp_path / "a.json").read_text())
    with pytest.raises(ValueError, match=r"cut\.safetensors does not match the sha256"):
        table.register_weights(cut, "mine")  # the file given is the one checked and kept
    table.register_weights(path, "mine")
    (cache / "user" / "broken.json").write_text("{")  # one damaged entry hides no other
    with pytest.warns(UserWarning, match="skipping registered weights .*broken.json"):
        assert "mine" in pushpull.list_weights()
    (cache / "user" / "broken.json").unlink()
    sidecar = cache / "user" / "mine.json"
    sidecar.write_text(json.dumps({k: v for k, v in json.loads(sidecar.read_text()).items() if k != "sha256"}))
    assert "records no sha256" in table.verify_weights("mine")
    assert (cache / "user" / "mine.safetensors").is_file()  # kept: load_model accepts it as it is
    assert same_weights(load_model("mine").model, trained)


def test_torch_hub_loads_from_the_clone_without_pushpull_installed(official, cache, tmp_path):
    table.import_weights_file(shared_file(official, OFFICIAL[NAME]))
    script = ("import sys, torch; m = torch.hub.load(sys.argv[1], 'resnet20_pp', pretrained=True, source='local'); "
              "import pushpull; torch.save(m.state_dict(), sys.argv[2]); print(pushpull.__file__)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script, str(ROOT), str(tmp_path / "sd.pt")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(ROOT / "src"))  # the clone's code, not an installed copy
    state = torch.load(tmp_path / "sd.pt", weights_only=True)
    reference = import_official(shared_file(official, OFFICIAL[NAME])).state_dict()
    assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(OFFICIAL))
def test_every_pretrained_model_has_the_error_its_entry_states(official, cache, test_set, name):  # noqa: F811
    weights = OFFICIAL[name]
    table.import_weights_file(shared_file(official, weights))
    assert error_percent(load_model(name).model, *test_set) == pytest.approx(weights.top1_error, abs=0.005)
