"""``pushpull analyze``: each sub-command writes a figure and JSON whose numbers match the library's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pushpull.analysis import (
    filter_responses,
    frequency_response,
    most_similar_channels,
    sparsity_stats,
)
from pushpull.cli import main
from pushpull.engine.evaluate import Normalize, strided_indices


@pytest.fixture(scope="module")
def saved_pair(tmp_path_factory):
    """A plain and a push-pull ResNet-20 saved in our format, with a non-default normalisation."""
    from pushpull.models import create_model, load_model, save_model

    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    paths = []
    for name in ("resnet20", "resnet20_pp"):
        path = folder / f"{name}.safetensors"
        save_model(create_model(name), path, name=name, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), source="test")
        paths.append(path)
    return paths, [load_model(p).model for p in paths]


def _png(path, rng):
    image = np.full((32, 32, 3), 60, np.uint8)
    image[:, 12:] = 190
    image[20:, :] //= 2
    image = np.clip(image + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(path)
    return image


def test_responses_command(saved_pair, tmp_path, capsys):
    from pushpull.data.corruptions import corrupt

    (plain_path, pp_path), (plain, pp) = saved_pair
    image = _png(tmp_path / "edge.png", np.random.default_rng(0))
    out = tmp_path / "out"
    rc = main(["analyze", "responses", str(plain_path), "--compare", str(pp_path), "--image",
               str(tmp_path / "edge.png"), "--severities", "1,5", "--seed", "3", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    with Image.open(out / "responses.png") as fig:
        assert fig.size[0] > 500
    result = json.loads((out / "responses.json").read_text())
    i, j, cosine = most_similar_channels(plain.conv1, pp.conv1)
    assert result["kernel_cosine_similarity"] == pytest.approx(cosine)
    assert [(f["label"], f["channel"]) for f in result["filters"]] == [("resnet20", i), ("resnet20_pp", j)]
    # Recompute from the library and the corruption generator: same numbers.
    noisy = np.stack([image] + [corrupt(image[None], "gaussian_noise", s, seed=3)[0] for s in (1, 5)])
    x = Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))(noisy)
    expected = filter_responses(pp, "conv1", j, x)[0].correlations
    assert result["filters"][1]["correlation_with_clean"] == pytest.approx(expected, abs=1e-6)


def test_spectrum_command(saved_pair, tmp_path, capsys):
    (_, pp_path), (_, pp) = saved_pair
    out = tmp_path / "out"
    rc = main(["analyze", "spectrum", str(pp_path), "--layer", "conv1", "--frequencies", "5", "--orientations", "4",
               "--channels", "0", "3", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert (out / "spectrum.png").stat().st_size > 10_000
    result = json.loads((out / "spectrum.json").read_text())["models"]["resnet20_pp"]
    assert result["frequencies_cycles_per_pixel"] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert result["orientations_degrees"] == [0, 45, 90, 135]
    assert len(result["channels"]) == 16  # all channels in the JSON, two in the figure
    spec = frequency_response(pp.conv1, (0.2, 0.25, 0.3), frequencies=[0.1, 0.2, 0.3, 0.4, 0.5],
                              orientations=[0, 45, 90, 135])
    ch = result["channels"][3]
    np.testing.assert_allclose(ch["response"]["push_pull"], spec.responses["push_pull"][3], rtol=1e-9)
    assert ch["summary"]["push_pull"] == spec.summary("push_pull", 3)


def test_user_mistakes_are_named(saved_pair, tmp_path, capsys):
    (plain_path, _), _ = saved_pair
    assert main(["analyze", "weights", "resnet21", "--out", str(tmp_path)]) == 1  # a failure, not a usage error
    assert "resnet21" in capsys.readouterr().err
    assert main(["analyze", "responses", str(plain_path), "--image", "5", "--out", str(tmp_path)]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["analyze", "responses", str(plain_path), "--image", str(tmp_path / "nope.png")]) == 1
    assert "nope.png" in capsys.readouterr().err
    assert main(["analyze", "weights", str(plain_path), "--layers", "layer9.*", "--out", str(tmp_path)]) == 2
    assert "layer9" in capsys.readouterr().err
    assert main(["analyze", "responses", str(plain_path), "--image", "x.png", "--noise", "rain"]) == 2
    assert "rain" in capsys.readouterr().err
    assert main(["analyze", "spectrum", str(plain_path), str(plain_path), "--layer", "conv1", "fc", "conv1"]) == 2
    assert "one per model (2), got 3" in capsys.readouterr().err
    assert main(["analyze", "weights", str(plain_path), "--data", str(tmp_path / "void"), "--out", str(tmp_path)]) == 1
    assert "void" in capsys.readouterr().err


@pytest.fixture(scope="module")
def official(shared):
    folder = shared / "checkpoints" / "official-cifar10"
    if not (folder / "resnet-20" / "model_best.pth.tar").is_file():
        pytest.skip("official checkpoints not in the shared folder")
    return folder


def test_official_resnet20_push_pull_is_robust_and_sparse(official, cifar10_root, tmp_path, capsys):
    """The paper's claims on the authors' own networks: Fig. 2 (noise) and Fig. 4 (sparsity)."""
    from pushpull.models import import_official

    plain, pp = (str(official / name) for name in ("resnet-20", "resnet-20-pp"))
    out = tmp_path / "out"
    assert main(["analyze", "responses", plain, pp, "--image", "7", "--data", str(cifar10_root),
                 "--average", "4", "--out", str(out)]) == 0, capsys.readouterr().err
    result = json.loads((out / "responses.json").read_text())
    assert all(p > c for c, p in zip(*(f["correlation_with_clean"] for f in result["filters"])))
    average = result["mean_over_test_images"]
    assert average["indices"] == strided_indices(10000, 4).tolist()
    assert all(p > c for c, p in zip(*(average["correlation_with_clean"][m] for m in ("resnet-20", "resnet-20-pp"))))

    assert main(["analyze", "weights", plain, pp, "--data", str(cifar10_root), "--num-images", "40",
                 "--out", str(out)]) == 0, capsys.readouterr().err
    report = json.loads((out / "weights.json").read_text())["models"]
    weights = import_official(official / "resnet-20-pp" / "model_best.pth.tar").conv1.weight
    expected = sparsity_stats(weights.detach().numpy())
    got = report["resnet-20-pp"]["layers"]["conv1"]
    assert got["fraction_near_zero"] == pytest.approx(expected.pop("fraction_near_zero"))
    assert {k: got[k] for k in expected} == pytest.approx(expected)
    assert list(report["resnet-20"]["activations"]) == ["relu", "layer1.0"]
    assert report["resnet-20-pp"]["activations"]["relu"]["images"] == 40
    for stat in ("hoyer", "excess_kurtosis"):  # sparser push-pull kernels
        assert report["resnet-20-pp"]["layers"]["conv1"][stat] > report["resnet-20"]["layers"]["conv1"][stat]
    assert (report["resnet-20-pp"]["activations"]["relu"]["fraction_zero"]
            > report["resnet-20"]["activations"]["relu"]["fraction_zero"])
    with Image.open(out / "weights.png") as fig:
        assert fig.size[0] > 500


@pytest.mark.slow
@pytest.mark.parametrize("plain,pp", [("resnet-20", "resnet-20-pp"), ("resnet-56", "resnet-56-pp"),
                                      ("densenet-40-12", "densenet-40-12-pp")])
def test_official_push_pull_responses_degrade_less_on_average(official, cifar10_root, tmp_path, plain, pp):
    """Fig. 2 over 100 test images: the push-pull filter keeps its clean response better at every severity."""
    assert main(["analyze", "responses", str(official / plain), str(official / pp), "--image", "0", "--data",
                 str(cifar10_root), "--average", "100", "--out", str(tmp_path)]) == 0
    mean = json.loads((tmp_path / "responses.json").read_text())["mean_over_test_images"]["correlation_with_clean"]
    assert all(b > a for a, b in zip(mean[plain], mean[pp])), mean
