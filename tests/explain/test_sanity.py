"""Sanity checks of Adebayo et al. (2018), for a CNN (resnet20, Grad-CAM on its last map)
and a ViT (Grad-CAM on the token grid).

Data: gray noise images with one coloured 12 x 12 square at a random place; the square's
colour decides the class (4 classes). The model must find the square, so a faithful map
puts its mass there, and we know exactly where "there" is.

1. Localization: Grad-CAM's resolution is the cam_layer grid (8 x 8 cells of 4 px for
   resnet20 at 32 px, 4 x 4 tokens of 8 px for the ViT), and it is upsampled bilinearly, so
   the mass is measured inside the square grown by 3 px on each side (an 18 x 18 region,
   32% of the image: a map blind to the square scores about 0.32). We require more than
   0.6 there, i.e. most of the mass, and also that the square itself gets more than 2.5x
   its area share.
2. Randomization: maps of the trained model and of the same architecture with re-initialized
   weights must differ: median Spearman rank correlation over images below 0.5, for
   Grad-CAM and for gradient (saliency) maps. A constant map (Grad-CAM of a random network can
   be all zero after its ReLU) has no ranking, so it counts as correlation 0.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from foveal.explain import explain
from foveal.models import create_model
from foveal.models.vit import VisionTransformer

S, P, MARGIN = 32, 12, 3
COLORS = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0], [1.0, 1.0, 0.1]])


def squares(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(normalized images (n, 3, S, S), labels (n,), top-left corners (n, 2))."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = (torch.rand(n, 1, S, S, generator=g) * 0.6).repeat(1, 3, 1, 1)  # gray noise: no colour outside the square
    corner = torch.randint(0, S - P + 1, (n, 2), generator=g)
    for i, (r, c) in enumerate(corner.tolist()):
        x[i, :, r:r + P, c:c + P] = COLORS[y[i]][:, None, None]
    return (x - 0.5) / 0.25, y, corner


def train(model: torch.nn.Module, steps: int, lr: float) -> torch.nn.Module:
    x, y, _ = squares(steps * 32, seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for s in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x[s * 32:(s + 1) * 32]), y[s * 32:(s + 1) * 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def build(kind: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "cnn":
        return create_model("resnet20", num_classes=4, in_chans=3, img_size=S)
    return VisionTransformer(48, 2, 2, num_classes=4, in_chans=3, img_size=S, patch_size=8)  # a small ViT


TRAIN = {"cnn": (50, 3e-3), "vit": (150, 3e-3)}  # (steps of 32 images, AdamW learning rate)


@pytest.fixture(scope="module", params=["cnn", "vit"])
def trained(request):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same float reductions on every machine: a reproducible training run
    try:
        kind = request.param
        model = train(build(kind, 0), *TRAIN[kind])
    finally:
        torch.set_num_threads(threads)
    x, y, corner = squares(64, seed=2)
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.95, f"{kind} did not learn the task (accuracy {acc:.3f})"
    return kind, model, x, y, corner


def mass_inside(maps: torch.Tensor, corner: torch.Tensor, margin: int) -> np.ndarray:
    out = []
    for m, (r, c) in zip(maps, corner.tolist()):
        region = m[max(0, r - margin):r + P + margin, max(0, c - margin):c + P + margin]
        out.append(float(region.sum() / m.sum().clamp_min(1e-12)))
    return np.array(out)


def median_spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    rhos = [spearmanr(u.flatten().numpy(), v.flatten().numpy())[0] if u.std() > 0 and v.std() > 0 else 0.0
            for u, v in zip(a, b)]
    return float(np.median(rhos))


def test_gradcam_mass_falls_on_the_deciding_square(trained):
    kind, model, x, y, corner = trained
    maps = explain(model, x, "gradcam", target=y)
    near = mass_inside(maps, corner, MARGIN).mean()
    on = mass_inside(maps, corner, 0).mean()
    area = (P + 2 * MARGIN) ** 2 / S ** 2
    assert near > 0.6, f"{kind}: Grad-CAM mass near the square {near:.3f} (area share {area:.2f})"
    assert on > 2.5 * P * P / S ** 2, f"{kind}: Grad-CAM mass on the square {on:.3f}"


@pytest.mark.parametrize("method", ["gradcam", "saliency"])
def test_maps_change_when_weights_are_randomized(trained, method):
    kind, model, x, y, _ = trained
    random = build(kind, 123).eval()  # same architecture, fresh weights (full re-initialization)
    rho = median_spearman(explain(model, x, method, target=y), explain(random, x, method, target=y))
    assert rho < 0.5, f"{kind} {method}: rank correlation with the randomized model {rho:.3f}"
