"""Test-time augmentation: logits averaged over flipped and shifted views of each image.

The views are those of the public CIFAR-10 speedruns (Page 2018; Jordan 2024): the image and
its mirror image ("flip"), then ("shift") the same views moved one pixel up-left and one pixel
down-right (reflect padding), the shifted views together weighted as much as the centred ones.
Used by the fast recipe and, through `train.tta`, by the Trainer's final evaluation, `eval`,
`predict` and the report; the saved weights record it (metadata key ``tta``). Exported ONNX
graphs hold the plain model; `foveal.export.runtime.tta_views` makes the same views in numpy
(that module runs without torch), so `predict` / `serve` on an .onnx average the same logits.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

TTA_VIEWS = ("flip", "shift")


def check_views(views: Sequence[str]) -> list[str]:
    """The TTA view names, validated (an unknown name is an error that lists the known ones)."""
    bad = [v for v in views if v not in TTA_VIEWS]
    if bad:
        raise ValueError(f"test-time augmentation {', '.join(map(repr, bad))} is not one of {', '.join(TTA_VIEWS)}")
    return list(views)


def tta_logits(model: nn.Module, x: torch.Tensor, views: Sequence[str] = (),
               fmt: Callable[[torch.Tensor], torch.Tensor] = torch.Tensor.contiguous) -> torch.Tensor:
    """Float logits (B, K) of the batch `x` (B, C, H, W) as `model` takes it, averaged over `views`: a
    normalized batch, or uint8 pixels for a model behind `foveal.data.preprocess.Normalized` (the views
    only move pixels and normalization is per channel, so both give the same floats).

    `fmt` puts each derived view in the model's memory format (e.g. channels-last), so that a
    compiled model sees one layout. No views: just `model(x)`.
    """
    if not views:
        return model(x).float()
    flip = "flip" in views
    centred = [x] + ([fmt(x.flip(3))] if flip else [])
    logits = sum(model(v).float() for v in centred) / len(centred)
    if "shift" in views:  # one pixel up-left and down-right
        H, W = x.shape[-2:]
        xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = [xp[..., :H, :W], xp[..., 2:, 2:]]
        shifted += [s.flip(3) for s in shifted] if flip else []
        logits = 0.5 * logits + 0.5 * sum(model(fmt(s)).float() for s in shifted) / len(shifted)
    return logits
