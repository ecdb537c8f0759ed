"""``pushpull.load_model``: every spec form through the one resolver, and its normalisation rule."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import pushpull
from pushpull.data.cifar import cifar_normalization
from pushpull.data.constants import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from pushpull.models import LoadedModel, UnsafeCheckpointError, create_model, import_official, load_model, save_model
from pushpull.models.load import SpecKind

CIFAR100_MEAN, CIFAR100_STD = cifar_normalization("cifar100")
SAVED_MEAN, SAVED_STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _same_outputs(a: nn.Module, b: nn.Module) -> bool:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def trained() -> nn.Module:
    torch.manual_seed(1)
    return create_model("resnet20_pp").eval()


def _fake_official(path: Path, model: nn.Module, **entries) -> Path:
    """A checkpoint as the original code writes it: ``module.``-prefixed keys under ``state_dict``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 7, "state_dict": state, "best_prec1": torch.tensor(91.5), **entries}, path)
    return path


def test_load_model_is_public():
    assert pushpull.load_model is load_model and pushpull.LoadedModel is LoadedModel


def test_registry_name_and_paper_alias_build_the_same_architecture():
    plain, alias = load_model("resnet20_pp"), load_model("ResNet-20-pp")
    for loaded in (plain, alias):
        assert loaded.info.name == "resnet20_pp" and loaded.info.kind is SpecKind.REGISTRY
        assert loaded.info.weights is None and len(loaded.info.sha256) == 64  # random weights, fingerprinted
        assert not loaded.model.training
    assert alias.info.label == "ResNet-20-pp"  # the label is the spec as typed
    assert plain.model.state_dict().keys() == alias.model.state_dict().keys()
    assert load_model("resnet20", num_classes=7).model.fc.out_features == 7
    assert load_model("resnet20_pp", model_kwargs={"aa": 3}).info.model_kwargs == {"aa": 3}


def test_registry_name_with_safetensors_weights(trained, tmp_path):
    weights = tmp_path / "w.safetensors"
    save_file(trained.state_dict(), str(weights))
    loaded = load_model("resnet20_pp", weights=weights)
    assert _same_outputs(loaded.model, trained)
    assert loaded.info.weights == weights and loaded.info.sha256 == _sha256(weights)
    with pytest.raises(ValueError, match=r"do not fit resnet20 \(w.safetensors\).*unexpected"):
        load_model("resnet20", weights=weights)


def test_registry_name_with_torch_weights_pickles_only_when_allowed(trained, tmp_path):
    plain = tmp_path / "w.pth"
    torch.save({"model": trained.state_dict()}, plain)
    assert _same_outputs(load_model("resnet20_pp", weights=plain).model, trained)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": trained.state_dict(), "args": argparse.Namespace(lr=0.1)}, unsafe)
    with pytest.raises(UnsafeCheckpointError, match=r"unsafe.pth cannot be read safely.*allow_pickle=True"):
        load_model("resnet20_pp", weights=unsafe)
    assert _same_outputs(load_model("resnet20_pp", weights=unsafe, allow_pickle=True).model, trained)
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(plain.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"cut.pth is not a readable checkpoint"):
        load_model("resnet20_pp", weights=truncated)


