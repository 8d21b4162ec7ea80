"""The streaming loader, for folders too large to hold decoded in memory.

Images stay in their files (`FileImages` stands in for the (N, C, H, W) uint8 tensor of an
in-memory split). Each epoch, DataLoader worker processes decode whole batches: JPEGs at a
reduced scale through Pillow's draft mode (a 2000-px photo going to 224 px is decoded at 1/8
size, skipping most of the inverse DCT), then resized to `img_size` as uint8. Batches come
back in pinned memory, are copied to the device, and go through the very same batched
augmentation as the in-memory `DeviceLoader`, so both paths train identically.

`make_loader` picks the path from the split: a tensor -> `DeviceLoader`, `FileImages` -> `StreamLoader`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .decode import DecodeError, load_image


def _memory_budget() -> int:
    """Bytes of decoded uint8 images that auto mode keeps in memory: a quarter of RAM, at most 4 GiB
    (the same tensor then also has to fit on the training device)."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 << 30
    return min(ram // 4, 4 << 30)


MEMORY_BUDGET = _memory_budget()


def fits_in_memory(n: int, in_chans: int, img_size: int, in_memory: Optional[bool]) -> bool:
    """The loader choice: `data.in_memory` when set, else whether N x C x img_size^2 bytes fit the budget."""
    if in_memory is not None:
        return in_memory
    return n * in_chans * img_size * img_size <= MEMORY_BUDGET


@dataclass(frozen=True)
class FileImages:
    """A lazy (N, C, H, W) uint8 image set: the files and how to decode them.

    Supports what splits and preparation do with an image tensor (len, shape, indexing by a
    tensor of indices, concatenation, channel and size changes) without decoding anything.
    """

    paths: tuple[str, ...]
    in_chans: int
    img_size: int
    resize: str = "squash"
    max_pixels: int = 64_000_000

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.paths), self.in_chans, self.img_size, self.img_size))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx: Any) -> "FileImages":
        if isinstance(idx, slice):
            picked = self.paths[idx]
        else:
            idx = idx.tolist() if isinstance(idx, torch.Tensor) else list(idx)
            picked = tuple(self.paths[i] for i in idx)
        return dataclasses.replace(self, paths=tuple(picked))

    def cat(self, other: "FileImages") -> "FileImages":
        return dataclasses.replace(self, paths=self.paths + other.paths)

    def with_format(self, in_chans: Optional[int] = None, img_size: Optional[int] = None) -> "FileImages":
        return dataclasses.replace(self, in_chans=in_chans or self.in_chans, img_size=img_size or self.img_size)

    def decode(self, i: int) -> torch.Tensor:
        """(C, H, W) uint8 of image i, or DecodeError naming the file."""
        return load_image(self.paths[i], self.img_size, self.in_chans, self.resize, self.max_pixels)

    def sample(self, n: int = 512, workers: int = 2) -> torch.Tensor:
        """(<=n, C, H, W) uint8 of evenly spaced readable images, e.g. to estimate mean/std."""
        idx = np.linspace(0, len(self) - 1, min(n, len(self))).round().astype(int)

        def one(i: int) -> Optional[torch.Tensor]:
            try:
                return self.decode(int(i))
            except DecodeError:
                return None

        with ThreadPoolExecutor(max(1, workers)) as pool:
            got = [t for t in pool.map(one, idx) if t is not None]
        if not got:
            raise ValueError(f"none of {len(idx)} sampled images could be decoded (first: '{self.paths[0]}')")
        return torch.stack(got)


class _BatchDecoder(Dataset):
    """Decodes a whole batch per worker call (`__getitems__`), so one pickle crosses the process
    boundary per batch instead of one per image. Unreadable files come back flagged, not raised."""

    def __init__(self, images: FileImages):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images.decode(i)

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        C, S = self.images.in_chans, self.images.img_size
        out = torch.zeros((len(indices), C, S, S), dtype=torch.uint8)  # (B, C, H, W)
        ok = torch.ones(len(indices), dtype=torch.bool)
        errors = []
        for k, i in enumerate(indices):
            try:
                out[k] = self.images.decode(i)
            except DecodeError as e:
                ok[k] = False
                errors.append(str(e))
        return out, ok, torch.as_tensor(indices, dtype=torch.int64), errors


