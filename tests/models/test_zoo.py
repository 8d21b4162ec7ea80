"""Conformance of every registered model: build, forward, backward, shapes, no NaN.

One test parametrized over the registry (acceptance 1 of the model-zoo issue): each model at
its smallest supported input and, for variants meant for ImageNet (default size >= 224), at
224 px, each with 1 and 3 input channels. A new family is covered as soon as it registers.
"""

from __future__ import annotations

import pytest
import torch

from foveal.models import create_model, list_models, model_info

NUM_CLASSES = 7  # not 10 nor 1000, so a hard-coded class count shows up as a shape error

# What the default run (2-core CPU, ~90 s for this whole area) leaves to `-m slow`, measured
# single-threaded on that box:
# - every case of the largest variants: building them alone (initializing 40-130M parameters)
#   takes 1.5-4 s; their code paths run in the default run through a smaller sibling of the
#   same class (resnet50, wrn16_4, vit_small, vit_small_patch16_224);
# - the 224-px pass of VGG (138M parameters there, 15 GFLOPs);
# - the 224-px pass with 1 input channel: the stem with 1 channel is covered at the min size,
#   the 224-px stem with 3 channels; together they cost another ~40 s.
HEAVY = {"resnet101", "resnet152", "wide_resnet50_2", "wide_resnet101_2", "wrn28_10", "vit_base",
         "vit_base_patch16_224"}
HEAVY_AT_224 = HEAVY | {n for n in list_models("vgg*")}


def _cases() -> list:
    cases = []
    for name in list_models():
        meta = model_info(name)
        sizes = [meta["min_img_size"]] + ([224] if meta["default_img_size"] >= 224 else [])
        for size in sizes:
            for in_chans in (1, 3):
                slow = name in HEAVY or (size == 224 and (name in HEAVY_AT_224 or in_chans == 1))
                cases.append(pytest.param(name, size, in_chans, id=f"{name}-{size}px-{in_chans}ch",
                                          marks=[pytest.mark.slow] if slow else []))
    return cases


@pytest.mark.parametrize("name,img_size,in_chans", _cases())
def test_model_builds_runs_forward_backward(name: str, img_size: int, in_chans: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES, in_chans=in_chans, img_size=img_size).train()
    batch = 1 if img_size >= 96 else 2  # batch norm in training needs >1 value per channel on 1x1 maps
    x = torch.randn(batch, in_chans, img_size, img_size)
    out = model(x)
    assert out.shape == (batch, NUM_CLASSES)
    assert torch.isfinite(out).all()
    out.float().pow(2).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: parameters without a gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.cam_layer and model.get_submodule(model.cam_layer) is not None
    if in_chans == 1 and img_size < 96:  # once per model: the head contract
        with torch.no_grad():
            _check_head_contract(model.eval(), x)


def _check_head_contract(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Pre-logits features of `num_features` that the classifier maps to the logits;
    `reset_classifier` to a new class count, and to 0 (feature extractor)."""
    f = model.forward_features(x)
    feats = model.forward_head(f, pre_logits=True)
    assert feats.shape == (x.shape[0], model.num_features)
    assert torch.allclose(model.get_classifier()(feats), model.forward_head(f), atol=1e-5)
    model.reset_classifier(3)
    assert model.forward_head(f).shape == (x.shape[0], 3) and model.num_classes == 3
    model.reset_classifier(0)
    assert torch.allclose(model.forward_head(f), feats, atol=1e-5)


def test_below_min_size_is_refused_with_the_minimum_named() -> None:
    with pytest.raises(ValueError, match="img_size >= 20"):
        create_model("lenet5", img_size=16)
