"""Import of the original authors' CIFAR-10 checkpoints: strict, safe, and exactly the original networks."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from pushpull import PushPullConv2d
from pushpull.cli import main
from pushpull.data.cifar import load_cifar
from pushpull.data.constants import CIFAR10_MEAN, CIFAR10_STD
from pushpull.models import UnsafeCheckpointError, create_model, import_official, load_model
from pushpull.models.official import official_weights
from pushpull.models.weights import OFFICIAL

FOLDERS = {
    "resnet-20": "resnet20", "resnet-20-pp": "resnet20_pp", "resnet-32": "resnet32", "resnet-32-pp": "resnet32_pp",
    "resnet-44": "resnet44", "resnet-44-pp": "resnet44_pp", "resnet-56": "resnet56", "resnet-56-pp": "resnet56_pp",
    "densenet-40-12": "densenet40_12", "densenet-40-12-pp": "densenet40_12_pp",
    "densenet-100-12": "densenet100_12", "densenet-100-12-pp": "densenet100_12_pp",
}
# The original networks' top-1 error (%) on the shared CIFAR-10 (JPEG q75) test set, as the weights table states.
PUBLISHED_ERROR = {folder: OFFICIAL[f"{name}.official"].top1_error for folder, name in FOLDERS.items()}


@pytest.fixture(scope="module")
def official(shared: Path) -> Path:
    path = shared / "checkpoints" / "official-cifar10"
    if not path.is_dir():
        pytest.skip(f"official checkpoints not found in {path}")
    return path


def checkpoint(official: Path, folder: str) -> Path:
    return official / folder / "model_best.pth.tar"


@pytest.fixture(scope="module")
def test_set(cifar10_root: Path) -> tuple[torch.Tensor, np.ndarray]:
    images, labels = load_cifar(cifar10_root, train=False)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    x = (x - torch.tensor(CIFAR10_MEAN)[:, None, None]) / torch.tensor(CIFAR10_STD)[:, None, None]
    return x, labels


def error_percent(model: torch.nn.Module, x: torch.Tensor, labels: np.ndarray) -> float:
    with torch.no_grad():
        pred = torch.cat([model(b).argmax(1) for b in x.split(1000)]).numpy()
    return float((pred != labels).mean() * 100)


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_checkpoint_loads_strictly_into_its_model(official, folder):
    path = checkpoint(official, folder)
    model = import_official(path)  # architecture from the folder name
    assert not model.training
    raw = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    ours = model.state_dict()
    assert set(ours) == set(raw)  # same key names: nothing renamed for these checkpoints
    for key, value in raw.items():
        assert torch.equal(ours[key], value), key
    stems = {n for n, m in model.named_modules() if isinstance(m, PushPullConv2d)}
    assert stems == ({"features.conv0" if "densenet" in folder else "conv1"} if folder.endswith("-pp") else set())
    assert import_official(path, FOLDERS[folder]).state_dict().keys() == ours.keys()


def test_imported_resnet20_pp_reproduces_the_original_error_on_the_full_test_set(official, test_set):
    model = import_official(checkpoint(official, "resnet-20-pp"))
    assert error_percent(model, *test_set) == pytest.approx(PUBLISHED_ERROR["resnet-20-pp"], abs=0.05)


@pytest.mark.parametrize("folder", ["densenet-40-12", "densenet-40-12-pp"])
def test_imported_densenet_classifies(official, test_set, folder):
    x, labels = test_set
    model = import_official(checkpoint(official, folder))
    # a wrong import lands near chance (90% error); the full-set errors are about 19.5% and 17.4%
    assert error_percent(model, x[::25], labels[::25]) < 30


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["densenet-100-12", "densenet-100-12-pp"])
def test_imported_densenet100_classifies(official, test_set, folder):
    x, labels = test_set
    assert error_percent(import_official(checkpoint(official, folder)), x[::10], labels[::10]) < 30


def test_pickle_needing_checkpoint_is_refused_unless_allowed(tmp_path, capsys):
    model = create_model("resnet20")
    path = tmp_path / "resnet-20" / "model_best.pth.tar"
    path.parent.mkdir()
    torch.save({"epoch": 1, "state_dict": model.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle=True"):
        import_official(path)
    assert main(["import-official", str(path), "--out", str(tmp_path / "m.safetensors")]) == 1
    assert "--allow-pickle" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()
    imported = import_official(path, allow_pickle=True)
    assert all(torch.equal(imported.state_dict()[k], v) for k, v in model.state_dict().items())


def test_original_b1_names_and_blur_buffers_are_mapped(tmp_path):
    """The original ResNet-CIFAR names push-pull block convs pp1/pp2 and stores blur filters."""
    torch.manual_seed(0)
    model = create_model("resnet20_b1", aa=3).eval()
    original = {}
    for key, value in model.state_dict().items():
        original["module." + key.replace(".conv1.push", ".pp1.push").replace(".conv2.push", ".pp2.push")] = value
    original["module.layer2.0.conv1.0.filt"] = torch.ones(16, 1, 3, 3) / 9  # the original Downsample buffer
    assert any(".pp1.push.weight" in k for k in original)
    path = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 5, "state_dict": original, "best_prec1": 90.0}, path)
    imported = import_official(path, "ResNet-20-b1")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(imported(x), model(x), rtol=0, atol=0)
    assert any(k.endswith(".filt") for k in original) and not any(
        k.endswith(".filt") for k in official_weights({"state_dict": original}, path)[0])


def test_wrong_architecture_and_unknown_folder_are_explained(official, tmp_path):
    with pytest.raises(ValueError, match="do not fit resnet32"):
        import_official(checkpoint(official, "resnet-20"), "resnet32")
    plain = tmp_path / "weights.pth"
    torch.save(create_model("resnet20").state_dict(), plain)
    with pytest.raises(ValueError, match="pass the model name"):
        import_official(plain)
    assert import_official(plain, "resnet20") is not None  # a bare state dict is accepted too


def test_cli_import_official_writes_a_loadable_saved_model(official, tmp_path, capsys):
    out = tmp_path / "r20pp.safetensors"
    assert main(["import-official", str(checkpoint(official, "resnet-20-pp")), "--model", "ResNet-20-pp",
                 "--out", str(out)]) == 0
    assert "r20pp.json" in capsys.readouterr().out
    result = load_model(out)
    loaded, meta = result.model, result.info.metadata
    assert meta["model"] == "resnet20_pp" and meta["num_classes"] == 10
    assert meta["normalization"] == {"mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD)}
    assert "resnet-20-pp" in meta["source"] and meta["extra"]["epoch"] == 161
    reference = import_official(checkpoint(official, "resnet-20-pp"))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), reference(x), rtol=0, atol=0)


def test_folder_is_accepted_in_place_of_the_file(official, tmp_path):
    folder = official / "resnet-20-pp"
    from_file = import_official(checkpoint(official, "resnet-20-pp"))
    from_folder = import_official(folder)
    assert all(torch.equal(from_folder.state_dict()[k], v) for k, v in from_file.state_dict().items())
    empty = tmp_path / "resnet-20"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="without a .pth"):
        import_official(empty)
