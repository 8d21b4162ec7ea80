"""The arithmetic of preprocessing: the statistics a run normalizes with, and the normalization.

`stats` computes per-channel mean/std of uint8 images, once per run (the weights' model card keeps
them, `foveal.card`); `normalize_u8` is the formula every evaluation-time consumer applies, and
`Normalized` puts it at the model's edge, so prediction, serving, export and attacks hand a model
pixels (uint8, or floats in [0, 1]) and get logits. The training loader's `Normalizer` fuses the
same normalization with augmentation (tests/data/test_augment.py holds the two equal).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .images import ImageStore, as_images


def stats(images: "torch.Tensor | ImageStore", chunk: int = 4096,
          unbiased: bool = False) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units of (N, C, H, W) uint8 images.

    In memory: all of them; streamed (file-backed) images: an evenly spaced sample of 512.
    Sums in float64, so the result does not depend on the chunk size or the device.
    `unbiased`: the sample std (variance over n - 1, torch.std's default), as the fast recipe and the
    label check's fold models normalize; the trainer's runs use the population std.
    """
    images = as_images(images).statistics_sample()
    C = images.shape[1]
    s = torch.zeros(C, dtype=torch.float64)
    s2 = torch.zeros(C, dtype=torch.float64)
    n = 0
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].to(torch.float64) / 255.0
        s += x.sum(dim=(0, 2, 3))
        s2 += (x * x).sum(dim=(0, 2, 3))
        n += x.numel() // C
    return stats_from_sums(s, s2, n, unbiased)


def stats_from_sums(s: torch.Tensor, s2: torch.Tensor, n: int,
                    unbiased: bool = False) -> tuple[list[float], list[float]]:
    """Mean and std from per-channel sums of pixels `s` and of their squares `s2` over `n` pixels (float64,
    [0, 1] units): population std (or with `unbiased` the sample std), floored at 1e-3 so a constant channel
    cannot divide by zero."""
    mean = s / max(n, 1)
    var = s2 / max(n, 1) - mean * mean
    if unbiased:
        var = var * (n / max(n - 1, 1))
    std = var.clamp_min(1e-12).sqrt()
    return mean.tolist(), std.clamp_min(1e-3).tolist()


def normalize_u8(images: torch.Tensor, mean: Sequence[float] | torch.Tensor,
                 std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) uint8 -> float32 (x / 255 - mean) / std: what every model sees at evaluation.

    The one formula for prediction, the exported ONNX graph, embeddings, explanations and
    reports, so the eager reference and the graph see identical floats. mean and std are
    per-channel sequences or (1, C, 1, 1) tensors (kept as they are, so a traced graph adds no Reshape).
    """
    m, s = (torch.as_tensor(v, dtype=torch.float32, device=images.device) for v in (mean, std))
    if m.dim() != 4:
        m, s = m.view(1, -1, 1, 1), s.view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s


class Normalized(nn.Module):
    """`model` behind its normalization: pixels in, float logits out.

    Takes (N, C, H, W) uint8 images (`normalize_u8`'s arithmetic, as `Predictor` and the exported
    ONNX graph compute it) or float pixels in [0, 1] (attacks, whose epsilons are in pixel units and
    whose gradients flow to the pixels). mean/std are buffers, so `.to(device)` moves them with the
    model and a traced graph holds them as constants.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], channels_last: bool = False):
        super().__init__()
        self.model = model
        self.channels_last = channels_last  # NHWC inputs (give `model` NHWC weights too: model.to(memory_format=...))
        # a tensor of Python floats is float32: the values `normalize_u8` builds from the same lists
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """What the model sees: (N, C, H, W) uint8 or [0, 1] pixels -> normalized float32."""
        if x.dtype == torch.uint8:
            return normalize_u8(x, self.mean, self.std)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) pixels -> (N, K) float logits
        z = self.normalize(x)
        return self.model(z.contiguous(memory_format=torch.channels_last) if self.channels_last else z).float()
