"""Conformance of every explainer over a representative subset of the zoo (CNNs with
BatchNorm / depthwise / squeeze-excite, a ViT with a class token, the CNN-transformer
hybrid): shapes, range, batching, no side effects on the model or the input."""

from __future__ import annotations

import pytest
import torch

from foveal.explain import EXPLAINERS, METHODS, explain
from foveal.models import create_model, list_models, model_info

MODELS = ["lenet5", "resnet18", "mobilenetv3_small", "vit_tiny", "hybrid_tiny"]
ATTENTION = {"vit_tiny", "hybrid_tiny"}
S = 24  # px: the smallest size every listed model builds at (lenet5 needs 20)
FAST = {"ig": {"steps": 3}, "smoothgrad": {"samples": 2}, "occlusion": {"window": 12}}  # small but real settings


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {n: create_model(n, num_classes=5, in_chans=3, img_size=S) for n in MODELS}


@pytest.mark.parametrize("name", MODELS)
def test_every_method_on_model(models, name):
    model = models[name].train()  # explain() must evaluate in eval mode and restore the mode
    x = torch.randn(2, 3, S, S)
    x_before = x.clone()
    for method in METHODS:
        if method == "rollout" and name not in ATTENTION:
            with pytest.raises(ValueError, match="no attention layers"):
                explain(model, x, method)
            continue
        maps = explain(model, x, method, **FAST.get(method, {}))
        assert maps.shape == (2, S, S), (name, method)
        assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1, (name, method)
        if method in ("gradcam", "saliency", "ig", "rollout"):  # never degenerate, even untrained
            assert (maps.flatten(1).amax(1) == 1).all(), (name, method)
    assert model.training
    assert torch.equal(x, x_before)
    assert all(p.grad is None for p in model.parameters())  # no gradient left on the weights


@pytest.mark.parametrize("name, method", [("mobilenetv3_small", "gradcam"), ("lenet5", "saliency"), ("vit_tiny", "gradcam"),
                                          ("vit_tiny", "gradcampp"), ("lenet5", "occlusion"), ("lenet5", "ig")])
def test_batch_equals_one_by_one(models, name, method):
    model = models[name].eval()
    x = torch.randn(3, 3, S, S)
    target = torch.tensor([0, 3, 4])
    kw = FAST.get(method, {})
    batched = explain(model, x, method, target=target, **kw)
    alone = torch.cat([explain(model, x[i:i + 1], method, target=target[i:i + 1], **kw) for i in range(3)])
    assert torch.allclose(batched, alone, atol=1e-4), (batched - alone).abs().max()


def test_target_changes_the_map(models):
    model = models["resnet18"].eval()
    x = torch.randn(2, 3, S, S)
    a, b = explain(model, x, "gradcam", target=0), explain(model, x, "gradcam", target=1)
    assert not torch.allclose(a, b)


def test_unknown_method_is_named():
    with pytest.raises(KeyError, match="gradcamm"):
        EXPLAINERS.get("gradcamm")


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_gradcam_on_every_zoo_model(name):
    size = max(model_info(name)["min_img_size"], 16)
    model = create_model(name, num_classes=3, in_chans=3, img_size=size)
    maps = explain(model, torch.randn(2, 3, size, size), "gradcam")
    assert maps.shape == (2, size, size) and torch.isfinite(maps).all()
