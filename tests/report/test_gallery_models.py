"""The error gallery for models Grad-CAM cannot explain: an MLP (no feature map, no `cam_layer`) on
two-channel images (as Colored MNIST's) gets gradient-saliency overlays instead of crashing the run."""

from __future__ import annotations

import io

import torch
from PIL import Image
from torch import nn

from foveal.card import ModelCard, Preprocessing
from foveal.data.bundle import Split
from foveal.data.images import TensorImages
from foveal.tasks.reporting import error_gallery
from foveal.report.html import errors_section
from foveal.report.inputs import ReportInputs


def test_gallery_falls_back_to_saliency_for_mlp_on_two_channels():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (20, 2, 14, 14), dtype=torch.uint8)
    labels = torch.randint(0, 2, (20,))
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(2 * 14 * 14, 16), nn.ReLU(), nn.Linear(16, 2)).eval()
    with torch.no_grad():
        logits = mlp((images.float() / 255 - 0.5) / 0.5)
    card = ModelCard("mlp", ["0-4", "5-9"], 2, Preprocessing([0.5, 0.5], [0.5, 0.5], 14))
    items = error_gallery(mlp, card, logits, Split(TensorImages(images), labels), k=4)
    wrong = int((logits.argmax(1) != labels).sum())
    assert wrong > 0 and len(items) == min(4, wrong)  # the random MLP gets some wrong: the gallery has them
    assert all(it["method"] == "saliency" for it in items)
    for it in items:
        assert Image.open(io.BytesIO(it["overlay"])).mode == "RGB"  # 2 channels drawn as red/green
    assert "gradient saliency map" in errors_section(ReportInputs("t", card, {}, gallery=items))