def test_a_damaged_legacy_checkpoint_is_a_one_line_error_naming_it(trained, tmp_path):
    # The original authors' files are torch's legacy (non-zip) format, whose unpickler fails on a cut or
    # damaged file with struct.error, IndexError, KeyError... depending on where the damage falls.
    whole = tmp_path / "whole.pth.tar"
    torch.save({"state_dict": trained.state_dict()}, whole, _use_new_zipfile_serialization=False)
    data = whole.read_bytes()
    damaged = tmp_path / "model_best.pth.tar"
    for cut in [*range(0, 300, 3), *range(300, len(data), len(data) // 50)]:  # the header, then the tensors
        damaged.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"model_best.pth.tar (is not a readable checkpoint|cannot be read)"):
            load_model("resnet20_pp", weights=damaged)


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_a_file_that_is_no_checkpoint_is_not_offered_a_full_unpickle(allow_pickle, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("weights are in the other folder\n")
    with pytest.raises(ValueError, match=r"notes.txt is not a checkpoint \(neither a torch.save nor") as err:
        load_model("resnet20_pp", weights=text, allow_pickle=allow_pickle)
    assert "allow_pickle" not in str(err.value)


def test_saved_model_and_its_sidecar(trained, tmp_path):
    path = save_model(trained, tmp_path / "r20pp.safetensors", name="resnet20_pp", mean=SAVED_MEAN, std=SAVED_STD,
                      source="unit test")
    for spec in (path, tmp_path / "r20pp.json", str(path)):
        loaded = load_model(spec)
        assert loaded.info.kind is SpecKind.SAVED and loaded.info.name == "resnet20_pp"
        assert loaded.info.label == "r20pp" and loaded.info.source == "unit test"
        assert loaded.info.weights == path and loaded.info.sha256 == _sha256(path)
        assert loaded.normalization.mean == SAVED_MEAN and loaded.normalization.source == "model metadata"
        assert _same_outputs(loaded.model, trained)
    with pytest.raises(ValueError, match="carries its own weights"):
        load_model(path, weights=path)
    with pytest.raises(ValueError, match=r"records its own architecture.*num_classes=100 does not apply"):
        load_model(path, num_classes=100)
    assert load_model(path, num_classes=10).info.name == "resnet20_pp"  # what it records anyway: accepted


def test_the_weights_file_given_is_the_one_loaded(trained, tmp_path):
    path = save_model(trained, tmp_path / "r20pp.safetensors", name="resnet20_pp", mean=SAVED_MEAN, std=SAVED_STD,
                      source="unit test")
    cut = tmp_path / "cut.safetensors"  # a truncated copy beside a copy of the sidecar, which names r20pp
    cut.write_bytes(path.read_bytes()[:100_000])
    (tmp_path / "cut.json").write_text((tmp_path / "r20pp.json").read_text())
    with pytest.raises(ValueError, match=r"cut\.safetensors does not match the sha256 in cut\.json"):
        load_model(cut)
    assert load_model(tmp_path / "cut.json").info.weights == path  # a sidecar given alone names its weights


def test_damaged_sidecar_is_named(trained, tmp_path):
    path = save_model(trained, tmp_path / "m.safetensors", name="resnet20_pp", mean=SAVED_MEAN, std=SAVED_STD,
                      source="unit test")
    sidecar = tmp_path / "m.json"
    sidecar.write_text(sidecar.read_text()[:40])
    with pytest.raises(ValueError, match=r"m\.json.*not valid JSON"):
        load_model(path)
    sidecar.write_text(json.dumps({"format_version": 1, "model": "resnet20_pp"}))
    with pytest.raises(ValueError, match=r"m\.json is not a pushpull model sidecar"):
        load_model(path)
    sidecar.write_text(json.dumps({"format_version": 1, "model": "resnet20_pp", "model_kwargs": {},
                                   "normalization": {"mean": [0.5]}}))
    with pytest.raises(ValueError, match=r"m\.json is damaged: .*'normalization' must hold 'mean' and 'std'"):
        load_model(path)
    sidecar.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"m\.json is not a pushpull model sidecar"):
        load_model(path)


def test_original_checkpoint_file_and_folder(trained, tmp_path):
    file = _fake_official(tmp_path / "resnet-20-pp" / "model_best.pth.tar", trained)
    for spec in (file, file.parent):
        loaded = load_model(spec)
        assert loaded.info.kind is SpecKind.OFFICIAL and loaded.info.name == "resnet20_pp"
        assert loaded.info.label == "resnet-20-pp"  # model_best says less than its folder
        assert loaded.info.weights == file and loaded.info.sha256 == _sha256(file)
        assert loaded.info.model_kwargs == {"num_classes": 10}  # inferred from the weights
        assert loaded.info.metadata == {"epoch": 7, "best_prec1": 91.5}
        assert (loaded.normalization.mean, loaded.normalization.std) == (CIFAR10_MEAN, CIFAR10_STD)
        assert _same_outputs(loaded.model, trained)
    unnamed = _fake_official(tmp_path / "downloads" / "ckpt.pth", trained)
    with pytest.raises(ValueError, match="pass the model name"):
        load_model(unnamed)
    assert load_model(unnamed, arch="ResNet-20-pp").info.name == "resnet20_pp"
    with pytest.raises(ValueError, match=r"do not fit resnet32"):
        load_model(unnamed, arch="resnet32")


def test_folder_of_several_checkpoints(trained, tmp_path):
    original = tmp_path / "resnet-20-pp"
    best = _fake_official(original / "model_best.pth.tar", trained)
    _fake_official(original / "checkpoint.pth.tar", create_model("resnet20_pp"))
    assert load_model(original).info.weights == best  # the original code's best, not its last epoch
    run = tmp_path / "run"
    saved = save_model(trained, run / "model.safetensors", name="resnet20_pp", mean=SAVED_MEAN, std=SAVED_STD,
                       source="training run")
    torch.save({"model": trained.state_dict()}, run / "checkpoint.pt")
    loaded = load_model(run)
    assert loaded.info.weights == saved and loaded.info.label == "run"  # a training run's final model
    ambiguous = tmp_path / "two"
    for name in ("a.pth", "b.pth"):
        _fake_official(ambiguous / name, trained)
    with pytest.raises(ValueError, match=r"two holds 2 checkpoints \(a.pth, b.pth\): name the file"):
        load_model(ambiguous)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty is a folder without a .pth"):
        load_model(tmp_path / "empty")


def test_shared_original_checkpoints(shared):
    folder = shared / "checkpoints" / "official-cifar10" / "resnet-20-pp"
    if not (folder / "model_best.pth.tar").is_file():
        pytest.skip("official checkpoints not in the shared folder")
    from_folder = load_model(folder, dataset="cifar100")  # the checkpoint's own normalisation wins over a dataset's
    assert from_folder.info.name == "resnet20_pp" and from_folder.info.label == "resnet-20-pp"
    assert from_folder.normalization.source == "model metadata" and from_folder.normalization.mean == CIFAR10_MEAN
    assert from_folder.info.metadata["epoch"] == 161
    assert _same_outputs(from_folder.model, import_official(folder / "model_best.pth.tar"))


def test_import_official_saves_what_load_model_reads(trained, tmp_path):
    file = _fake_official(tmp_path / "resnet-20-pp" / "model_best.pth.tar", trained)
    out = tmp_path / "imported.safetensors"
    import_official(file, out=out)
    loaded = load_model(out)
    assert loaded.info.metadata["extra"] == {"epoch": 7, "best_prec1": 91.5}
    assert loaded.info.source == f"official push-pull checkpoint {file.resolve()}"
    assert loaded.normalization.mean == CIFAR10_MEAN and _same_outputs(loaded.model, trained)
    with pytest.raises(ValueError, match="is a saved model, not an original push-pull checkpoint"):
        import_official(out)


def test_torchvision_name():
    loaded = load_model("torchvision:resnet18", num_classes=10)
    assert loaded.info.kind is SpecKind.TORCHVISION and loaded.info.name == "torchvision:resnet18"
    assert loaded.model.fc.out_features == 10 and loaded.info.weights is None
    assert loaded.normalization.mean == IMAGENET_MEAN and "torchvision" in loaded.normalization.source
    assert load_model("torchvision:resnet18", dataset="cifar10").normalization.mean == CIFAR10_MEAN
    with pytest.raises(ValueError, match=r"unknown torchvision model 'resnt18'; did you mean 'resnet18'"):
        load_model("torchvision:resnt18")


def test_timm_name():
    pytest.importorskip("timm")
    loaded = load_model("timm:resnet18", num_classes=10)
    assert loaded.info.kind is SpecKind.TIMM and loaded.model.get_classifier().out_features == 10
    assert loaded.normalization.mean == tuple(loaded.model.pretrained_cfg["mean"])


def test_module_spec(trained, tmp_path):
    weights = tmp_path / "w.safetensors"
    save_file(trained.state_dict(), str(weights))
    loaded = load_model(create_model("resnet20_pp"), weights=weights, dataset="cifar10", model_kwargs={"aa": 0})
    assert loaded.info.kind is SpecKind.MODULE and loaded.info.name == "ResNetCifar"
    assert loaded.info.model_kwargs == {"aa": 0}  # recorded for reports, not applied
    assert loaded.info.weights == weights and _same_outputs(loaded.model, trained)
    assert load_model(trained, dataset="cifar10").model is trained  # as given, on its device


def test_missing_paths_and_typos_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"saved model not found: .*none.safetensors"):
        load_model(tmp_path / "none.safetensors")
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*none.pth.tar"):
        load_model(tmp_path / "none.pth.tar")
    with pytest.raises(FileNotFoundError, match=r"no such file or folder: .*runs/r20"):
        load_model(str(tmp_path / "runs" / "r20"))
    with pytest.raises(ValueError, match=r"unknown model 'resnet21'; did you mean .*'resnet20'.*torchvision:NAME"):
        load_model("resnet21")
    with pytest.raises(ValueError, match=r"resnet20: .*unknown option"):
        load_model("resnet20", model_kwargs={"depth": 3})
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar11'"):
        load_model("resnet20", dataset="cifar11")


