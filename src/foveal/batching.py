"""Evaluation and attack batch sizes sized by memory: what an 'auto' batch size becomes.

A fixed 256 images at 224 px holds gigabytes of activations on a CPU, which glibc hands back
to the kernel and faults in again on every batch (BENCHMARKS.md), while the cores were already busy
at a few dozen images. So on the CPU 'auto' picks the largest batch whose activations fit
BatchSizing.cpu_activation_mb, measured by a probe forward of two images at the real input
size; on CUDA it is BatchSizing.max_batch, the fixed size the GPU path has always used.

The probe counts the output bytes of every leaf module. Attacks keep every activation for the
backward pass, so their estimate is the sum; evaluation under no_grad frees each activation
once the next layer has read it, so its estimate is three times the largest one (a layer's
input, its output and a residual branch alive at once).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from .config import BatchSizing


def activation_bytes(model: nn.Module, shape: Sequence[int], device: torch.device | str, grad: bool) -> int:
    """Bytes of activations one image of `shape` (C, H, W) holds at once in a forward pass of
    `model` (with `grad`: a forward kept for backward), from a probe forward of two images."""
    sizes: list[int] = []

    def hook(_m: nn.Module, _inp: object, out: object) -> None:
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                sizes.append(t.numel() * t.element_size())

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    try:
        model.eval()  # the probe must not move batch-norm statistics
        with torch.no_grad():
            model(torch.zeros(2, *shape, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if not sizes:
        return 0
    return (sum(sizes) if grad else 3 * max(sizes)) // 2


def resolve_batch_size(batch_size: Union[int, str, None], model: nn.Module, shape: Sequence[int],
                       device: torch.device | str, grad: bool = False,
                       sizing: Optional[BatchSizing] = None) -> int:
    """`batch_size` itself when it is a number; for 'auto' (or None), sized by memory (module doc)."""
    if batch_size not in ("auto", None):
        return int(batch_size)  # type: ignore[arg-type]
    sizing = sizing or BatchSizing()
    if torch.device(device).type != "cpu":
        return sizing.max_batch
    per_image = activation_bytes(model, shape, device, grad)
    fit = int(sizing.cpu_activation_mb * 2 ** 20 // max(per_image, 1))
    return max(1, min(sizing.max_batch, fit))


__all__ = ["activation_bytes", "resolve_batch_size"]
