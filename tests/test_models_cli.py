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