def test_normalisation_precedence(trained, tmp_path):
    saved = save_model(trained, tmp_path / "m.safetensors", name="resnet20_pp", mean=SAVED_MEAN, std=SAVED_STD,
                       source="unit test")
    given = dict(mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1))

    def norm(spec, **kw):
        n = load_model(spec, **kw).normalization
        return n.mean, n.std, n.source

    # 1. explicit arguments win over everything
    assert norm(saved, dataset="cifar100", **given) == (given["mean"], given["std"], "given")
    assert norm("resnet20", **given) == (given["mean"], given["std"], "given")
    # 2. the weights' metadata beats the dataset
    assert norm(saved, dataset="cifar100") == (SAVED_MEAN, SAVED_STD, "model metadata")
    # 3. the dataset's statistics beat the registry entry (a CIFAR-100 ResNet-20 uses CIFAR-100's)
    assert norm("resnet20", dataset="cifar100") == (CIFAR100_MEAN, CIFAR100_STD, "default for cifar100")
    assert norm("resnet18", dataset="imagenet")[:2] == (IMAGENET_MEAN, IMAGENET_STD)
    # 4. the registry entry (ModelInfo.mean/std) when nothing else says
    assert norm("resnet18") == (IMAGENET_MEAN, IMAGENET_STD, "registry entry of resnet18")
    assert norm("resnet20") == (CIFAR10_MEAN, CIFAR10_STD, "registry entry of resnet20")
    # 5. else an error
    with pytest.raises(ValueError, match="no normalisation known"):
        load_model(nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="give both mean and std"):
        load_model("resnet20", mean=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match=r"mean needs 3 values \(R, G, B\), got \[0.5, 0.5\]"):
        load_model("resnet20", mean=(0.5, 0.5), std=(1, 1))
    with pytest.raises(ValueError, match="std must be positive"):
        load_model("resnet20", mean=(0.5,), std=(0,))
    assert norm("resnet20", mean=(0.5,), std=(0.25,))[:2] == ((0.5,) * 3, (0.25,) * 3)  # one value: all channels


