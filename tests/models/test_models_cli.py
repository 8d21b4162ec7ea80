"""`foveal models`: the table of models with parameters, GFLOPs and input sizes."""

from __future__ import annotations

import json

import pytest

from foveal.cli.main import main


def test_models_table_lists_params_gflops_and_sizes(capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "resnet*", "-v"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["model", "params", "(M)"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert set(rows) == {"resnet18", "resnet20", "resnet34", "resnet50", "resnet56", "resnet101", "resnet110",
                         "resnet152"}
    params, gflops, default_px, family, min_px = rows["resnet50"]
    # torchvision's model card: 25.56M parameters, 4.09 GMACs at 224 px (8.18 GFLOPs at 2 per MAC)
    assert (params, default_px, family, min_px) == ("25.56", "224", "resnet", "16")
    assert float(gflops) == pytest.approx(8.18, rel=0.01)
    assert rows["resnet20"][2] == "32"


def test_models_at_a_given_size_builds_the_small_input_form(capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "vgg16", "--img-size", "32", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    (r,) = [r for r in rows if r["name"] == "vgg16"]
    # below 96 px: no fifth pool and a 512-wide head, the CIFAR form (15.75M, not 138M)
    assert r["img_size"] == 32 and 14e6 < r["params"] < 16e6 and 0.5 < r["gflops"] < 0.8


def test_models_below_min_size_and_unknown_pattern(capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "lenet5", "--img-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "< min 20 px" in out
    assert main(["models", "no_such_net"]) == 1
    assert "no registered model matches 'no_such_net'" in capsys.readouterr().err
    assert main(["models", "vit_t*", "--names"]) == 0
    assert capsys.readouterr().out.split() == ["vit_tiny", "vit_tiny_patch16_224"]
