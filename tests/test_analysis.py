"""Analysis tools on constructed cases: known sparsity values, known spectra, an edge under noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from pushpull import PushPullConv2d
from pushpull.analysis import (
    conv_layers,
    excess_kurtosis,
    filter_responses,
    first_block,
    frequency_response,
    gratings,
    hoyer_sparsity,
    kernel_response,
    layer_output,
    measure_sparsity,
    most_similar_channels,
    pearson,
    select_layers,
    sparsity_stats,
)
from pushpull.analysis.spectrum import operator_outputs
from pushpull.engine.evaluate import Normalize

SOBEL_X = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8


# --- sparsity -----------------------------------------------------------------------------------

def test_hoyer_known_vectors():
    assert hoyer_sparsity(np.eye(1, 50)[0]) == pytest.approx(1.0)
    assert hoyer_sparsity(np.full(50, -0.3)) == pytest.approx(0.0, abs=1e-12)
    assert hoyer_sparsity([0.0, 0, 0]) == 1.0
    # [1, 1, 0, 0]: l1 / l2 = sqrt(2), so (2 - sqrt(2)) / (2 - 1)
    assert hoyer_sparsity([1.0, -1, 0, 0]) == pytest.approx(2 - math.sqrt(2))
    x = np.random.default_rng(0).normal(size=200)
    assert hoyer_sparsity(x) == pytest.approx(hoyer_sparsity(-7 * x))  # scale and sign free
    with pytest.raises(ValueError):
        hoyer_sparsity([1.0])


def test_excess_kurtosis_known_samples():
    assert excess_kurtosis(np.tile([-1.0, 1.0], 10)) == pytest.approx(-2.0)  # two-point: E x^4 / (E x^2)^2 = 1
    # one outlier among n zeros: n (n^2 - 3n + 3) / ((n - 1) ... ) in closed form: check against the definition
    v = np.r_[np.zeros(99), 1.0]
    d = v - v.mean()
    assert excess_kurtosis(v) == pytest.approx(np.mean(d**4) / np.mean(d**2) ** 2 - 3)
    rng = np.random.default_rng(1)
    x = rng.laplace(size=400_000)
    assert excess_kurtosis(x) == pytest.approx(3.0, abs=0.15)  # Laplace: 3
    assert excess_kurtosis(rng.uniform(size=400_000)) == pytest.approx(-1.2, abs=0.02)
    y = rng.normal(size=1000) ** 3
    assert excess_kurtosis(y) == pytest.approx(scipy.stats.kurtosis(y, fisher=True, bias=True))
    assert math.isnan(excess_kurtosis(np.ones(5)))


def test_sparsity_stats_counts():
    x = np.array([0.0, 0.0005, -0.005, 0.02, -0.5, 1.0, 0.0, 0.09])
    s = sparsity_stats(x, thresholds=(1e-3, 1e-2, 0.1))
    assert s["count"] == 8 and s["fraction_zero"] == pytest.approx(2 / 8)
    assert s["fraction_near_zero"] == pytest.approx({"0.001": 3 / 8, "0.01": 4 / 8, "0.1": 6 / 8})
    assert s["max_abs"] == 1.0 and s["mean"] == pytest.approx(x.mean())
    assert s["hoyer"] == pytest.approx(hoyer_sparsity(x)) and s["excess_kurtosis"] == pytest.approx(
        excess_kurtosis(x))
    assert sparsity_stats(np.zeros(4))["excess_kurtosis"] is None  # undefined, and JSON has no NaN


class _Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()))

    def forward(self, x):
        return self.layer1(self.relu(self.conv1(x)))


def test_measure_sparsity_of_weights_and_activations():
    torch.manual_seed(0)
    model, x = _Stem(), torch.randn(5, 3, 8, 8)
    weights_only = measure_sparsity(model, thresholds=(0.01,))
    assert list(weights_only.weights) == ["conv1"] and weights_only.activations == {}
    np.testing.assert_array_equal(weights_only.weights["conv1"], model.conv1.weight.detach().double().numpy().ravel())
    entry = weights_only.to_json()
    assert set(entry) == {"layers", "all_layers"}
    assert entry["layers"]["conv1"] == sparsity_stats(model.conv1.weight, (0.01,)) == entry["all_layers"]

    measured = measure_sparsity(model, ["*"], x)  # default modules: the stem's ReLU and the first block
    assert list(measured.weights) == ["conv1", "layer1.0.0"] and list(measured.activations) == ["relu", "layer1.0"]
    relu = torch.relu(model.conv1(x)).detach().double().numpy().ravel()
    np.testing.assert_allclose(measured.activations["relu"], relu)
    entry = measured.to_json()
    assert entry["activations"]["relu"] == {"images": 5, **sparsity_stats(relu)}
    assert entry["all_layers"]["count"] == 4 * 3 * 9 + 4 * 4 * 9
    with pytest.raises(ValueError, match="activations: .*nope"):
        measure_sparsity(model, images=x, modules=["nope"])


def test_works_on_a_converted_torchvision_model():
    """Any ConvNet that ``pushpull.convert`` made push-pull: layers, block, spectrum, activations."""
    import torchvision

    from pushpull import convert
    from pushpull.analysis.sparsity import activations, stem_activation

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    convert(model, scope="stem", example_input=x[:1])  # in place
    model.eval()
    assert isinstance(conv_layers(model)["conv1"], PushPullConv2d)
    assert (stem_activation(model), first_block(model)) == ("relu", "layer1.0")
    relu = activations(model, "relu", x)
    torch.testing.assert_close(torch.from_numpy(relu).float(), model.relu(model.bn1(model.conv1(x))))
    spec = frequency_response(model.conv1, (0.25,) * 3, frequencies=[0.1, 0.3], orientations=[0.0, 90.0])
    assert spec.responses["push_pull"].shape == (64, 2, 2)


# --- layers -------------------------------------------------------------------------------------

class TinyNet(nn.Module):
    """Stem, BN, ReLU, a stage of two blocks: the shape of a CIFAR ResNet."""

    def __init__(self, push_pull: bool) -> None:
        super().__init__()
        self.conv1 = (PushPullConv2d if push_pull else nn.Conv2d)(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()),
                                    nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.layer1(self.relu(self.bn1(self.conv1(x)))).mean((2, 3)))


def test_conv_layers_and_selection():
    net = TinyNet(push_pull=True)
    assert list(conv_layers(net)) == ["conv1", "layer1.0.0", "layer1.1.0"]  # no separate conv1.push
    assert list(select_layers(net)) == ["conv1"]
    assert list(select_layers(net, ["layer1.*", "first"])) == ["conv1", "layer1.0.0", "layer1.1.0"]
    with pytest.raises(ValueError, match="layer9"):
        select_layers(net, ["layer9.*"])
    assert first_block(net) == "layer1.0"


def test_layer_output_stops_at_the_layer():
    net = TinyNet(push_pull=False).eval()
    net.fc = None  # would fail if the forward pass went past layer1
    x = torch.randn(2, 3, 8, 8)
    out = layer_output(net, net.conv1, x)
    torch.testing.assert_close(out, net.conv1(x))


def test_most_similar_channels_finds_the_shared_kernel():
    torch.manual_seed(0)
    a, b = nn.Conv2d(3, 6, 3), PushPullConv2d(3, 5, 3)
    b.push.weight.data[2] = -3 * a.weight.data[4]  # same shape, opposite sign, other scale
    i, j, cosine = most_similar_channels(a, b)
    assert (i, j) == (4, 2) and cosine == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="different shapes"):
        most_similar_channels(a, nn.Conv2d(3, 2, 5))


# --- responses (Fig. 2) -------------------------------------------------------------------------

def test_pearson_matches_numpy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    assert pearson(a, a * 3 + b) == pytest.approx(np.corrcoef(a.ravel(), (a * 3 + b).ravel())[0, 1])
    assert pearson(a, np.ones_like(a)) == 0.0


def test_push_pull_response_degrades_less_under_noise():
    """A vertical edge under Gaussian noise (the CIFAR-10-C sigmas): push-pull keeps its clean response better."""
    edge = np.full((32, 32, 3), 50, np.uint8)
    edge[:, 16:] = 200
    rng = np.random.default_rng(0)
    noisy = [np.clip(edge / 255 + rng.normal(0, s, edge.shape), 0, 1) * 255 for s in (0.04, 0.06, 0.08, 0.09, 0.1)]
    x = Normalize((0.5,) * 3, (0.25,) * 3)(np.stack([edge, *noisy]).astype(np.uint8))
    kernel = SOBEL_X.expand(1, 3, 3, 3).clone()
    plain, pp = nn.Conv2d(3, 1, 3, padding=1, bias=False), PushPullConv2d(3, 1, 3, padding=1, bias=False)
    plain.weight.data.copy_(kernel)
    pp.weight.data.copy_(kernel)
    (r_plain,) = (r.correlations for r in filter_responses(nn.Sequential(plain), "0", 0, x))
    (r_rect,) = (r.correlations for r in filter_responses(nn.Sequential(plain, nn.ReLU()), "1", 0, x))
    r_pp, push, pull = filter_responses(nn.Sequential(pp), "0", 0, x, label="pp", components=True)
    assert len(r_pp.correlations) == 5 and r_pp.maps.shape == (6, 32, 32)
    assert (push.label, pull.label) == ("pp push", "pp pull")
    np.testing.assert_allclose(r_pp.maps, push.maps - pull.maps, atol=1e-6)
    np.testing.assert_allclose(push.maps, torch.relu(plain(x))[:, 0].detach().double().numpy(), atol=1e-6)
    assert all(p > max(a, b) for p, a, b in zip(r_pp.correlations, r_plain, r_rect)), (r_pp.correlations, r_plain)
    assert r_plain[-1] < r_plain[0]  # noise does hurt the plain filter more as it grows
    assert len(filter_responses(nn.Sequential(plain), "0", 0, x, components=True)) == 1  # nothing to split
    with pytest.raises(ValueError, match="channel 3"):
        filter_responses(nn.Sequential(pp), "0", 3, x)


# --- spectrum -----------------------------------------------------------------------------------

FREQS = np.linspace(0.05, 0.5, 10)
ORIENTS = np.arange(0, 180, 15.0)


def test_gratings_are_the_formula():
    g = gratings(9, [0.25], [90.0], 4, 0.2, (0.5, 1.0, 2.0))
    assert g.shape == (1, 1, 4, 3, 9, 9)
    y = torch.arange(9, dtype=torch.float64)
    expected = 0.2 * torch.cos(2 * math.pi * 0.25 * y + math.pi / 2)  # phase index 1 of 4, varying along y
    torch.testing.assert_close(g[0, 0, 1, 2, :, 3], expected / 2.0)
    torch.testing.assert_close(g[0, 0, 1, 0, 5, :], torch.full((9,), float(expected[5] / 0.5), dtype=torch.float64))


def test_derivative_kernel_peaks_at_quarter_cycle_across_its_axis():
    """[-1, 0, 1] along x: |K| = 2 |sin(2 pi f cos(theta))|, largest where f cos(theta) = 1/4."""
    conv = nn.Conv2d(3, 1, (1, 3), padding=(0, 1), bias=False)
    conv.weight.data.copy_(torch.tensor([-1.0, 0, 1]).expand(1, 3, 1, 3) / 3)
    std = (0.25, 0.25, 0.25)
    spec = frequency_response(conv, std, frequencies=FREQS, orientations=ORIENTS, contrast=0.2)
    response = spec.responses["conv"][0]
    assert FREQS[np.argmax(response[0])] == pytest.approx(0.25)  # across the stripes
    assert FREQS[np.argmax(response[4])] == pytest.approx(0.5)  # at 60 degrees: 0.5 cos(60) = 1/4
    assert response[6].max() < 1e-9  # stripes along x: no response
    analytic = 2 * np.abs(np.sin(2 * np.pi * FREQS[None] * np.cos(np.deg2rad(ORIENTS))[:, None])) / 0.25
    np.testing.assert_allclose(spec.kernels["conv"][0], analytic, atol=1e-9)
    # A rectified linear filter's mean response to a grating is contrast * |K| / pi.
    np.testing.assert_allclose(spec.responses["conv"][0], 0.2 * analytic / np.pi, rtol=0.02, atol=1e-3)


def test_oriented_kernel_spectrum_peaks_at_its_frequency_and_orientation():
    """A 9x9 Gabor kernel at 0.2 cycles/pixel, modulated along the 60-degree direction."""
    yy, xx = torch.meshgrid(torch.arange(9.0) - 4, torch.arange(9.0) - 4, indexing="ij")
    along = xx * math.cos(math.radians(60)) + yy * math.sin(math.radians(60))
    gabor = torch.exp(-(xx**2 + yy**2) / 8) * torch.cos(2 * math.pi * 0.2 * along)
    conv = nn.Conv2d(3, 1, 9, bias=False)
    conv.weight.data.copy_(gabor.expand(1, 3, 9, 9))
    spec = frequency_response(conv, (1.0, 1.0, 1.0), frequencies=np.linspace(0.05, 0.5, 19), orientations=ORIENTS)
    summary = spec.summary("conv", 0)
    assert summary["peak_orientation"] == 60.0 and summary["peak_frequency"] == pytest.approx(0.2)
    assert 0 < summary["half_height_bandwidth"] < 0.3


def test_push_pull_operators_measured_on_gratings():
    torch.manual_seed(0)
    pp = PushPullConv2d(3, 2, 3, padding=1, bias=True, trainable_alpha=True).double()
    pp.weight.data[0] = SOBEL_X.expand(3, 3, 3).double()
    x = gratings(20, [0.1, 0.3], [0.0, 45.0], 3, 0.25, (0.2, 0.3, 0.25)).flatten(0, 2)
    ops = operator_outputs(pp, x)
    torch.testing.assert_close(ops["push_pull"], pp(x))  # the decomposition is the layer
    torch.testing.assert_close(ops["push"], torch.relu(nn.functional.conv2d(x, pp.weight, pp.bias, padding=1)))
    std = (0.25,) * 3
    spec = frequency_response(pp, std, frequencies=FREQS, orientations=ORIENTS)
    np.testing.assert_allclose(spec.responses["push_pull"], spec.responses["push"] - spec.responses["pull"],
                               atol=1e-12)
    # The pull kernel is the push kernel enlarged 7/3 times, so it prefers lower frequencies: the
    # combined operator is suppressed at low frequencies and keeps the push response at high ones.
    assert spec.summary("pull", 0)["peak_frequency"] < spec.summary("push", 0)["peak_frequency"]
    pp0 = spec.responses["push_pull"][0]  # theta = 0 is across the Sobel kernel's stripes
    assert pp0[0, 0] < 0 < pp0[0].max()
    assert spec.kernels["pull"].shape == spec.kernels["push"].shape == (2, len(ORIENTS), len(FREQS))
    np.testing.assert_allclose(spec.kernels["push"], kernel_response(pp.weight, std, FREQS, ORIENTS))
    with pytest.raises(ValueError, match="takes 3"):
        frequency_response(pp, (0.25, 0.25))


@pytest.mark.parametrize("stride,dilation,kernel", [(2, 1, 3), (1, 2, 3), (2, 1, 4), (3, 2, 5)])
def test_spectrum_ignores_padding_and_stride(stride, dilation, kernel):
    """Tuning is a property of the kernel: padding never enters, stride only changes where it is sampled."""
    torch.manual_seed(1)
    base = PushPullConv2d(3, 2, kernel, padding=0, bias=True).double()
    other = PushPullConv2d(3, 2, kernel, stride=stride, padding=kernel, dilation=dilation, bias=True,
                           padding_mode="reflect").double()
    other.load_state_dict(base.state_dict())
    freqs, orients = [0.1, 0.2, 0.35], [0.0, 60.0, 120.0]
    a = frequency_response(base, (0.3,) * 3, frequencies=np.array(freqs) * dilation, orientations=orients)
    b = frequency_response(other, (0.3,) * 3, frequencies=freqs, orientations=orients)
    for op in a.responses:  # a dilated kernel at f sees what the plain one sees at f * dilation
        np.testing.assert_allclose(b.responses[op], a.responses[op], rtol=0.03, atol=0.01 * np.abs(a.responses[op]).max())