def test_results_entry(trained, tmp_path):
    weights = tmp_path / "w.pth"
    torch.save(trained.state_dict(), weights)
    entry = load_model("ResNet-20-pp", weights=weights, dataset="cifar10").describe()
    assert entry == {"name": "resnet20_pp", "spec": "ResNet-20-pp", "label": "ResNet-20-pp", "model_kwargs": {},
                     "weights": str(weights), "weights_sha256": _sha256(weights),
                     "normalization": {"mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD),
                                       "from": "default for cifar10"}, "source": None}


def test_evaluate_and_import_use_the_resolver(trained, tmp_path, fake_cifar10):
    """evaluate records load_model's label, options and normalisation; a name without weights is refused."""
    root = fake_cifar10(tmp_path / "data", n_test=4).root
    file = _fake_official(tmp_path / "resnet-20-pp" / "model_best.pth.tar", trained)
    res = pushpull.evaluate(str(file.parent), data=root, benchmarks="cifar10-c", corruptions=[], progress=False)
    model = res["model"]
    assert (model["name"], model["label"], model["model_kwargs"]) == ("resnet20_pp", "resnet-20-pp", {"num_classes": 10})
    assert model["normalization"] == {"mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD), "from": "model metadata"}
    with pytest.raises(ValueError, match="needs --weights FILE"):
        pushpull.evaluate("resnet20_pp", data=root, benchmarks="cifar10-c", corruptions=[], progress=False)
    assert issubclass(UnsafeCheckpointError, ValueError)  # so every caller's ValueError catch names the file


def test_one_code_path_reads_a_checkpoint():
    """Only ``models/io.py`` calls ``torch.load`` or safetensors' readers."""
    src = Path(pushpull.__file__).parent
    readers = re.compile(r"torch\.load\(|\bload_file\(|safe_open\(|safetensors\.torch\.load\(")
    callers = sorted(str(p.relative_to(src)) for p in src.rglob("*.py") if readers.search(p.read_text()))
    assert callers == ["models/io.py"]
