"""Batch norm folded into the convolution before it, for evaluation passes.

In eval mode a BatchNorm2d after a Conv2d is a per-channel affine map, so it can be folded into the
conv's weight and bias (w' = w * g / sqrt(v + eps), b' = (b - m) * g / sqrt(v + eps) + beta). Eager
PyTorch runs it as its own pass over the activations: on the CPU a third of an EfficientNet-Lite0
forward at 224 px (464 of 1,365 ms for 80 images; BENCHMARKS.md), and the gradient passes of
`foveal robust`'s attacks pay it twice. torch.fx's `fuse` does the same fold but needs a traceable
model, which timm's dynamic-"same"-padding convs are not; hooks on one forward find the pairs in any
model, and the folded copy is checked against the original on that forward before it is used.
"""

from __future__ import annotations

import copy
from typing import Any, Iterator, Optional

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .layers.conv import conv_kind


def _plain_bn(m: nn.Module) -> Optional[nn.Module]:
    """What replaces a foldable batch norm: Identity for nn.BatchNorm2d, its dropout + activation for
    timm's BatchNormAct2d; None for anything else (other subclasses, no running statistics)."""
    if not isinstance(m, nn.BatchNorm2d) or m.running_mean is None or m.running_var is None:
        return None
    if type(m) is nn.BatchNorm2d:
        return nn.Identity()
    if type(m).__name__ == "BatchNormAct2d" and type(m).__module__.startswith("timm."):
        return nn.Sequential(m.drop, m.act)
    return None


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


class _Uses(TorchFunctionMode):
    """Counts the torch calls that compute a tensor from each watched tensor (reads of its shape, dim
    or dtype do not count): a conv output may be folded only when its batch norm is its one reader."""

    def __init__(self) -> None:
        super().__init__()
        self.count: dict[int, int] = {}  # id of a watched tensor (kept alive by the caller) -> uses

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        if self.count and not isinstance(out, torch.Size) and any(True for _ in _tensors(out)):
            for t in _tensors((args, kwargs)):
                if id(t) in self.count:
                    self.count[id(t)] += 1
        return out


def _foldable(model: nn.Module) -> bool:
    """Whether `fold_batchnorm` may copy `model`: not a DistributedDataParallel or torch.compile wrapper
    (their copies are not plain modules), and with at least one batch norm it could fold."""
    if isinstance(model, nn.parallel.DistributedDataParallel) or hasattr(model, "_orig_mod"):
        return False
    return any(_plain_bn(m) is not None for m in model.modules())


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example: torch.Tensor, rtol: float = 1e-3) -> nn.Module:
    """An eval-mode copy of `model` in which every BatchNorm2d that reads a Conv2d's output is folded
    into that conv, or `model` itself when it has none (or the copy's output on `example`, a small
    batch of real input, differs from the original's by more than `rtol` of its scale, which the pair
    rules below should never let happen). A pair is folded when the norm reads the conv's output and
    nothing else reads it (not a skip connection, not an in-place op between them), and neither
    module runs twice in a forward. `model` itself is not touched."""
    if not _foldable(model):
        return model
    folded = copy.deepcopy(model).eval()
    outputs: list[tuple[torch.Tensor, nn.Module]] = []  # kept alive, so identities cannot be reused
    pairs: list[Any] = []  # (conv, norm, the conv's output)
    calls: dict[nn.Module, int] = {}
    uses = _Uses()

    def on_conv(m: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        calls[m] = calls.get(m, 0) + 1
        outputs.append((out, m))
        uses.count[id(out)] = 0

    def on_bn(m: nn.Module, inp: tuple) -> None:
        calls[m] = calls.get(m, 0) + 1
        for out, conv in reversed(outputs):
            if out is inp[0]:
                pairs.append((conv, m, out))
                break

    hooks = [m.register_forward_hook(on_conv) for m in folded.modules() if conv_kind(m)]
    hooks += [m.register_forward_pre_hook(on_bn) for m in folded.modules() if _plain_bn(m) is not None]
    try:
        with uses:
            reference = folded(example)
    finally:
        for h in hooks:
            h.remove()
    pairs = [(c, b) for c, b, out in pairs if calls[c] == 1 and calls[b] == 1 and uses.count[id(out)] == 1]
    outputs.clear()
    if not pairs:
        return model
    parents = {id(child): (parent, name) for parent in folded.modules() for name, child in parent.named_children()}
    for conv, bn in pairs:
        scale = bn.running_var.float().add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight.float()
        shift = -bn.running_mean.float() * scale + (bn.bias.float() if bn.bias is not None else 0.0)
        if conv.bias is not None:
            shift = shift + conv.bias.float() * scale
        w = conv.weight
        conv.weight = nn.Parameter((w.float() * scale.view(-1, 1, 1, 1)).to(w.dtype), requires_grad=w.requires_grad)
        conv.bias = nn.Parameter(shift.to(w.dtype), requires_grad=w.requires_grad)
        parent, name = parents[id(bn)]
        setattr(parent, name, _plain_bn(bn))
    out = folded(example)
    scale = reference.float().abs().max().clamp_min(1.0)
    if not torch.allclose(out.float(), reference.float(), rtol=0, atol=rtol * float(scale)):
        return model
    return folded
