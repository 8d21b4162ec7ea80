"""The in-memory loader: the whole split as uint8 on the training device, batched there.

This is the airbench way: no worker processes, no per-image Python, one tensor gather per
batch. Normalization happens here, after augmentation, so augmentations see [0, 1] pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from .augment import Compose
from .bundle import Split


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

    def __call__(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator,
                 draw: Optional["GlobalRows"] = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.augment or self.augment.pixel_exact:
            if self.augment:
                x, y = self.augment(x, y, g, draw)
            return torch.addcmul(self.shift, x, self.scale), y
        x, y = self.augment(x.float().div_(255.0), y, g, draw)  # (B, C, H, W) in [0, 1]
        return x.sub_(self.mean).div_(self.std), y  # in place: x is this batch's own tensor


@dataclass(frozen=True)
class GlobalRows:
    """Where a rank's batch sits in the global batch: its `rows` (on the device) of `size` rows.

    Augmentation draws its parameters for all `size` rows and keeps `rows`, so the draws of a
    sample do not depend on how many processes share the batch (None: one process, no slicing).
    """

    rows: torch.Tensor  # (b,) int64
    size: int


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffling and augmentation, so a resumed run repeats it exactly."""
    return (seed * 1_000_003 + epoch * 7_919) % (2**63)


def balanced_indices(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """len(labels) indices drawn with replacement, P(i) proportional to 1 / count(labels[i]).

    Each draw is then equally likely to come from any class present: the balanced sampler
    (data.balance='sampler'); given group ids instead of labels, from any group present
    (data.balance='groups'). Seeded by `generator`, so every rank draws the same sequence.
    """
    counts = torch.bincount(labels).double()
    w = 1.0 / counts[labels]  # (N,)
    return torch.multinomial(w, len(labels), replacement=True, generator=generator)


def epoch_order(labels: torch.Tensor, generator: torch.Generator, shuffle: bool, balanced: bool) -> torch.Tensor:
    """The epoch's sample order over the whole split, the same on every rank (one seeded generator)."""
    if balanced:
        return balanced_indices(labels, generator)
    if shuffle:
        return torch.randperm(len(labels), generator=generator, device=labels.device)
    return torch.arange(len(labels), device=labels.device)


def num_batches(n: int, global_batch: int, drop_last: bool) -> int:
    """Global batches in an epoch of n samples; a short last one is dropped only when asked and
    when at least one full batch exists."""
    return n // global_batch if drop_last and n >= global_batch else -(-n // global_batch)


def rank_batches(order: torch.Tensor, local_batch: int, rank: int, world: int,
                 drop_last: bool) -> Iterator[tuple[torch.Tensor, Optional[GlobalRows]]]:
    """(this rank's indices, their rows in the global batch) for each global batch of the epoch.

    Global batch i is order[i * B : (i + 1) * B] with B = local_batch * world, whatever the number
    of processes; rank r takes its rows r, r + world, ... So the processes together see exactly the
    batches one process would, every sample of a split is seen once (no rank drops a remainder),
    and random draws made for the global batch can be sliced by `rows` (see `foveal.data.augment`).
    """
    B = local_batch * world
    for i in range(num_batches(len(order), B, drop_last)):
        g = order[i * B:(i + 1) * B]
        if world == 1:
            yield g, None  # the whole batch: nothing to slice
            continue
        rows = torch.arange(rank, len(g), world, device=order.device)
        yield g[rows], GlobalRows(rows, len(g))


@dataclass(frozen=True)
class BatchPlan:
    """Which rows make each batch of an epoch: the settings both loaders share, so that on the same
    device they give the same batches."""

    batch_size: int  # per process: the global batch is batch_size * world
    shuffle: bool = False
    drop_last: bool = False
    seed: int = 0  # with the epoch, seeds the order and the augmentation draws (`epoch_seed`)
    rank: int = 0
    world: int = 1
    balanced: bool | str = False  # True: class-balanced draws with replacement; "groups": group-balanced


class PlannedBatches:
    """What both loaders share: the plan, the epoch, and one generator for the epoch's order and
    augmentation, seeded from (seed, epoch) and the same on every rank."""

    def __init__(self, plan: BatchPlan, labels: torch.Tensor, groups: Optional[torch.Tensor], device: torch.device):
        self.plan, self.device, self.epoch = plan, device, 0
        self.labels = labels.to(device, non_blocking=True)
        self.groups = groups.to(device) if groups is not None else None  # batches become (x, y, g)
        self.draw_keys = self.groups if plan.balanced == "groups" else self.labels  # what balanced draws equalize
        self.generator = torch.Generator(device=device)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        p = self.plan
        return num_batches(len(self.labels), p.batch_size * p.world, p.drop_last)

    def epoch_batches(self) -> Iterator[tuple[torch.Tensor, Optional[GlobalRows]]]:
        """(this rank's indices, their rows in the global batch) of each batch of the current epoch."""
        p = self.plan
        self.generator.manual_seed(epoch_seed(p.seed, self.epoch))
        order = epoch_order(self.draw_keys, self.generator, p.shuffle, p.balanced)
        return rank_batches(order, p.batch_size, p.rank, p.world, p.drop_last)


class DeviceLoader(PlannedBatches):
    """Iterate (x, y) batches: x float (B, C, H, W) normalized, y (B,) int64 or (B, K) soft.

    With `world > 1`, each rank takes its rows of every global batch (`rank_batches`), and the
    augmentation is drawn for the global batch and sliced, so N processes train on what one would.
    With `balanced`, an epoch is len(split) draws from `balanced_indices` instead of a permutation
    (balanced='groups': over `groups`, else over classes). With `groups` ((N,) int64 group ids),
    batches are (x, y, g): the group of each row, for Group DRO.
    """

    def __init__(self, split: Split, plan: BatchPlan, device: torch.device, mean: list[float], std: list[float],
                 augment: Optional[Compose] = None, groups: Optional[torch.Tensor] = None):
        super().__init__(plan, split.labels, groups, device)
        self.images = split.images.load(device=device)  # (N, C, H, W) uint8 on the device
        self.normalize = Normalizer(mean, std, augment, device)  # augmentation included

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx, draw in self.epoch_batches():
            if len(idx):  # empty only for a short last evaluation batch with fewer images than ranks
                x, y = self.normalize(self.images[idx], self.labels[idx], self.generator, draw)
                yield (x, y) if self.groups is None else (x, y, self.groups[idx])
