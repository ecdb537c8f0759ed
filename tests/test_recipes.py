"""Recipes: the paper's settings, validation, overrides, and the command line exposing every field."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pushpull.recipes import Recipe, default_recipe, list_recipes, load_recipe

PAPER = {  # section 4.3 of the paper, restated in the specification (section 5)
    "cifar-resnet": dict(epochs=200, batch_size=128, weight_decay=1e-4, milestones=(80, 120, 160)),
    "cifar-densenet": dict(epochs=350, batch_size=64, weight_decay=1e-4, milestones=(150, 225, 300)),
    "imagenet-resnet": dict(epochs=90, batch_size=256, weight_decay=5e-4, milestones=(30, 60, 85)),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_recipes(name):
    recipe = load_recipe(name)
    assert (recipe.lr, recipe.momentum, recipe.nesterov, recipe.gamma) == (0.1, 0.9, True, 0.1)
    for key, value in PAPER[name].items():
        assert getattr(recipe, key) == value, key
    assert recipe.version >= 1 and recipe.name == name


def test_wideresnet_augmentations():
    expected = {"cifar-wrn": (0, False), "cifar-wrn-cutout": (16, False), "cifar-wrn-autoaugment": (0, True),
                "cifar-wrn-autoaugment-cutout": (16, True)}
    for name, (cutout, autoaugment) in expected.items():
        recipe = load_recipe(name)
        assert (recipe.cutout, recipe.autoaugment, recipe.crop_padding, recipe.flip) == (cutout, autoaugment, 4, True)
        assert recipe.replace(cutout=0, autoaugment=False).to_dict() | {"name": "x", "description": ""} == \
            load_recipe("cifar-resnet").to_dict() | {"name": "x", "description": ""}


def test_every_shipped_recipe_loads_and_round_trips(tmp_path):
    for name in list_recipes():
        recipe = load_recipe(name)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(recipe.to_dict()))
        assert load_recipe(path) == recipe


def test_overrides_and_errors(tmp_path):
    recipe = load_recipe("cifar-resnet", epochs=3, lr=0.05, milestones=[1, 2], batch_size=None)
    assert (recipe.epochs, recipe.lr, recipe.milestones, recipe.batch_size) == (3, 0.05, (1, 2), 128)
    with pytest.raises(ValueError, match="unknown recipe 'cifar-resnt'"):
        load_recipe("cifar-resnt")
    with pytest.raises(ValueError, match=r"unknown field 'epoch'; did you mean 'epochs'\?"):
        load_recipe("cifar-resnet", epoch=3)
    with pytest.raises(ValueError, match="epochs must be int"):
        load_recipe("cifar-resnet", epochs="3")
    with pytest.raises(ValueError, match="milestones must be increasing"):
        load_recipe("cifar-resnet", milestones=[120, 80])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        load_recipe("cifar-resnet", batch_size=0)
    with pytest.raises(FileNotFoundError):
        load_recipe(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "epochs": 1}))
    with pytest.raises(ValueError, match="missing field"):
        load_recipe(bad)


def test_default_recipe_per_model_family():
    assert default_recipe("resnet20_b1") == "cifar-resnet"
    assert default_recipe("densenet40_12_pp") == "cifar-densenet"
    assert default_recipe("wrn28_10_b1") == "cifar-wrn"
    assert default_recipe("resnet50_pp") == "imagenet-resnet"


def test_command_line_overrides_every_training_field():
    from pushpull.cli import build_parser

    exposed = {f.name for f in dataclasses.fields(Recipe) if "help" in f.metadata}
    assert exposed == {f.name for f in dataclasses.fields(Recipe)} - {"name", "version", "description", "source"}
    args = build_parser().parse_args(
        ["train", "--model", "resnet20", "--epochs", "7", "--batch-size", "32", "--lr", "0.2", "--no-nesterov",
         "--momentum", "0.8", "--weight-decay", "5e-4", "--milestones", "3", "5", "--gamma", "0.2",
         "--crop-padding", "2", "--no-flip", "--cutout", "8", "--autoaugment", "--crop-size", "28",
         "--eval-resize", "30", "--dataset", "cifar100"])
    recipe = load_recipe("cifar-resnet", **{name: getattr(args, name) for name in exposed})
    assert recipe.to_dict() | {"name": "", "description": "", "source": ""} == dict(
        name="", version=1, dataset="cifar100", epochs=7, batch_size=32, lr=0.2, momentum=0.8, nesterov=False,
        weight_decay=5e-4, milestones=[3, 5], gamma=0.2, crop_padding=2, flip=False, cutout=8, autoaugment=True,
        crop_size=28, eval_resize=30, description="", source="")
