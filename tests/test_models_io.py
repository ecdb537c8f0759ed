"""Saved-model format: safetensors weights + JSON sidecar, atomic, safe, with clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from pushpull.data.constants import CIFAR10_MEAN, CIFAR10_STD
from pushpull.models import create_model, load_model, read_metadata, save_model


def _save(model, path, name="resnet20_b1", **kwargs):
    return save_model(model, path, name=name, model_kwargs=kwargs, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                      source="unit test", extra={"epoch": 3, "note": "x"})


def test_round_trip_reproduces_outputs_and_metadata(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet20_b1", num_classes=7, aa=2, trainable_alpha=True)
    model.train()
    model(torch.randn(4, 3, 32, 32))  # move BN running stats away from their init
    model.eval()
    path = _save(model, tmp_path / "sub" / "m.safetensors", num_classes=7, aa=2, trainable_alpha=True)
    result = load_model(path)
    loaded, meta = result.model, result.info.metadata
    assert not loaded.training
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert meta["model"] == "resnet20_b1" and meta["num_classes"] == 7 and meta["format_version"] == 1
    assert meta["model_kwargs"] == {"num_classes": 7, "aa": 2, "trainable_alpha": True}
    assert meta["normalization"]["mean"] == pytest.approx(list(CIFAR10_MEAN))
    assert meta["source"] == "unit test" and meta["extra"] == {"epoch": 3, "note": "x"}
    assert meta["created"].endswith("+00:00") and len(meta["sha256"]) == 64
    assert json.loads((tmp_path / "sub" / "m.json").read_text()) == meta == read_metadata(path)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["m.json", "m.safetensors"]  # no temp files


def test_paper_name_is_stored_canonically(tmp_path):
    path = _save(create_model("resnet20_pp"), tmp_path / "m.safetensors", name="ResNet-20-pp")
    assert read_metadata(path)["model"] == "resnet20_pp"
    loaded = load_model(tmp_path / "m.json").model  # either file of the pair works
    assert type(loaded.conv1).__name__ == "PushPullConv2d"


def test_save_refuses_weights_that_do_not_fit_the_name(tmp_path):
    with pytest.raises(ValueError, match="do not fit resnet20"):
        _save(create_model("resnet32"), tmp_path / "m.safetensors", name="resnet20")
    with pytest.raises(ValueError, match="wrong shapes"):
        _save(create_model("resnet20", num_classes=5), tmp_path / "m.safetensors", name="resnet20")
    with pytest.raises(ValueError, match=".safetensors"):
        _save(create_model("resnet20"), tmp_path / "m.pt", name="resnet20")
    with pytest.raises(ValueError, match="unknown model"):
        _save(create_model("resnet20"), tmp_path / "m.safetensors", name="resnet21")
    assert list(tmp_path.iterdir()) == []


def test_load_detects_tampering_and_mismatch(tmp_path):
    path = _save(create_model("resnet20"), tmp_path / "m.safetensors", name="resnet20")
    state = load_file(path)
    state["fc.bias"] = state["fc.bias"] + 1
    save_file(state, path)
    with pytest.raises(ValueError, match="sha256"):
        load_model(path)
    load_model(path, verify=False)  # same architecture: loads when asked not to verify

    meta = read_metadata(path)
    meta["model"] = "resnet32"
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="missing"):
        load_model(path, verify=False)


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="saved model not found.*none.safetensors"):
        load_model(tmp_path / "none.safetensors")
    (tmp_path / "bare.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="metadata"):
        load_model(tmp_path / "bare.safetensors")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(tmp_path / "bad.safetensors")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a pushpull model"):
        load_model(tmp_path / "other.safetensors")
    path = _save(create_model("resnet20"), tmp_path / "m.safetensors", name="resnet20")
    meta = read_metadata(path)
    path.write_bytes(b"garbage")
    meta["sha256"] = ""
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="m.safetensors is not a readable checkpoint"):
        load_model(path)
