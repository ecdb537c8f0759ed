"""The one checker for names users type: lists or comma strings, close matches, groups."""

import pytest

from pushpull._names import check_name, check_names, split_names

KNOWN = ("fog", "frost", "snow", "gaussian_noise", "shot_noise")


def test_a_comma_string_is_a_list_of_names_not_letters():
    assert split_names("fog,gaussian_noise") == ["fog", "gaussian_noise"]
    assert split_names(" fog , , snow ") == ["fog", "snow"]
    assert split_names(["fog", " snow"]) == ["fog", "snow"]
    assert split_names("fog") == ["fog"]


def test_check_names_accepts_both_forms_and_keeps_order_once_each():
    assert check_names("snow,fog,snow", KNOWN, "corruption") == ["snow", "fog"]
    assert check_names(["snow", "fog"], KNOWN, "corruption") == ["snow", "fog"]
    assert check_names(None, KNOWN, "corruption") == list(KNOWN)


def test_groups_expand():
    groups = {"noise": ("gaussian_noise", "shot_noise"), "all": KNOWN}
    assert check_names("noise,fog", KNOWN, "corruption", groups=groups) == ["gaussian_noise", "shot_noise", "fog"]
    assert check_names("all", KNOWN, "corruption", groups=groups) == list(KNOWN)


def test_unknown_names_get_close_matches_in_one_line():
    with pytest.raises(ValueError, match=r"unknown corruption 'fgo'; did you mean 'fog'\?") as err:
        check_names("snow,fgo", KNOWN, "corruption")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="choose from fog, frost"):
        check_name("zzzz", KNOWN, "corruption")
    with pytest.raises(ValueError, match="no corruption given"):
        check_names(" , ", KNOWN, "corruption")


def _typos():  # (call, the close match its error must suggest): every public place a user types a name
    import numpy as np
    import torch

    import pushpull
    from pushpull.analysis import select_layers
    from pushpull.baselines import load_baseline
    from pushpull.data.corruptions import severity_params
    from pushpull.data.perturbations import perturb
    from pushpull.recipes import load_recipe

    images = np.zeros((1, 32, 32, 3), np.uint8)
    return [
        (lambda: pushpull.create_model("resnt20"), "'resnet20'"),
        (lambda: pushpull.create_model("resnet20", aaa=2), "'aa'"),
        (lambda: pushpull.corrupt(images, "gausian_noise", 1), "'gaussian_noise'"),
        (lambda: pushpull.corrupt(images, "fog", 1, params="cifr"), "'cifar'"),
        (lambda: severity_params("fgo", 1), "'fog'"),
        (lambda: perturb(images, "rotaet"), "'rotate'"),
        (lambda: perturb(images, "rotate", params="imagnet"), "'imagenet'"),
        (lambda: load_recipe("cifar-resnt"), "'cifar-resnet'"),
        (lambda: load_recipe("cifar-resnet", epoch=3), "'epochs'"),
        (lambda: load_baseline("alexnet-cifar"), "'alexnet-cifar10'"),
        (lambda: select_layers(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), ["00"]), "'0'"),
    ]


def test_every_name_a_user_types_gets_close_matches():
    for call, suggestion in _typos():
        with pytest.raises((ValueError, TypeError, FileNotFoundError)) as err:
            call()
        message = str(err.value)
        assert f"did you mean {suggestion}" in message or f"or {suggestion}" in message, message
        assert "\n" not in message
