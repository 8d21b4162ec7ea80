"""What a data source yields: a `DataBundle` of named `Split`s, and the registry of named datasets.

Its own module, imported by every other module of `foveal.data` and importing none of them but
`images`, so the package has no import circle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from ..config import DataConfig
from ..registry import Registry
from .images import ImageStore, as_images


@dataclass
class Split:
    """One split: its images (in memory or in files, one interface: `foveal.data.images`), labels, paths."""

    images: ImageStore  # (N, C, H, W) uint8; a bare tensor is wrapped on construction
    labels: torch.Tensor  # (N,) int64
    paths: Optional[list[str]] = None  # source file per image, when there are files
    groups: Optional[list[str]] = None  # group per image ('site=A|sex=F': attributes joined by '|'), when known
    digests: Optional[list[str]] = None  # sha256 of each image's original file, when known (shards record it)

    def __post_init__(self) -> None:
        self.images = as_images(self.images)
        if len(self.images) != len(self.labels):
            raise ValueError(f"a split needs one label per image: {len(self.images)} images, {len(self.labels)} labels")
        if self.groups is not None and len(self.groups) != len(self.labels):
            raise ValueError(f"a split needs one group per image: {len(self.groups)} groups, {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def group_index(self) -> tuple[list[str], torch.Tensor]:
        """(sorted group names, (N,) int64 group id per image): what group sampling and Group DRO use."""
        if self.groups is None:
            raise ValueError("this split has no groups: data.balance=groups and optim.loss=group_dro need a CSV "
                             "manifest with a 'group' column (path,label,split,group) or a dataset that defines "
                             "groups (e.g. colored-mnist)")
        names = sorted(set(self.groups))
        index = {g: i for i, g in enumerate(names)}
        return names, torch.tensor([index[g] for g in self.groups], dtype=torch.int64)

    def subset(self, idx: torch.Tensor) -> "Split":
        rows = idx.tolist()
        paths = [self.paths[i] for i in rows] if self.paths is not None else None
        groups = [self.groups[i] for i in rows] if self.groups is not None else None
        digests = [self.digests[i] for i in rows] if self.digests is not None else None
        return Split(self.images[idx], self.labels[idx], paths, groups, digests)


@dataclass
class DataBundle:
    name: str
    classes: list[str]
    splits: dict[str, Split]
    problems: list[str] = field(default_factory=list)

    @property
    def in_chans(self) -> int:
        return next(iter(self.splits.values())).images.in_chans

    @property
    def img_size(self) -> int:
        return next(iter(self.splits.values())).images.img_size


# A named source: fn(cfg, img_size) -> DataBundle, with or without its own splits.
DATASETS: Registry[Callable[[DataConfig, int], DataBundle]] = Registry("dataset")
