"""convert(): push-pull for any torchvision/timm ConvNet, in place, with a report."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from pushpull import PushPullConv2d, push_pull_conv2d_reference
from pushpull.models import convert, create_model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def pushpull_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, PushPullConv2d)]


class Reordered(nn.Module):
    """Module order differs from execution order: the stem is registered last."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.stem = nn.Conv2d(3, 8, 5, padding=2)

    def forward(self, x):
        return self.head(self.down(self.body(self.stem(x))).mean((2, 3)))


def test_stem_is_found_in_execution_order():
    model = Reordered()
    report = convert(model, "stem")
    assert report.names == ["stem"] and pushpull_names(model) == ["stem"]
    r = report[0]
    assert (r.in_channels, r.out_channels, r.kernel_size, r.pull_size) == (3, 8, (5, 5), (11, 11))
    assert "stem" in str(report)


def test_weights_are_kept_and_the_layer_computes_push_pull():
    torch.manual_seed(0)
    model = Reordered()
    conv = model.stem
    convert(model, "stem", alpha=0.7)
    layer = model.stem
    assert torch.equal(layer.push.weight, conv.weight) and torch.equal(layer.push.bias, conv.bias)
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    layer.double()
    ref = push_pull_conv2d_reference(x, conv.weight.double(), conv.bias.double(), padding=2, alpha=0.7)
    torch.testing.assert_close(layer(x), ref)


def test_keep_weights_false_reinitialises():
    model = Reordered()
    old = model.stem.weight.detach().clone()
    convert(model, "stem", keep_weights=False)
    assert model.stem.push.weight.shape == old.shape and not torch.equal(model.stem.push.weight, old)


def test_torchvision_bottleneck_resnet_first_stage():
    # torchvision's ResNet-50 classes at a reduced depth, to keep the test cheap
    model = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [3, 1, 1, 1])
    before = n_params(model)
    report = convert(model, "first_stage")
    assert report.names == ["conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"]
    assert n_params(model) == before
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_first_stage_agrees_with_the_registry_b1_variants():
    for name in ["resnet20", "wrn16_4", "densenet40_12", "resnet18"]:
        model = create_model(name)
        convert(model, "first_stage", example_input=torch.zeros(1, 3, 32, 32))
        assert set(pushpull_names(model)) == set(pushpull_names(create_model(name + "_b1")))


def test_torchvision_densenet_and_efficientnet():
    dense = torchvision.models.DenseNet(growth_rate=8, block_config=(3, 2, 2, 2), num_init_features=16)
    report = convert(dense, "first_stage")
    assert report.names[0] == "features.conv0"
    assert set(report.names[1:]) == {f"features.denseblock1.denselayer{i}.conv2" for i in range(1, 4)}
    eff = torchvision.models.efficientnet_b0()
    before = n_params(eff)
    report = convert(eff, "first_stage")
    assert report.names == ["features.0.0", "features.1.0.block.0.0"]  # stem and the depthwise 3x3 of stage 1
    assert report[1].groups == 32 and n_params(eff) == before
    eff.eval()
    with torch.no_grad():
        assert torch.isfinite(eff(torch.randn(1, 3, 64, 64))).all()


def test_timm_convnext_stem():
    timm = pytest.importorskip("timm")
    model = timm.create_model("convnext_atto", pretrained=False)
    before = n_params(model)
    report = convert(model, "stem")
    assert report.names == ["stem.0"] and report[0].kernel_size == (4, 4) and report[0].pull_size == (9, 9)
    assert n_params(model) == before
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_callable_scope_and_all():
    model = create_model("resnet20")
    report = convert(model, lambda name, m: name.startswith("layer3.") and m.kernel_size == (3, 3))
    assert len(report) == 6 and all(n.startswith("layer3.") for n in report.names)
    model = create_model("resnet20")
    report = convert(model, "all")
    assert len(report) == 19  # every 3x3 conv; the two 1x1 shortcuts stay


def test_training_mode_and_running_stats_are_untouched_by_the_trace():
    model = create_model("resnet20").train()
    stats = model.bn1.running_mean.clone()
    convert(model, "first_stage")
    assert model.training and torch.equal(model.bn1.running_mean, stats)


def test_bad_arguments():
    with pytest.raises(ValueError, match="scope"):
        convert(create_model("resnet20"), "stage1")
    with pytest.raises(ValueError, match="dual_output"):
        convert(create_model("resnet20"), "stem", dual_output=True)
    with pytest.raises(TypeError, match="alpah"):
        convert(create_model("resnet20"), "stem", alpah=1)
    with pytest.raises(ValueError, match="to_push_pull"):
        convert(nn.Conv2d(3, 4, 3), "stem")
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        convert(nn.Linear(3, 3), "stem")
    with pytest.raises(ValueError, match="example_input"):
        convert(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(10, 2)), "stem")
