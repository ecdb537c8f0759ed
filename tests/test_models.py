"""The model zoo: registry, every model builds and trains, variants replace exactly the named layers."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import pushpull
from pushpull import PushPullConv2d
from pushpull.layers.blur import BlurPool2d
from pushpull.models import create_model, list_models, model_info

ALL = list_models()
# One model per family and variant trains in the default run (at small sizes); all of them with -m slow.
QUICK = {"resnet20": 32, "resnet20_pp": 32, "resnet20_b1": 32, "wrn16_4_b1": 16, "densenet40_12_b1": 16,
         "alexnet_cifar_pp": 32, "resnet18_b1": 32, "resnet50_b1": 32}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@functools.lru_cache(maxsize=None)
def plain_params(name: str) -> int:
    return n_params(create_model(name))


def expected_pushpull_layers(name: str) -> set[str]:
    """Written from the paper's definition of the variants, independently of the builders."""
    info = model_info(name)
    if info.variant == "plain":
        return set()
    family, base = info.family, info.plain
    if family == "resnet_cifar":
        n = (int(base[len("resnet"):]) - 2) // 6
        stage = {f"layer1.{i}.conv{j}" for i in range(n) for j in (1, 2)}
        stem = "conv1"
    elif family == "wide_resnet":
        n = (int(base[3:].split("_")[0]) - 4) // 6
        stage = {f"layer1.{i}.conv{j}" for i in range(n) for j in (1, 2)}  # not the 1x1 shortcut
        stem = "conv1"
    elif family == "densenet_cifar":
        n = (int(base[len("densenet"):].split("_")[0]) - 4) // 6
        stage = {f"features.denseblock1.denselayer{i}.conv2" for i in range(1, n + 1)}  # the 3x3 convs only
        stem = "features.conv0"
    elif family == "resnet_imagenet":
        blocks, convs = {"resnet18": (2, (1, 2)), "resnet50": (3, (2,))}[base]  # bottleneck: middle 3x3 only
        stage = {f"layer1.{i}.conv{j}" for i in range(blocks) for j in convs}
        stem = "conv1"
    else:
        stage, stem = set(), "features.conv1"
    return {stem} | (stage if info.variant == "b1" else set())


def test_registry_has_every_paper_model():
    for base in ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "wrn28_10", "densenet40_12",
                 "densenet100_12", "densenet100_24", "resnet18", "resnet50"]:
        for suffix in ("", "_pp", "_b1"):
            assert base + suffix in ALL
    assert {"alexnet_cifar", "alexnet_cifar_pp"} <= set(ALL)


@pytest.mark.parametrize("alias, name", [
    ("ResNet-20-b1", "resnet20_b1"), ("resnet-56-pp", "resnet56_pp"), ("WRN-28-10-pp", "wrn28_10_pp"),
    ("DenseNet-100-24-b1", "densenet100_24_b1"), ("densenet-BC-40-12", "densenet40_12"), ("AlexNet", "alexnet_cifar"),
    ("ResNet-50-b1", "resnet50_b1"), ("wideresnet-16-4", "wrn16_4"), ("RESNET20_PP", "resnet20_pp")])
def test_paper_names_are_accepted(alias, name):
    assert model_info(alias).name == name


def test_wide_resnet_of_any_depth_and_width():
    model = create_model("WRN-22-3-b1", num_classes=4)
    assert model_info("wrn22_3_b1").plain == "wrn22_3"
    assert model.layer1[0].conv1.out_channels == 48 and len(model.layer3) == 3
    assert n_params(model) == n_params(create_model("wrn22_3", num_classes=4))
    with pytest.raises(ValueError, match="6n\\+4"):
        create_model("wrn21_2")


def test_list_models_pattern():
    assert list_models("resnet20*") == ["resnet20", "resnet20_b1", "resnet20_pp"]
    assert list_models("*_b1") == [n for n in ALL if n.endswith("_b1")]
    assert list_models("ResNet-20-b1") == ["resnet20_b1"]
    assert list_models("nothing*") == []


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="resnet20_pp"):
        create_model("resnet20-ppp")
    with pytest.raises(ValueError, match="unknown model"):
        create_model("vgg16")


def test_bad_options_are_named():
    with pytest.raises(TypeError, match="num_classes"):
        create_model("resnet20", num_class=10)
    for aa in (4.5, 4, 1, 7, True, "3"):  # only the paper's filters: 0, Rect-2, Tri-3, Bin-5
        with pytest.raises(ValueError, match=rf"^aa .* 2 \(Rect-2\), 3 \(Tri-3\) or 5 \(Bin-5\), got {aa!r}$"):
            create_model("resnet20", aa=aa)
    assert [create_model("resnet20", aa=aa) is not None for aa in (0, 2, 3, 5)] == [True] * 4
    with pytest.raises(ValueError, match="num_classes"):
        create_model("resnet20", num_classes=0)
    with pytest.raises(ValueError, match="alpha"):
        create_model("resnet20_pp", alpha=-1)
    with pytest.raises(ValueError, match="no push-pull"):
        create_model("resnet20", alpha=0.5)
    create_model("resnet20", alpha=1.0)  # the default is harmless on a plain model


