"""Devices, seeding and mixed precision: the few places that know about hardware."""

from __future__ import annotations

import os
import random
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, ContextManager, Optional

import numpy as np
import torch

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
