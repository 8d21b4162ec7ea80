"""Devices, seeding and mixed precision: the few places that know about hardware."""

from __future__ import annotations

import os
import random
import types
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, ContextManager, Optional

import numpy as np
import torch
from torch import nn

from .. import malloc


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


def _fp32_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", enabled=False):
        return type(self).forward(self, x.float())


def depthwise_in_fp32(model: nn.Module) -> int:
    """Run `model`'s depthwise convolutions in fp32 under CPU bf16 autocast; returns how many.

    oneDNN's bf16 depthwise-convolution backward is 2-4x slower than its fp32 NHWC one on a 2-core
    Xeon with AMX (EfficientNet-Lite0 at 224 px: a batch-32 step 1.98 s under plain autocast against
    1.71 s in fp32; with its 16 depthwise convs kept in fp32, 1.43 s; BENCHMARKS.md, issue 23), while
    its bf16 pointwise convs, batch norm and activations are ~2x faster. Autocast has no per-module
    policy, so each such conv gets an instance `forward` that leaves autocast; bound with MethodType so
    a deepcopy (the EMA copy) rebinds it to the copy. Names and state_dict keys are unchanged."""
    n = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels and "forward" not in vars(m):
            m.forward = types.MethodType(_fp32_forward, m)
            n += 1
    return n
