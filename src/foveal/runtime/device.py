"""Devices, seeding and mixed precision: the few places that know about hardware."""

from __future__ import annotations

import os
import random
import sys
import types
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, ContextManager, Optional

import numpy as np
import torch
from torch import nn

from .. import malloc
from ..models.layers import conv_kind


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then CPU; an unavailable device is a clear error.
    In a `foveal` command on the CPU, glibc malloc is told to keep freed memory (foveal/malloc.py)."""
    dev = _pick_device(name)
    malloc.on_device(dev.type)  # no-op on CUDA/MPS and for library users
    return dev


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' requested but CUDA is not available here; use --device cpu or auto")
    return dev


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def cpu_has_native_bf16() -> Optional[bool]:
    """True when this x86 CPU lists a bf16 instruction set (AVX512-BF16 or AMX-BF16) in /proc/cpuinfo,
    False when it lists none, None where that cannot be read (not Linux). torch's own
    `_is_mkldnn_bf16_supported` is also true for plain AVX-512, where oneDNN emulates bf16 slowly."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return bool(flags & {"avx512_bf16", "amx_bf16"}) if flags else None


CPU_CHANNELS_LAST_MIN_PX = 160  # `train.channels_last` None: NHWC on the CPU from this input size (config.py)


def resolve_channels_last(setting: Optional[bool], device: torch.device, img_size: int) -> bool:
    """`train.channels_last` / `robust.channels_last` in force: the user's setting, else NHWC on the CPU at
    ImageNet sizes (training steps and attack gradient passes)."""
    if setting is not None:
        return setting
    return device.type == "cpu" and img_size >= CPU_CHANNELS_LAST_MIN_PX


def resolve_cpu_bf16(setting: Optional[bool], device: torch.device, channels_last: bool) -> bool:
    """`train.cpu_bf16` in force: the user's setting, else bf16 autocast where it pays, as CUDA's `train.amp`:
    CPU training in NHWC (`resolve_channels_last`: >= 160 px) on a CPU with native bf16. There a batch-32
    step at 224 px runs 2.58x faster for ResNet-18, 1.16x for EfficientNet-Lite0, 1.04x for
    MobileNetV3-Large than fp32 NHWC (2-core Xeon with AMX, BENCHMARKS.md); small inputs are not measured."""
    if setting is not None:
        return setting
    return device.type == "cpu" and channels_last and cpu_has_native_bf16() is True


def warn_slow_cpu_bf16(device: torch.device, cpu_bf16: bool, log: Callable[[str], None]) -> None:
    """One line in the run log when train.cpu_bf16 is set on a CPU that will run it slower than fp32."""
    if cpu_bf16 and device.type == "cpu" and cpu_has_native_bf16() is False:
        log("note: train.cpu_bf16 on a CPU without native bf16 (no avx512_bf16/amx_bf16): expect it slower than fp32")


def autocast(device: torch.device, enabled: bool = True, cpu: bool = False) -> ContextManager:
    """bf16 autocast on CUDA; on CPU only when `cpu` is set (`train.cpu_bf16`): CPUs with native bf16
    (AVX512-BF16, AMX) train convnets 2.2-2.4x faster with it and channels-last (BENCHMARKS.md), the
    others are slower than in fp32."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if cpu and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def _cpu_autocast_on() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 has no device argument
        return torch.is_autocast_cpu_enabled()


_conv_backward = torch.ops.aten.convolution_backward


class _DepthwiseBF16(torch.autograd.Function):
    """A depthwise convolution whose every pass takes oneDNN's faster kernel on the CPU.

    Timed per layer of EfficientNet-Lite0 at 224 px, batch 32, channels-last, on the 2-core Xeon with
    AMX (`bench/bench_depthwise.py`; BENCHMARKS.md), bf16 against fp32: the forward 19 vs
    60 ms in all; the input gradient at stride 1 about even or faster (3.8 vs 14.4 ms at 32 ch x
    112 px), at stride 2 3-85x slower (128 vs 37 ms at 96 ch x 112 px); the weight gradient of 3x3
    kernels about even, of 5x5 kernels 5-6x slower (248 vs 48 ms at 144 ch x 56 px). So the forward runs in bf16 and each gradient in
    whichever precision is faster for its stride and kernel, the fp32 ones from bf16 tensors cast
    on the spot. Against running the whole conv in fp32 (with the casts in and out of it) a Lite0
    step is 1.37 -> 1.05 s. Not differentiable twice (nothing in foveal takes second derivatives)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):  # type: ignore[override]
        xb = x.to(torch.bfloat16)
        wb = weight.to(torch.bfloat16)
        ctx.save_for_backward(xb, weight)
        ctx.conv = (list(stride), list(padding), list(dilation), False, [0, 0], groups)
        ctx.has_bias = bias is not None
        return nn.functional.conv2d(xb, wb, None if bias is None else bias.to(torch.bfloat16), stride, padding,
                                    dilation, groups)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):  # type: ignore[override]
        xb, weight = ctx.saved_tensors
        conv = ctx.conv
        stride, k = conv[0], weight.shape[-2:]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            if max(stride) == 1:
                grad_x = _conv_backward(g, xb, weight.to(g.dtype), None, *conv, [True, False, False])[0]
            else:  # only the input's shape and layout are read: an fp32 tensor neither filled nor copied
                grad_x = _conv_backward(g.float(), torch.empty_like(xb, dtype=torch.float32), weight, None, *conv,
                                        [True, False, False])[0].to(xb.dtype)
        if ctx.needs_input_grad[1]:
            if max(k) <= 3:
                grad_w = _conv_backward(g, xb, weight.to(g.dtype), None, *conv, [False, True, False])[1].float()
            else:
                grad_w = _conv_backward(g.float(), xb.float(), weight, None, *conv, [False, True, False])[1]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.float().sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None, None


def _fp32_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", enabled=False):
        return type(self).forward(self, x.float())


def _bf16_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    if not _cpu_autocast_on():  # an fp32 pass of the same model (evaluation): the layer as it is
        return type(self).forward(self, x)
    if conv_kind(self) == "same":  # timm's Conv2dSame: its TF "same" padding, then the conv
        x = sys.modules["timm.layers.padding"].pad_same(x, self.weight.shape[-2:], self.stride, self.dilation)
    return _DepthwiseBF16.apply(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def cpu_bf16_depthwise(model: nn.Module) -> int:
    """Give `model`'s depthwise convolutions the CPU bf16 policy of `_DepthwiseBF16`; returns how many.

    Plain autocast runs them wholly in bf16, where two of oneDNN's backward kernels are 3-85x slower
    than its fp32 NHWC ones at some shapes (EfficientNet-Lite0 at 224 px: a batch-32 step 1.98 s under plain autocast, 1.71 s
    in fp32, 1.37 s with these convs wholly in fp32, 1.05 s with this policy; BENCHMARKS.md).
    Autocast has no per-module policy, so each such conv gets an instance `forward`, bound with
    MethodType so a deepcopy (the EMA copy) rebinds it to the copy. Names and state_dict keys are
    unchanged; outside autocast the layer runs as before. A conv subclass with its own forward other
    than timm's Conv2dSame, or with string or non-zero padding modes, runs in fp32 under autocast."""
    n = 0
    for m in model.modules():
        if not (isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels and "forward" not in vars(m)):
            continue
        ok = conv_kind(m) is not None and m.padding_mode == "zeros" and not isinstance(m.padding, str)
        m.forward = types.MethodType(_bf16_forward if ok else _fp32_forward, m)
        n += 1
    return n
