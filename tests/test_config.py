import pytest

from foveal.config import ConfigError, RunConfig, apply_overrides, from_dict, load_config


def test_defaults_are_the_digits_job():
    cfg = RunConfig()
    assert cfg.data.source == "digits" and cfg.model.name == "lenet5"


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown key 'optim.lrr'.*did you mean 'lr'"):
        from_dict({"optim": {"lrr": 0.1}})
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        from_dict({"trian": {}})


def test_wrong_type_names_field_and_value():
    with pytest.raises(ConfigError, match=r"train.epochs: expected an integer, got 'ten'"):
        from_dict({"train": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match=r"optim.name: 'rmsprop' is not one of"):
        apply_overrides(RunConfig(), {"optim.name": "rmsprop"})
    with pytest.raises(ConfigError, match="train.amp: expected true or false"):
        from_dict({"train": {"amp": "maybe"}})


def test_strings_from_the_command_line_are_coerced():
    cfg = apply_overrides(RunConfig(), {"optim.lr": "0.1", "train.epochs": "3", "train.ema": "true",
                                        "data.augment": "flip,crop", "data.mean": "0.5", "data.img_size": "28"})
    assert cfg.optim.lr == 0.1 and cfg.train.epochs == 3 and cfg.train.ema is True
    assert cfg.data.augment == ["flip", "crop"] and cfg.data.mean == [0.5] and cfg.data.img_size == 28


def test_recipe_then_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: resnet18}\noptim: {lr: 0.05, name: sgd}\n")
    cfg = load_config(recipe, {"optim.lr": 0.01})
    assert cfg.model.name == "resnet18" and cfg.optim.name == "sgd" and cfg.optim.lr == 0.01
    recipe.write_text("model: {nam: resnet18}\n")
    with pytest.raises(ConfigError, match=r"r.yaml: unknown key 'model.nam'"):
        load_config(recipe)


def test_every_recipe_in_the_repo_loads():
    from pathlib import Path

    recipes = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
    assert recipes, "recipes/ should hold example recipes"
    for r in recipes:
        load_config(r)