@pytest.mark.parametrize("name", ALL)
def test_variant_replaces_exactly_the_named_layers_and_keeps_param_count(name):
    model = create_model(name)
    replaced = {n for n, m in model.named_modules() if isinstance(m, PushPullConv2d)}
    assert replaced == expected_pushpull_layers(name)
    assert n_params(model) == plain_params(model_info(name).plain)
    for layer in (model.get_submodule(n) for n in replaced):
        assert layer.scale == 2.0 and layer.alpha == 1.0 and layer.pull_size == tuple(
            k * 2 + 1 for k in layer.kernel_size)


def test_imagenet_param_counts_match_torchvision():
    assert n_params(create_model("resnet18_b1")) == n_params(torchvision.models.resnet18())
    assert n_params(create_model("resnet50_b1", aa=3)) == n_params(torchvision.models.resnet50())


def test_trainable_alpha_adds_one_parameter_per_channel():
    model = create_model("resnet20_b1", trainable_alpha=True, num_classes=7)
    extra = n_params(model) - n_params(create_model("resnet20", num_classes=7))
    assert extra == 16 * 7  # stem + 6 convs of layer1, 16 channels each
    assert model.conv1.alpha.shape == (1, 16, 1, 1)


def _train_step(model: nn.Module, size: int, num_classes: int) -> None:
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, num_classes) and torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reached {name}"


def _native(name: str) -> int:
    return 64 if model_info(name).family == "resnet_imagenet" else 32


@pytest.mark.parametrize("name, size", QUICK.items())
def test_forward_backward(name, size):
    torch.manual_seed(0)
    _train_step(create_model(name, num_classes=5), size, 5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_forward_backward_native_resolution(name):
    torch.manual_seed(0)
    _train_step(create_model(name, num_classes=5), _native(name), 5)


def test_imagenet_models_accept_224_and_smaller():
    model = create_model("resnet18_pp").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
        assert model(torch.randn(1, 3, 96, 80)).shape == (1, 1000)


@pytest.mark.parametrize("name, aa", [("resnet20_b1", 2), ("resnet20_pp", 3), ("resnet20", 5), ("wrn16_4_pp", 2),
                                      ("densenet40_12_pp", 3), ("alexnet_cifar_pp", 5), ("resnet18_pp", 3)])
def test_antialiasing_keeps_resolutions_and_params(name, aa):
    model = create_model(name, aa=aa).eval()
    plain = create_model(name).eval()
    assert n_params(model) == n_params(plain)
    assert set(model.state_dict()) >= {k for k in plain.state_dict() if "layer1" in k}  # stage 1 unchanged
    sizes, ref_sizes = [], []
    for net, out in ((model, sizes), (plain, ref_sizes)):
        hooks = [m.register_forward_hook(lambda mod, i, o, out=out: out.append(tuple(o.shape)))
                 for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        with torch.no_grad():
            net(torch.randn(1, 3, 32, 32))
        for h in hooks:
            h.remove()
    assert sizes == ref_sizes  # the blur changes no feature-map size, only what reaches it
    assert any(isinstance(m, BlurPool2d) and m.filt_size == aa for m in model.modules())


def test_antialiased_resnet_cifar_layout_matches_the_original_code():
    model = create_model("resnet20", aa=2)
    block = model.layer2[0]
    assert isinstance(block.conv1[0], BlurPool2d) and block.conv1[1].stride == (1, 1)
    assert [type(m) for m in block.downsample] == [BlurPool2d, nn.Conv2d, nn.BatchNorm2d]
    assert block.downsample[1].stride == (1, 1) and block.downsample[1].kernel_size == (1, 1)
    keys = model.state_dict()
    assert "layer2.0.conv1.1.weight" in keys and "layer2.0.downsample.2.running_mean" in keys


def blur_reference(x: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Per channel, in float64: reflect-pad floor/ceil((n-1)/2), correlate with the binomial, sub-sample."""
    row = np.array([1.0])
    for _ in range(size - 1):
        row = np.convolve(row, [1.0, 1.0])
    kernel = np.outer(row, row) / np.outer(row, row).sum()
    before, after = (size - 1) // 2, size // 2
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (before, after), (before, after)), mode="reflect")
    out = np.zeros((n, c, h, w))
    for i in range(h):
        for j in range(w):
            out[:, :, i, j] = (padded[:, :, i:i + size, j:j + size] * kernel).sum(axis=(-1, -2))
    return out[:, :, ::stride, ::stride]


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 4, 9, 12)])
def test_blurpool_matches_reference(size, shape):
    x = torch.randn(*shape, dtype=torch.float64)
    blur = BlurPool2d(size, 2)
    got = blur(x)
    ref = blur_reference(x.numpy(), size, 2)
    assert got.shape == ref.shape == (shape[0], shape[1], (shape[2] + 1) // 2, (shape[3] + 1) // 2)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)
    x32 = x.float().requires_grad_()
    blur(x32).sum().backward()  # gradient flows, float32 too
    assert x32.grad is not None and torch.isfinite(x32.grad).all()


def test_blurpool_has_no_state():
    blur = BlurPool2d(5, 2)
    assert list(blur.parameters()) == [] and blur.state_dict() == {}
    with pytest.raises(ValueError, match="filter size"):
        BlurPool2d(0)


def test_top_level_reexports():
    assert pushpull.create_model is create_model and pushpull.list_models is list_models
    from pushpull.models import convert
    assert pushpull.convert is convert
