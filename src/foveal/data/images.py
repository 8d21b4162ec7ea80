"""A split's images, behind one interface whether they are held in memory or stay in their files.

Every consumer (splits, preparation, loaders, the report, export, robustness, embeddings,
pretraining) uses the `ImageStore` methods and never asks which store it holds:

- `len(store)`, `store.shape` (N, C, H, W), `store.in_chans`, `store.img_size`;
- `store[idx]`: the images at `idx` (a slice, a list or an int64 tensor), as a store of the same kind;
- `store.cat(other)`, `store.with_format(in_chans=, img_size=)`: joined or converted stores;
- `store.load(idx=None, device=None)`: the images as an (n, C, H, W) uint8 tensor, decoding if needed;
- `store.sample(n)`: up to n evenly spaced readable images as a uint8 tensor (statistics, data init).

`TensorImages` holds one uint8 tensor (the in-memory loader path); `FileImages` holds file paths and
decodes on demand (the streaming loader path, `foveal.data.stream`). `as_images` wraps a bare tensor.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DataConfig
from .decode import DecodeError, load_image

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, RGB -> gray

Index = Any  # a slice, a sequence of ints or an int64 tensor


def resize_u8(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, h, w) uint8 -> (N, C, size, size) uint8, bilinear with antialiasing."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def convert_channels(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """(N, C, H, W) uint8 to `in_chans` channels: gray -> RGB repeats, RGB -> gray by ITU-R 601 luma."""
    if x.shape[1] == in_chans:
        return x
    if in_chans == 3 and x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1).contiguous()
    if in_chans == 1 and x.shape[1] == 3:
        luma = torch.tensor(LUMA, device=x.device).view(1, 3, 1, 1)
        return (x.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise ValueError(f"cannot convert {x.shape[1]}-channel images to {in_chans} channels")


def _positions(idx: Index, n: int) -> list[int]:
    if isinstance(idx, slice):
        return list(range(n))[idx]
    if isinstance(idx, torch.Tensor):
        idx = idx.tolist()
    return [int(i) for i in idx]


class ImageStore:
    """The interface (see the module docstring); `in_memory` says which loader path it takes."""

    in_memory: bool = True

    @property
    def shape(self) -> torch.Size:
        raise NotImplementedError

    def __len__(self) -> int:
        return int(self.shape[0])

    @property
    def in_chans(self) -> int:
        return int(self.shape[1])

    @property
    def img_size(self) -> int:
        return int(self.shape[-1])

    def __getitem__(self, idx: Index) -> "ImageStore":
        raise NotImplementedError

    def cat(self, other: "ImageStore") -> "ImageStore":
        raise NotImplementedError

    def with_format(self, in_chans: Optional[int] = None, img_size: Optional[int] = None) -> "ImageStore":
        raise NotImplementedError

    def load(self, idx: Optional[Index] = None, device: Optional[torch.device | str] = None) -> torch.Tensor:
        raise NotImplementedError

    def load_readable(self, idx: Optional[Index] = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """(images that decode, their positions in `idx` as int64, the errors of the others):
        for consumers that can go on without an unreadable file (robustness, export checks)."""
        x = self.load(idx)
        return x, torch.arange(len(x)), []

    def sample(self, n: int) -> torch.Tensor:
        raise NotImplementedError

    def statistics_sample(self) -> torch.Tensor:
        """The images mean/std are computed on: all of them in memory, an even sample of files."""
        raise NotImplementedError


class TensorImages(ImageStore):
    """Images held as one (N, C, H, W) uint8 tensor (on the CPU or the training device)."""

    in_memory = True

    def __init__(self, tensor: torch.Tensor):
        if tensor.dim() != 4 or tensor.dtype != torch.uint8:
            raise ValueError(f"expected (N, C, H, W) uint8 images, got {tuple(tensor.shape)} {tensor.dtype}")
        self.tensor = tensor

    @property
    def shape(self) -> torch.Size:
        return self.tensor.shape

    def __getitem__(self, idx: Index) -> "TensorImages":
        if not isinstance(idx, (slice, torch.Tensor)):
            idx = torch.as_tensor(_positions(idx, len(self)), dtype=torch.int64)
        return TensorImages(self.tensor[idx])

    def cat(self, other: ImageStore) -> "TensorImages":
        if not isinstance(other, TensorImages):
            raise ValueError("cannot join an in-memory split with a streamed one; set data.in_memory explicitly")
        return TensorImages(torch.cat([self.tensor, other.tensor]))

    def with_format(self, in_chans: Optional[int] = None, img_size: Optional[int] = None) -> "TensorImages":
        x = convert_channels(self.tensor, in_chans) if in_chans else self.tensor
        return TensorImages(resize_u8(x, img_size) if img_size else x)

    def load(self, idx: Optional[Index] = None, device: Optional[torch.device | str] = None) -> torch.Tensor:
        x = self.tensor if idx is None else self[idx].tensor
        return x if device is None else x.to(device, non_blocking=True)

    def sample(self, n: int) -> torch.Tensor:
        # Evenly spaced: folders come sorted by class, so a prefix would hold one class.
        return self.tensor[torch.linspace(0, len(self) - 1, min(n, len(self))).long()]

    def statistics_sample(self) -> torch.Tensor:
        return self.tensor

    def __repr__(self) -> str:
        return f"TensorImages({tuple(self.shape)})"


@dataclass(frozen=True)
class FileImages(ImageStore):
    """Images that stay in their files: paths and how to decode them (size, channels, resize rule).

    Indexing, joining and format changes only edit the description; `load` decodes, in threads
    (Pillow releases the GIL), and raises DecodeError naming the first file that fails.
    """

    paths: tuple[str, ...]
    chans: int
    size: int
    resize: str = "squash"
    max_pixels: int = DataConfig.max_pixels
    workers: int = 2  # decode threads of `load` and `sample`
    crop_pct: float = 1.0  # 'crop': centre square side / shorter side
    in_memory = False  # class attribute, not a field (no annotation)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.paths), self.chans, self.size, self.size))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx: Index) -> "FileImages":
        return dataclasses.replace(self, paths=tuple(self.paths[i] for i in _positions(idx, len(self))))

    def cat(self, other: ImageStore) -> "FileImages":
        if not isinstance(other, FileImages):
            raise ValueError("cannot join a streamed split with an in-memory one; set data.in_memory explicitly")
        return dataclasses.replace(self, paths=self.paths + other.paths)

    def with_format(self, in_chans: Optional[int] = None, img_size: Optional[int] = None) -> "FileImages":
        return dataclasses.replace(self, chans=in_chans or self.chans, size=img_size or self.size)

    def read_bytes(self, i: int) -> bytes:
        """Image i's file as it is (decoding on the GPU reads this)."""
        with open(self.paths[i], "rb") as f:
            return f.read()

    def decode(self, i: int) -> torch.Tensor:
        """(C, H, W) uint8 of image i, or DecodeError naming the file."""
        return load_image(self.paths[i], self.size, self.chans, self.resize, self.max_pixels, self.crop_pct)

    def _decode_many(self, positions: list[int]) -> list[torch.Tensor | DecodeError]:
        def one(i: int) -> torch.Tensor | DecodeError:
            try:
                return self.decode(i)
            except DecodeError as e:
                return e

        if len(positions) <= 1 or self.workers <= 1:
            return [one(i) for i in positions]
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(one, positions))

    def load(self, idx: Optional[Index] = None, device: Optional[torch.device | str] = None) -> torch.Tensor:
        positions = list(range(len(self))) if idx is None else _positions(idx, len(self))
        got = self._decode_many(positions)
        bad = [g for g in got if isinstance(g, DecodeError)]
        if bad:
            raise DecodeError(f"{len(bad)} of {len(got)} images could not be decoded; first: {bad[0]}")
        x = torch.stack(got) if got else torch.zeros((0, *self.shape[1:]), dtype=torch.uint8)  # type: ignore[arg-type]
        return x if device is None else x.to(device, non_blocking=True)

    def load_readable(self, idx: Optional[Index] = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        positions = list(range(len(self))) if idx is None else _positions(idx, len(self))
        got = self._decode_many(positions)
        kept = [k for k, g in enumerate(got) if not isinstance(g, DecodeError)]
        x = torch.stack([got[k] for k in kept]) if kept else torch.zeros((0, *self.shape[1:]), dtype=torch.uint8)
        return x, torch.tensor(kept, dtype=torch.int64), [str(g) for g in got if isinstance(g, DecodeError)]

    def sample(self, n: int) -> torch.Tensor:
        """Up to min(n, 512) evenly spaced readable images: decoding is the cost, and 512 is plenty
        for channel statistics and data-dependent init."""
        idx = np.linspace(0, len(self) - 1, min(n, 512, len(self))).round().astype(int)
        got = [t for t in self._decode_many([int(i) for i in idx]) if not isinstance(t, DecodeError)]
        if not got:
            raise ValueError(f"none of {len(idx)} sampled images could be decoded (first: '{self.paths[0]}')")
        return torch.stack(got)

    def statistics_sample(self) -> torch.Tensor:
        return self.sample(512)


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


def as_images(images: torch.Tensor | ImageStore) -> ImageStore:
    """A store for `images`: stores pass through, a (N, C, H, W) uint8 tensor is wrapped."""
    return images if isinstance(images, ImageStore) else TensorImages(images)
