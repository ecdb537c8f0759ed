"""`pushpull models`: the registry with parameter counts and FLOPs."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from pushpull.cli import main
from pushpull.models import create_model


def test_models_lists_params_and_flops(capsys):
    assert main(["models", "ResNet-20*"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["model", "family", "variant"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert sorted(rows) == ["resnet20", "resnet20_b1", "resnet20_pp"]
    params = sum(p.numel() for p in create_model("resnet20").parameters())
    assert {row[4] for row in rows.values()} == {f"{params:,}"}
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        create_model("resnet20").eval()(torch.zeros(1, 3, 32, 32))
    assert float(rows["resnet20"][5]) == round(counter.get_total_flops() / 1e9, 3)
    assert float(rows["resnet20_b1"][5]) > float(rows["resnet20_pp"][5]) > float(rows["resnet20"][5])


def test_models_unknown_pattern_fails(capsys):
    assert main(["models", "vgg*"]) == 1
    assert "no model matches" in capsys.readouterr().err


def test_models_lists_every_model_with_params_and_flops(capsys):
    """Issue 11: with no pattern, and with 'resnet*', 'wrn*', '*_b1', every matching model gets a row."""
    from pushpull.models import list_models
    from pushpull.models.stats import model_stats

    for pattern in (None, "resnet*", "wrn*", "*_b1"):
        assert main(["models"] + ([pattern] if pattern else [])) == 0
        rows = [line.split() for line in capsys.readouterr().out.strip().splitlines()[1:]]
        assert [row[0] for row in rows] == list_models(pattern) and rows
        for name, *_, params, gflops in rows:
            stats = model_stats(name)
            assert params == f"{stats.parameters:,}" and float(gflops) == round(stats.flops / 1e9, 3) > 0
    plain, b1 = model_stats("resnet18"), model_stats("resnet18_b1")
    assert b1.parameters == plain.parameters and b1.flops > plain.flops  # same weights, pull convolutions added


def test_flops_counted_on_meta_equal_a_real_count():
    from pushpull.models.stats import count_flops, model_stats

    model = create_model("resnet20_b1", impl="reference").eval()
    assert model_stats("ResNet-20-b1").flops == count_flops(model, (3, 32, 32))


def test_a_model_the_meta_device_cannot_build_is_counted_for_real(monkeypatch):
    from pushpull.models import stats

    def create_off_meta(name, **options):
        if torch.get_default_device().type == "meta":
            raise NotImplementedError("no meta kernel")
        return create_model(name, **options)

    want = stats.model_stats("resnet20_pp")
    stats.model_stats.cache_clear()
    monkeypatch.setattr(stats, "create_model", create_off_meta)
    try:
        assert stats.model_stats("resnet20_pp") == want
    finally:
        stats.model_stats.cache_clear()
