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

    def __post_init__(self) -> None:
        self.images = as_images(self.images)
        if len(self.images) != len(self.labels):
            raise ValueError(f"a split needs one label per image: {len(self.images)} images, {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: torch.Tensor) -> "Split":
        paths = [self.paths[i] for i in idx.tolist()] if self.paths is not None else None
        return Split(self.images[idx], self.labels[idx], paths)


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
