"""Image arrays from the Python API -> the uint8 (N, C, H, W) tensors the rest of foveal holds.

One conversion for `Classifier.fit` (through `from_arrays`), `predict`, `predict_proba`,
`evaluate` and `embed`, so the pixels a model is trained on and the pixels it later predicts on
come from the same rule. The accepted inputs:

- layout: (N, H, W); (N, H, W, C) with C in 1, 3, 4; (N, C, H, W) with C in 1, 3. Images must
  be square (the trainer resizes to a square side). When both 4-D readings fit, e.g. (N, 3, 3, 3),
  channels-first wins: it is PyTorch's own layout. A (N, 3, H, 3) with H != 3 is not ambiguous:
  neither reading gives square images, and the error says so.
- dtype and range: uint8 as is; bool as 0/255; other integers within 0..255 as is; floats within
  [0, 1] scaled by 255, floats within [0, 255] (some value above 1) rounded. The float range is
  read per call from the array's maximum, so a batch of [0, 255] floats that are all <= 1 (an
  almost black batch) is read as [0, 1]: pass uint8 to rule that out.
- channels: RGBA loses alpha; gray <-> RGB to `in_chans` with the data pipeline's own
  `images.convert_channels` (gray repeated; RGB -> gray by ITU-R 601 luma).
- size: the pipeline's `images.resize_u8` (antialiased bilinear), after the channel
  conversion: the order in which the trainer's `prepare_data` applies the two.

A single image, (H, W) or (H, W, C), is refused with a message saying to pass a batch.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from .images import convert_channels, resize_u8

LAYOUTS = "(N, H, W), (N, H, W, C) with C in 1, 3, 4, or (N, C, H, W) with C in 1, 3"
RANGES = "uint8, bool, integers within 0..255, or floats within [0, 1] or [0, 255]"


def to_images_u8(x: Any, img_size: Optional[int] = None, in_chans: Optional[int] = None,
                 what: str = "images") -> torch.Tensor:
    """A batch of images (numpy array or torch tensor) -> (N, C, H, W) uint8 CPU tensor.

    `in_chans` (1 or 3) and `img_size` convert to a model's input; None keeps the images' own
    channels (1 or 3) and size, which is what `from_arrays` wants: the trainer then converts
    with the same operations. `what` names the input in error messages.
    """
    a = _channels_first(_as_numpy(x, what), what)
    t = _to_uint8(a, what)
    if in_chans is not None:
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
        t = convert_channels(t, in_chans)
    return resize_u8(t, img_size) if img_size is not None else t


def _as_numpy(x: Any, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()  # numpy has no bfloat16
    try:
        return np.asarray(x)
    except ValueError as e:  # ragged lists
        raise ValueError(f"{what}: cannot make one array of {type(x).__name__} ({e}); "
                         f"pass a numpy array or torch tensor {LAYOUTS}") from None


def _channels_first(a: np.ndarray, what: str) -> np.ndarray:
    """Any accepted layout -> (N, C, H, W) with C in 1, 3 (alpha dropped); shape errors here."""
    if a.ndim in (2, 3):
        _refuse_single_image(a, what)
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4:
        a = _layout_4d(a, what)
    else:
        raise ValueError(f"{what}: expected a batch of images {LAYOUTS}, got a {a.ndim}-D array of shape {a.shape}")
    if a.shape[0] == 0 or a.shape[2] == 0:
        raise ValueError(f"{what}: no images in an array of shape {a.shape}")
    if a.shape[2] != a.shape[3]:
        raise ValueError(f"{what}: images must be square, got {a.shape[2]}x{a.shape[3]} (array shape {a.shape}); "
                         "crop or pad them to a square first")
    return a[:, :3]  # RGBA -> RGB


def _refuse_single_image(a: np.ndarray, what: str) -> None:
    """A (H, W) image, or a (H, W, C) one that would otherwise pass for H images of W x C."""
    if a.ndim == 2:
        raise ValueError(f"{what}: shape {a.shape} is a single (H, W) image; pass a batch (N, H, W), e.g. x[None]")
    h, w, c = a.shape
    if h == w != c and c in (1, 3, 4):
        raise ValueError(f"{what}: shape {a.shape} looks like a single (H, W, C) image; pass a batch "
                         "(N, H, W, C), e.g. x[None]")


def _layout_4d(a: np.ndarray, what: str) -> np.ndarray:
    first = a.shape[1] in (1, 3) and a.shape[2] == a.shape[3]
    last = a.shape[3] in (1, 3, 4) and a.shape[1] == a.shape[2]
    if first:  # also when `last` fits too, e.g. (N, 3, 3, 3): PyTorch's layout wins the tie
        return a
    if last:
        return a.transpose(0, 3, 1, 2)
    if a.shape[1] in (1, 3) or a.shape[3] in (1, 3, 4):
        raise ValueError(f"{what}: shape {a.shape} gives non-square images in both (N, C, H, W) and (N, H, W, C) "
                         "readings; images must be square: crop or pad them first")
    raise ValueError(f"{what}: shape {a.shape} has no channel axis of size 1, 3 or 4; expected {LAYOUTS}")


def _to_uint8(a: np.ndarray, what: str) -> torch.Tensor:
    """Any accepted dtype and range -> uint8 0..255 (see the module docstring)."""
    if a.dtype == np.uint8:
        out = a
    elif a.dtype == np.bool_:
        out = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{what}: integer values must be within 0..255, found range [{lo}, {hi}]; "
                             f"accepted: {RANGES}")
        out = a.astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        out = _floats_to_uint8(a.astype(np.float64), what)
    else:
        raise ValueError(f"{what}: unsupported dtype {a.dtype}; accepted: {RANGES}")
    return torch.from_numpy(np.ascontiguousarray(out))


def _floats_to_uint8(a: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: values must be finite and within [0, 1] or [0, 255], found "
                         f"{int(np.isnan(a).sum())} NaN and {int(np.isinf(a).sum())} infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 255:
        raise ValueError(f"{what}: float values must be within [0, 1] or [0, 255], found range [{lo:.4g}, {hi:.4g}]; "
                         "rescale first, e.g. (x - x.min()) / (x.max() - x.min()), or undo a mean/std normalization")
    scale = 255.0 if hi <= 1.0 else 1.0
    return np.clip(a * scale, 0, 255).round().astype(np.uint8)


__all__ = ["to_images_u8", "LAYOUTS", "RANGES"]
