"""Training data: CIFAR / ImageNet datasets, augmentation, and train() end to end with a zoo model."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from pushpull.cli import main
from pushpull.data.cifar import Cutout, cifar_datasets, cifar_normalization, cifar_transform
from pushpull.engine.train import train
from pushpull.recipes import load_recipe


def test_cutout_zeroes_a_clipped_square_at_a_random_centre():
    size = 8
    for seed in range(20):
        torch.manual_seed(seed)
        out = Cutout(size)(torch.ones(3, 12, 10))
        torch.manual_seed(seed)
        cy, cx = int(torch.randint(12, ())), int(torch.randint(10, ()))
        expected = np.ones((12, 10))  # DeVries & Taylor: [c - size/2, c + size/2) clipped to the image
        expected[np.clip(cy - size // 2, 0, 12): np.clip(cy + size // 2, 0, 12),
                 np.clip(cx - size // 2, 0, 10): np.clip(cx + size // 2, 0, 10)] = 0
        for channel in out:
            assert np.array_equal(channel.numpy(), expected)


def test_cifar_transforms():
    mean, std = cifar_normalization("cifar10")
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    plain = cifar_transform(None, mean, std)(image)
    expected = (image.double() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(plain.double(), expected, rtol=1e-6, atol=1e-6)
    # Crop with padding 4 + flip: the output is a (possibly mirrored) 32x32 window of the zero-padded image.
    recipe = load_recipe("cifar-resnet")
    padded = torch.nn.functional.pad(expected, (4, 4, 4, 4), value=0) + 0  # zero padding in uint8 space ...
    padded[:, :4] = padded[:, -4:] = padded[:, :, :4] = padded[:, :, -4:] = float("nan")  # ... any value there
    for seed in range(10):
        torch.manual_seed(seed)
        out = cifar_transform(recipe, mean, std)(image).double()
        windows = [padded[:, y:y + 32, x:x + 32] for y in range(9) for x in range(9)]
        windows += [w.flip(-1) for w in windows]
        assert any(torch.allclose(torch.where(w.isnan(), out, w), out, atol=1e-6) for w in windows)
    for name in ("cifar-wrn-autoaugment-cutout",):
        out = cifar_transform(load_recipe(name), mean, std)(image)
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32


def test_cifar_datasets_from_the_python_layout(tmp_path, fake_cifar10):
    root = fake_cifar10(tmp_path, n_train=8, n_test=8).root
    train_set, test_set = cifar_datasets(root, load_recipe("cifar-resnet"))
    assert (len(train_set), len(test_set)) == (40, 8)
    image, label = test_set[3]
    assert image.shape == (3, 32, 32) and isinstance(label, int)
    with pytest.raises(ValueError, match="not CIFAR"):
        cifar_datasets(root, load_recipe("imagenet-resnet"))


def test_shared_cifar10_loads_as_training_data(cifar10_root):
    train_set, test_set = cifar_datasets(cifar10_root, load_recipe("cifar-resnet"))
    assert (len(train_set), len(test_set)) == (50000, 10000)
    assert torch.bincount(train_set.labels).tolist() == [5000] * 10


def test_imagenet_folders(tmp_path):
    from pushpull.data.imagenet import imagenet_datasets

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for wnid in ("n01440764", "n01443537"):
            (tmp_path / split / wnid).mkdir(parents=True)
            Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(tmp_path / split / wnid / "a.JPEG")
    recipe = load_recipe("imagenet-resnet", crop_size=24, eval_resize=28)
    train_set, val_set = imagenet_datasets(tmp_path, recipe)
    assert train_set.classes == ["n01440764", "n01443537"] and len(val_set) == 2
    assert train_set[0][0].shape == val_set[1][0].shape == (3, 24, 24)
    with pytest.raises(FileNotFoundError, match="val"):
        imagenet_datasets(tmp_path / "train", recipe)


def test_train_saves_a_model_that_load_model_rebuilds(tmp_path, fake_cifar10):
    from pushpull.models import load_model

    root = fake_cifar10(tmp_path / "data", n_train=8, n_test=8).root
    result = train("resnet20_pp", "cifar-resnet", root, tmp_path / "run", epochs=1, batch_size=40, workers=0,
                   progress=False)
    assert result.finished and result.model_path == tmp_path / "run" / "model.safetensors"
    loaded = load_model(result.model_path)
    model, meta = loaded.model, loaded.info.metadata
    assert meta["model"] == "resnet20_pp" and meta["normalization"]["mean"] == list(cifar_normalization()[0])
    assert meta["extra"]["recipe"]["epochs"] == 1
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), result.model.eval()(x))
    assert (tmp_path / "run" / "config.json").exists()


def test_max_steps_still_saves_a_model_with_its_sidecar(tmp_path, fake_cifar10):
    from pushpull.models import load_model

    root = fake_cifar10(tmp_path / "data", n_train=8, n_test=8).root
    kwargs = dict(epochs=1, batch_size=8, limit=16, workers=0, progress=False)
    result = train("resnet20", "cifar-resnet", root, tmp_path / "run", max_steps=1, **kwargs)
    assert not result.finished and result.stopped_by == "max_steps"
    assert result.model_path == tmp_path / "run" / "model.safetensors" and (tmp_path / "run" / "model.json").exists()
    loaded = load_model(result.model_path)
    model, meta = loaded.model, loaded.info.metadata
    assert meta["extra"]["steps"] == 1 and meta["extra"]["finished"] is False and meta["extra"]["limit"] == 16
    assert "stopped at step 1" in meta["source"]
    for key, value in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    finished = train("resnet20", "cifar-resnet", root, tmp_path / "run", **kwargs)  # the same call without the cap
    assert finished.finished and load_model(finished.model_path).info.metadata["extra"]["steps"] == 2


def test_train_command_line(tmp_path, capsys, fake_cifar10):
    root = fake_cifar10(tmp_path / "data", n_train=8, n_test=8).root
    argv = ["train", "--model", "resnet20", "--data", str(root), "--out", str(tmp_path / "run"), "--epochs", "1",
            "--batch-size", "20", "--workers", "0", "--no-progress", "--lr", "0.05", "--cutout", "8"]
    assert main(argv + ["--max-steps", "1"]) == 0
    captured = capsys.readouterr()
    assert "saved" in captured.out and "stopped (max_steps=1)" in captured.err and "--max-steps" in captured.err
    assert main(argv + ["--lr", "0.1"]) == 1  # a different recipe cannot continue it
    assert "lr was 0.05" in capsys.readouterr().err
    assert main(argv + ["--limit", "20"]) == 1  # nor another subset
    assert "limit: was None, now 20" in capsys.readouterr().err
    assert main(argv) == 0  # the same command continues
    assert "resuming" in capsys.readouterr().err
    assert (tmp_path / "run" / "model.safetensors").exists()
    assert main(["train", "--model", "resnet20", "--recipe", "cifar-resnt", "--data", str(root)]) == 1
    assert "did you mean 'cifar-resnet'" in capsys.readouterr().err
    assert main(["train", "--model", "resnet2O"]) == 1  # the model's name is checked before the data
    assert "unknown model 'resnet2O'; did you mean" in capsys.readouterr().err


class _SignalAtFirstItem(torch.utils.data.Dataset):
    def __init__(self, dataset, signum):
        self.dataset, self.signum, self.sent = dataset, signum, False

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)
        return self.dataset[i]


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_train_command_line_stops_on_a_signal_with_its_exit_code(tmp_path, capsys, monkeypatch, fake_cifar10,
                                                                  signum, code):
    import pushpull.engine.train as engine

    root = fake_cifar10(tmp_path / "data", n_train=8, n_test=8).root
    argv = ["train", "--model", "resnet20", "--data", str(root), "--out", str(tmp_path / "run"), "--epochs", "1",
            "--batch-size", "8", "--limit", "24", "--workers", "0", "--no-progress"]
    build = engine.build_datasets
    monkeypatch.setattr(engine, "build_datasets", lambda *a, **k: (_SignalAtFirstItem(build(*a, **k)[0], signum),
                                                                    *build(*a, **k)[1:]))
    assert main(argv) == code
    err = capsys.readouterr().err
    assert f"stopped ({signum.name}) at epoch 0 step 1" in err and "rerun the same command to resume" in err
    assert not (tmp_path / "run" / "model.safetensors").exists()
    monkeypatch.setattr(engine, "build_datasets", build)
    assert main(argv) == 0
    assert "resuming" in capsys.readouterr().err and (tmp_path / "run" / "model.safetensors").exists()
