"""pushpull demo: trains both networks, evaluates them on corrupted digits, writes table + plot; deterministic."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pushpull.cli import main
from pushpull.data.corruptions import corrupt
from pushpull.data.digits import digits_normalization, digits_split, load_digits_images
from pushpull.demo import DemoNet, run_demo, summary_rows
from pushpull.layers import PushPullConv2d


def test_digits_are_real_upsampled_rgb_images():
    images, labels = load_digits_images()
    assert images.shape == (1797, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images[..., 0], images[..., 2]) and images.max() == 255
    assert np.array_equal(np.bincount(labels), np.bincount(labels, minlength=10)) and len(np.unique(labels)) == 10
    x_train, y_train, x_test, y_test = digits_split()
    assert len(x_train) + len(x_test) == 1797 and len(x_test) == 450
    assert np.abs(np.bincount(y_test) / len(y_test) - 0.1).max() < 0.01  # stratified
    mean, std = digits_normalization(x_train)
    assert mean[0] == pytest.approx(x_train.mean() / 255) and std[0] == pytest.approx((x_train / 255).std())


def test_twins_differ_only_in_the_first_layer():
    plain, pp = DemoNet(push_pull=False), DemoNet(push_pull=True)
    assert isinstance(pp[0], PushPullConv2d) and isinstance(plain[0], torch.nn.Conv2d)
    assert [p.shape for p in plain.parameters()] == [p.shape for p in pp.parameters()]
    assert [type(m) for m in plain[1:]] == [type(m) for m in pp[1:]]


def test_demo_writes_results_and_is_reproducible(tmp_path):
    out = tmp_path / "demo"
    corruptions = ["gaussian_noise", "contrast"]
    results = run_demo(out, epochs=1, corruptions=corruptions, progress=False)
    errors = results["errors"]
    assert set(errors) == {"plain", "push-pull"}
    for entry in errors.values():
        assert list(entry["corruptions"]) == corruptions
        assert all(len(v) == 5 and all(0 <= e <= 1 for e in v) for v in entry["corruptions"].values())
        assert entry["mean_corrupted"] == pytest.approx(np.mean([np.mean(v) for v in entry["corruptions"].values()]))
    assert results["test_images"] == 450
    assert json.loads((out / "results.json").read_text())["errors"] == errors
    table = (out / "results.md").read_text().splitlines()
    assert len(table) == 2 + len(summary_rows(errors, 450)) and "push-pull" in table[0]
    with Image.open(out / "results.png") as png:
        assert png.format == "PNG" and png.size[0] > 800
    for variant in ("plain", "push-pull"):
        assert (out / variant / "checkpoint.pt").exists() and (out / variant / "metrics.csv").exists()

    # The errors are what the trained model does on the corrupted test split.
    from pushpull.engine.checkpoint import load_checkpoint

    model = DemoNet(push_pull=True)
    model.load_state_dict(load_checkpoint(out / "push-pull" / "checkpoint.pt")["model"])
    x_train, _, x_test, y_test = digits_split()
    mean, std = digits_normalization(x_train)
    noisy = corrupt(x_test, "gaussian_noise", 3, seed=0, params="cifar")
    x = (torch.from_numpy(noisy).permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) \
        / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        predictions = model.eval()(x).argmax(1).numpy()
    assert np.mean(predictions != y_test) == errors["push-pull"]["corruptions"]["gaussian_noise"][2]

    # Re-running (here through the command line) resumes the finished runs and gives the same numbers.
    assert main(["demo", "--out", str(out), "--epochs", "1", "--corruptions", ",".join(corruptions), "--no-progress"]) == 0
    assert json.loads((out / "results.json").read_text())["errors"] == errors


def test_ctrl_c_while_training_stops_the_demo_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    """fit() returns when Ctrl-C stops it; the demo must stop too, not train the twin and compare a half-trained net."""
    from pushpull.engine.train import TrainResult

    trained = []

    def interrupted_fit(model, train_set, test_set, recipe, out, **kwargs):
        trained.append(out.name)
        return TrainResult(model, [], out, finished=False, stopped_by="SIGINT")

    monkeypatch.setattr("pushpull.engine.train.fit", interrupted_fit)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--corruptions", "contrast", "--no-progress"]) == 130
    assert capsys.readouterr().err.endswith("pushpull demo: interrupted; rerun the same command to resume\n")
    assert trained == ["plain"] and not (out / "results.json").exists() and not (out / "results.md").exists()


def test_demo_rejects_unknown_corruption(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--epochs", "1", "--corruptions", "gausian_noise",
                 "--no-progress"]) != 0
    assert "gausian_noise" in capsys.readouterr().err


@pytest.mark.slow
def test_full_demo_push_pull_is_more_robust(tmp_path):
    results = run_demo(tmp_path / "demo", progress=False)
    errors = results["errors"]
    assert errors["push-pull"]["mean_corrupted"] < errors["plain"]["mean_corrupted"]
    assert errors["plain"]["clean"] < 0.05 and errors["push-pull"]["clean"] < 0.05


def test_demo_on_a_cifar_folder(tmp_path, fake_cifar10):
    root = fake_cifar10(tmp_path / "data", n_train=10, n_test=10).root
    results = run_demo(tmp_path / "demo", root, epochs=1, corruptions=["gaussian_noise"], progress=False)
    assert results["setting"].startswith("CIFAR-10") and results["test_images"] == 2  # every 5th of 10
    assert results["recipe"]["name"] == "demo-cifar10"
    assert (tmp_path / "demo" / "results.png").exists()
