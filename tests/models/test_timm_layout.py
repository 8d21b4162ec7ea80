"""timm's key layouts load into our models, and the optional `timm/<name>` passthrough.

timm is not a dependency, so the timm-layout state_dicts are written here from torchvision
models by an explicit key table (timm's ViT names), independent of the regex remapping in
foveal.models.vit. timm's ResNet keys are torchvision's (conv1, bn1, layerN.M.convK,
downsample.{0,1}, fc), which test_torchvision_parity covers.
"""

from __future__ import annotations

import pytest
import torch
from torchvision.models.vision_transformer import VisionTransformer as TvViT

from foveal.models import create_model
from foveal.models.vit import VisionTransformer
from foveal.models.weights import load_pretrained

from .test_torchvision_parity import randomize_norms_and_biases

DIM, DEPTH, HEADS, PATCH, PX = 96, 2, 3, 4, 32  # a small ViT: same code as ViT-B, milliseconds


def timm_vit_keys(tv: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """torchvision ViT state_dict -> timm's VisionTransformer key names (timm 0.9-1.0)."""
    out = {"cls_token": tv["class_token"], "pos_embed": tv["encoder.pos_embedding"],
           "patch_embed.proj.weight": tv["conv_proj.weight"], "patch_embed.proj.bias": tv["conv_proj.bias"],
           "norm.weight": tv["encoder.ln.weight"], "norm.bias": tv["encoder.ln.bias"],
           "head.weight": tv["heads.head.weight"], "head.bias": tv["heads.head.bias"]}
    names = {"norm1": "ln_1", "attn.qkv": "self_attention.in_proj", "attn.proj": "self_attention.out_proj",
             "norm2": "ln_2", "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3"}
    for i in range(depth):
        for timm_name, tv_name in names.items():
            for p in ("weight", "bias"):
                src = (f"encoder.layers.encoder_layer_{i}.{tv_name}_{p}" if tv_name.endswith("in_proj")
                       else f"encoder.layers.encoder_layer_{i}.{tv_name}.{p}")
                out[f"blocks.{i}.{timm_name}.{p}"] = tv[src]
    assert len(out) == len(tv), "every torchvision tensor has its timm name"
    return out


@pytest.fixture(scope="module")
def tv_vit() -> TvViT:
    torch.manual_seed(0)
    model = TvViT(image_size=PX, patch_size=PATCH, num_layers=DEPTH, num_heads=HEADS, hidden_dim=DIM,
                  mlp_dim=4 * DIM, num_classes=10)
    randomize_norms_and_biases(model, PX)
    return model.eval()


@pytest.mark.parametrize("layout", ["timm", "torchvision"])
def test_vit_state_dict_layouts_give_same_logits(tv_vit: TvViT, layout: str) -> None:
    sd = tv_vit.state_dict()
    sd = timm_vit_keys(sd, DEPTH) if layout == "timm" else sd
    model = VisionTransformer(DIM, DEPTH, HEADS, num_classes=10, in_chans=3, img_size=PX, patch_size=PATCH).eval()
    report = load_pretrained(model, sd)
    assert len(report.loaded) == len(sd) and not report.head_replaced
    x = torch.randn(2, 3, PX, PX)
    with torch.no_grad():
        want = tv_vit(x)
        assert (want[0] - want[1]).abs().max() > 1e-3  # the logits depend on the input
        assert (want - model(x)).abs().max().item() < 1e-4


def test_vit_weights_load_at_another_input_size(tv_vit: TvViT) -> None:
    """32-px weights into a 48-px model: position embeddings resampled 8x8 -> 12x12 grid."""
    model = VisionTransformer(DIM, DEPTH, HEADS, num_classes=10, in_chans=3, img_size=48, patch_size=PATCH)
    load_pretrained(model, timm_vit_keys(tv_vit.state_dict(), DEPTH))
    assert model.pos_embed.shape == (1, 1 + 12 * 12, DIM)
    assert torch.equal(model.cls_token, tv_vit.class_token)
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 10)


def test_timm_passthrough() -> None:
    pytest.importorskip("timm")
    model = create_model("timm/resnet18", num_classes=3, in_chans=1, img_size=32)
    x = torch.randn(2, 1, 32, 32)
    assert model(x).shape == (2, 3) and model.get_submodule(model.cam_layer) is not None
    other = create_model("timm/resnet18", num_classes=3, in_chans=1, pretrained=None)
    load_pretrained(other, {k.removeprefix("model."): v for k, v in model.state_dict().items()})
    model.eval(), other.eval()
    assert torch.allclose(model(x), other(x))
