"""The in-memory loader: the whole split as uint8 on the training device, batched there.

This is the airbench way: no worker processes, no per-image Python, one tensor gather per
batch. Normalization happens here, after augmentation, so augmentations see [0, 1] pixels.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch

from .augment import Compose
from .sources import Split


def mean_std(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units of (N, C, H, W) uint8 images.

    For streamed (file-backed) images, estimated on an evenly spaced sample of 512 of them.
    """
    if not isinstance(images, torch.Tensor):
        images = images.sample(512)
    C = images.shape[1]
    s = torch.zeros(C, dtype=torch.float64)
    s2 = torch.zeros(C, dtype=torch.float64)
    n = 0
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].to(torch.float64) / 255.0
        s += x.sum(dim=(0, 2, 3))
        s2 += (x * x).sum(dim=(0, 2, 3))
        n += x.numel() // C
    mean = s / n
    std = (s2 / n - mean * mean).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.clamp_min(1e-3).tolist()


def normalize_u8(images: torch.Tensor, mean: list[float] | torch.Tensor, std: list[float] | torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) uint8 -> float32 (x / 255 - mean) / std: what every model sees at evaluation.

    The one formula for prediction, the exported ONNX graph, embeddings, explanations and
    reports, so the eager reference and the graph see identical floats. mean and std are
    per-channel lists or (1, C, 1, 1) tensors (kept as they are, so a traced graph adds no Reshape).
    """
    m, s = (torch.as_tensor(v, dtype=torch.float32, device=images.device) for v in (mean, std))
    if m.dim() != 4:
        m, s = m.view(1, -1, 1, 1), s.view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s


class Normalizer:
    """uint8 batch -> augmented, normalized float batch: the last step of both loaders.

    Pixel-exact augmentations (flips, pad-crop) run on the uint8 batch and the conversion is one
    fused pass, x * (1 / (255 std)) - mean / std (addcmul, no temporaries); other augmentations
    see [0, 1] floats as documented. Both orders give the same images to float rounding.
    """

    def __init__(self, mean: list[float], std: list[float], augment: Optional[Compose], device: torch.device):
        m = torch.tensor(mean, device=device, dtype=torch.float32).view(1, -1, 1, 1)
        sd = torch.tensor(std, device=device, dtype=torch.float32).view(1, -1, 1, 1)
        self.mean, self.std = m, sd
        self.scale, self.shift = 1.0 / (255.0 * sd), -m / sd
        self.augment = augment

    def __call__(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.augment or self.augment.pixel_exact:
            if self.augment:
                x, y = self.augment(x, y, g)
            return torch.addcmul(self.shift, x, self.scale), y
        x, y = self.augment(x.float().div_(255.0), y, g)  # (B, C, H, W) in [0, 1]
        return x.sub_(self.mean).div_(self.std), y  # in place: x is this batch's own tensor


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffling and augmentation, so a resumed run repeats it exactly."""
    return (seed * 1_000_003 + epoch * 7_919) % (2**63)


def balanced_indices(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """len(labels) indices drawn with replacement, P(i) proportional to 1 / count(labels[i]).

    Each draw is then equally likely to come from any class present: the balanced sampler
    (data.balance='sampler'). Seeded by `generator`, so every rank draws the same sequence.
    """
    counts = torch.bincount(labels).double()
    w = 1.0 / counts[labels]  # (N,)
    return torch.multinomial(w, len(labels), replacement=True, generator=generator)


class DeviceLoader:
    """Iterate (x, y) batches: x float (B, C, H, W) normalized, y (B,) int64 or (B, K) soft.

    With `world > 1`, each rank takes every world-th sample of the same permutation. With
    `balanced`, an epoch is len(split) draws from `balanced_indices` instead of a permutation.
    """

    def __init__(self, split: Split, batch_size: int, device: torch.device, mean: list[float], std: list[float],
                 augment: Optional[Compose] = None, shuffle: bool = False, drop_last: bool = False,
                 seed: int = 0, rank: int = 0, world: int = 1, balanced: bool = False):
        self.images = split.images.to(device, non_blocking=True)
        self.labels = split.labels.to(device, non_blocking=True)
        self.batch_size = batch_size
        self.device = device
        self.normalize = Normalizer(mean, std, augment, device)  # augmentation included
        self.shuffle = shuffle
        self.balanced = balanced
        self.drop_last = drop_last and len(split) // world > batch_size
        self.seed, self.rank, self.world = seed, rank, world
        self.epoch = 0
        self.generator = torch.Generator(device=device)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        n = len(self.labels)
        if self.balanced:
            order = balanced_indices(self.labels, self.generator)
        elif not self.shuffle:
            order = torch.arange(n, device=self.device)
        else:
            order = torch.randperm(n, generator=self.generator, device=self.device)
        return order[self.rank::self.world]

    def __len__(self) -> int:
        n = len(self.labels) // self.world
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.generator.manual_seed(epoch_seed(self.seed, self.epoch))
        order = self._order()
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.normalize(self.images[idx], self.labels[idx], self.generator)
