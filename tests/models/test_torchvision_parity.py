"""torchvision's state_dicts load into our models and give the same logits (acceptance 3).

For every architecture torchvision has, its randomly initialized model (weights=None) is
saved as a safetensors file, loaded through the user's path (`create_model(..., pretrained=
FILE)`), and both models must agree within 1e-4 on random inputs in float32, eval mode.

Before saving, batch-norm statistics, norm affines, biases and ConvNeXt's layer scales are
randomized: at their initial values (mean 0, var 1, scale 1e-6...) a mis-mapped or dropped
tensor would not change the logits and the comparison could not fail.

CNNs are built in their ImageNet form (default img_size >= 96, so not the small-input stem)
and run at 64 px, which their global pooling allows, to keep CPU time low; torchvision's ViT
checks its input size, so ViT runs at 224 px.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.models as tvm

from foveal.io import save_tensors
from foveal.models import create_model, model_info

# Cost on the 2-core CPU box (build both + save + load + forward, one thread): below ~2 s for
# most; the 60-140M-parameter ones (VGG, Wide ResNets, ResNet-101/152, ViT-B) take 4-15 s
# each, mostly building and writing the file, so they run with -m slow.
SLOW = pytest.mark.slow

# (torchvision name, our name, our extra kwargs, input px, marks)
PAIRS = [
    ("alexnet", "alexnet", {}, 64, []),
    *[(f"vgg{d}{bn}", f"vgg{d}{bn}", {}, 64, [SLOW])
      for d in (11, 13, 16, 19) for bn in ("", "_bn")],
    ("resnet18", "resnet18", {}, 64, []),
    ("resnet34", "resnet34", {}, 64, []),
    ("resnet50", "resnet50", {}, 64, []),
    ("resnet101", "resnet101", {}, 64, [SLOW]),
    ("resnet152", "resnet152", {}, 64, [SLOW]),
    ("wide_resnet50_2", "wide_resnet50_2", {}, 64, [SLOW]),
    ("wide_resnet101_2", "wide_resnet101_2", {}, 64, [SLOW]),
    ("googlenet", "googlenet", {}, 64, []),  # torchvision's aux heads are dropped on load
    ("googlenet", "googlenet", {"aux_logits": True}, 64, []),
    ("inception_v3", "inception_v3", {}, 96, []),  # ImageNet stem needs >= 75 px
    ("inception_v3", "inception_v3", {"aux_logits": True}, 96, [SLOW]),
    ("vit_b_16", "vit_base_patch16_224", {}, 224, [SLOW]),
    ("vit_b_16", "vit_base", {}, 224, [SLOW]),  # patch 16 by the size rule at 224 px
    ("vit_b_32", "vit_base", {"patch_size": 32}, 224, [SLOW]),
    ("mobilenet_v2", "mobilenetv2", {}, 64, []),
    ("mobilenet_v3_small", "mobilenetv3_small", {}, 64, []),
    ("mobilenet_v3_large", "mobilenetv3_large", {}, 64, []),
    ("efficientnet_b0", "efficientnet_b0", {}, 64, []),
    ("efficientnet_b1", "efficientnet_b1", {}, 64, []),
    ("efficientnet_b2", "efficientnet_b2", {}, 64, []),
    ("efficientnet_b3", "efficientnet_b3", {}, 64, []),
    ("convnext_tiny", "convnext_tiny", {}, 64, []),
]


def randomize_norms_and_biases(model: torch.nn.Module, px: int) -> None:
    """Make every tensor show in the logits: batch-norm statistics measured on random inputs
    (as after training: at mean 0 / var 1 the tiny activations of torchvision's std-0.01
    GoogLeNet init would vanish), then random norm affines, biases, layer scales and ViT
    class token; zero-initialized weight matrices get random values."""
    g = torch.Generator().manual_seed(1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        if bns:
            for m in bns:
                m.reset_running_stats()
                m.momentum = None  # cumulative average: one batch sets the statistics
            model.eval()  # only the norms train: auxiliary heads stay off (they need 299 px)
            for m in bns:
                m.train()
            model(torch.randn(4, 3, px, px, generator=g))
        for name, t in model.named_parameters():
            if t.ndim == 1 and name.endswith("weight"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)  # in [0.5, 1.5)
            elif "layer_scale" in name:
                t.copy_(torch.rand(t.shape, generator=g) * 0.2 + 0.1)
            elif t.ndim == 1 or name == "class_token":
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif not t.any():  # zero-initialized weights (torchvision's ViT head): logits = bias
                t.copy_(torch.randn(t.shape, generator=g) * 0.02)


def _tv_model(tv_name: str, px: int) -> torch.nn.Module:
    torch.manual_seed(0)
    kw = {"init_weights": True} if tv_name in ("googlenet", "inception_v3") else {}  # no warning
    model = tvm.get_model(tv_name, weights=None, **kw)
    randomize_norms_and_biases(model, px)
    return model.eval()


@pytest.mark.parametrize("tv_name,name,kwargs,px", [pytest.param(*p[:4], marks=p[4], id=f"{p[0]}->{p[1]}"
                                                                 + ("-aux" if p[2].get("aux_logits") else ""))
                                                    for p in PAIRS])
def test_torchvision_state_dict_gives_same_logits(tmp_path: Path, tv_name: str, name: str, kwargs: dict,
                                                  px: int) -> None:
    assert model_info(name)["default_img_size"] >= 96  # built in its ImageNet form, not the small stem
    ref = _tv_model(tv_name, px)
    path = tmp_path / f"{tv_name}.safetensors"
    save_tensors(path, ref.state_dict())
    model = create_model(name, pretrained=str(path), **kwargs).eval()
    x = torch.randn(2, 3, px, px, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = ref(x), model(x)
    assert want.shape == got.shape == (2, 1000)
    assert (want[0] - want[1]).abs().max() > 1e-3  # the logits depend on the input
    assert (want - got).abs().max().item() < 1e-4
    for aux in AUX_HEADS.get(tv_name, []) if kwargs.get("aux_logits") else []:
        # the auxiliary heads were loaded too, not re-initialized; compared on a random map
        # of their input shape, as torchvision computes them only in training mode
        feat = torch.randn(2, *AUX_INPUT[aux], generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            assert (getattr(ref, aux)(feat) - getattr(model, aux)(feat)).abs().max().item() < 1e-4


AUX_HEADS = {"googlenet": ["aux1", "aux2"], "inception_v3": ["AuxLogits"]}
AUX_INPUT = {"aux1": (512, 14, 14), "aux2": (528, 14, 14), "AuxLogits": (768, 17, 17)}
