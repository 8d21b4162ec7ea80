"""Random draws made image by image, so a robustness result does not depend on the batch size.

A corruption, a noise level or an attack's random start draws its random numbers for image i from
a generator keyed on (seed, stream, i) alone: the same image gets the same draws whichever batch it
sits in and however large that batch is. The computation stays batched; only the draws are made per
image (one small call each, next to a batched forward pass).

The functions take `Gen`: None (torch's global generator), a torch.Generator (one stream for the
whole batch, as the tests that pass a reference's own draws use) or :class:`ImageDraws`.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Optional, Sequence, Union

import torch


class ImageDraws:
    """One torch.Generator per image of a batch, each seeded from (seed, stream, the image's index)."""

    def __init__(self, seed: int, stream: str, indices: Sequence[int], device: torch.device | str = "cpu"):
        self.generators = [torch.Generator(device=device).manual_seed(_key(seed, stream, int(i))) for i in indices]

    def __len__(self) -> int:
        return len(self.generators)

    def stack(self, draw: Callable[[tuple[int, ...], torch.Generator], torch.Tensor],
              shape: int | Sequence[int]) -> torch.Tensor:
        """(B, *shape[1:]) from `draw(per-image shape, generator)` once per image; shape[0] must be B."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if shape[0] != len(self):
            raise ValueError(f"draws for {shape[0]} images asked of ImageDraws keyed on {len(self)} images")
        return torch.stack([draw(shape[1:], g) for g in self.generators])


Gen = Optional[Union[torch.Generator, ImageDraws]]


def _key(seed: int, stream: str, index: int) -> int:
    """A 63-bit seed from (seed, stream, index): distinct streams and images get unrelated generators."""
    digest = hashlib.blake2b(f"{seed}:{stream}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def rand(shape: int | Sequence[int], gen: Gen, device: torch.device,
         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """U[0, 1) draws of `shape`."""
    if isinstance(gen, ImageDraws):
        return gen.stack(lambda s, g: torch.rand(s, generator=g, device=device, dtype=dtype), shape)
    return torch.rand(shape, generator=gen, device=device, dtype=dtype)


def randn(shape: int | Sequence[int], gen: Gen, device: torch.device,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N(0, 1) draws of `shape`."""
    if isinstance(gen, ImageDraws):
        return gen.stack(lambda s, g: torch.randn(s, generator=g, device=device, dtype=dtype), shape)
    return torch.randn(shape, generator=gen, device=device, dtype=dtype)


def randint(low: int, high: int, shape: int | Sequence[int], gen: Gen, device: torch.device) -> torch.Tensor:
    """Integers in [low, high) of `shape`."""
    if isinstance(gen, ImageDraws):
        return gen.stack(lambda s, g: torch.randint(low, high, s, generator=g, device=device), shape)
    return torch.randint(low, high, (shape,) if isinstance(shape, int) else tuple(shape), generator=gen, device=device)


def poisson(rate: torch.Tensor, gen: Gen) -> torch.Tensor:
    """Poisson(rate) per element."""
    if isinstance(gen, ImageDraws):
        return torch.cat([torch.poisson(rate[i:i + 1], generator=g) for i, g in enumerate(gen.generators)])
    return torch.poisson(rate, generator=gen)


def image_generator(gen: Gen, i: int) -> Optional[torch.Generator]:
    """The generator that draws for image i: its own under ImageDraws, else the shared one."""
    return gen.generators[i] if isinstance(gen, ImageDraws) else gen


__all__ = ["ImageDraws", "Gen", "rand", "randn", "randint", "poisson", "image_generator"]