def _as_is(batch: Any) -> Any:
    return batch  # the dataset already returns a collated batch


class _EpochBatches:
    """Batch sampler over the order `StreamLoader` sets before each epoch; a persistent DataLoader
    iterates it afresh every epoch (in the main process; workers only receive index lists)."""

    def __init__(self, batch_size: int, n_batches: int):
        self.batch_size, self.n_batches = batch_size, n_batches
        self.order: list[int] = []

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(self.n_batches):
            yield self.order[i * self.batch_size:(i + 1) * self.batch_size]


class StreamLoader:
    """Iterate (x, y) batches like `DeviceLoader`: x float (B, C, H, W) normalized on `device`, y (B,)
    or (B, K) soft. Order and augmentation draw from one generator seeded per epoch exactly as in
    `DeviceLoader`, so on the same device both loaders give the same batches. Images that fail to
    decode are dropped from their batch and named in `problems` (and on stderr, once each)."""

    def __init__(self, images: FileImages, labels: torch.Tensor, batch_size: int, device: torch.device,
                 mean: list[float], std: list[float], augment: Any = None, shuffle: bool = False,
                 drop_last: bool = False, seed: int = 0, rank: int = 0, world: int = 1, workers: int = 2,
                 balanced: bool = False):
        from .loader import Normalizer

        self.labels = labels.to(device)
        self.device = device
        self.normalize = Normalizer(mean, std, augment, device)  # augmentation included
        self.shuffle, self.balanced = shuffle, balanced
        self.seed, self.rank, self.world, self.epoch = seed, rank, world, 0
        n = len(images) // world
        drop_last = drop_last and n > batch_size
        self.batches = _EpochBatches(batch_size, n // batch_size if drop_last else -(-n // batch_size))
        self.generator = torch.Generator(device=device)
        self.problems: list[str] = []
        self.loader = DataLoader(_BatchDecoder(images), batch_sampler=self.batches, collate_fn=_as_is,
                                 num_workers=workers, pin_memory=device.type == "cuda",
                                 persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches)

    def _report(self, errors: list[str]) -> None:
        for e in errors:
            if e not in self.problems:
                self.problems.append(e)
                print(f"data: skipped unreadable image {e}", file=sys.stderr)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from .loader import balanced_indices, epoch_seed

        self.generator.manual_seed(epoch_seed(self.seed, self.epoch))
        n = len(self.labels)
        if self.balanced:  # drawn as DeviceLoader draws it (class-balanced sampling with replacement)
            order = balanced_indices(self.labels, self.generator)
        elif self.shuffle:
            order = torch.randperm(n, generator=self.generator, device=self.device)
        else:
            order = torch.arange(n)
        self.batches.order = order[self.rank::self.world].tolist()  # one sync per epoch
        for x, ok, idx, errors in self.loader:
            if errors:
                self._report(errors)
                x, idx = x[ok], idx[ok]
                if len(idx) == 0:
                    continue
            y = self.labels[idx.to(self.device, non_blocking=True)]
            yield self.normalize(x.to(self.device, non_blocking=True), y, self.generator)


def make_loader(split: Any, batch_size: int, device: torch.device, mean: list[float], std: list[float],
                workers: int = 2, **kw: Any):
    """The loader for `split`: `DeviceLoader` for images in memory, `StreamLoader` for `FileImages`."""
    from .loader import DeviceLoader

    if isinstance(split.images, FileImages):
        return StreamLoader(split.images, split.labels, batch_size, device, mean, std, workers=workers, **kw)
    return DeviceLoader(split, batch_size, device, mean, std, **kw)
