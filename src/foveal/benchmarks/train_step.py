"""Train-step throughput on synthetic data: a foveal model against timm's, in one process.

`bench_train_ours` times foveal's step (bf16 autocast, channels-last, optional
`torch.compile`, fused Nesterov SGD, zero host syncs between steps: the timed region is
bracketed by CUDA events). `bench_train_timm` times timm's model the way timm's own
`benchmark.py --bench train` does (its script is not in the wheel, so the step is written
after it: `timm.create_model`, channels-last, bf16 autocast, `torch.compile`, SGD, a fresh
random target and a device sync every step, perf_counter timing). Warm-up steps (which
include compilation and cuDNN autotuning) are excluded from both.
`compare_cpu_precision` times foveal's step on the CPU in fp32 against channels-last and
bf16 autocast (`train.cpu_bf16`), the fp32 NCHW step being the baseline.
"""

from __future__ import annotations

import math
import time
from functools import partial
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..runtime.device import autocast, cpu_has_native_bf16, resolve_device
from ..training.step import StepOptions, StepResult, TrainStep, classify, compile_applied, memory_format
from ..models import count_gflops, create_model
from .fast import Timer

# timm name -> foveal name, for the models of the speed comparison.
TIMM_TO_OURS: dict[str, str] = {
    "resnet50": "resnet50", "vit_base_patch16_224": "vit_base_patch16_224", "efficientnet_b0": "efficientnet_b0",
    "mobilenetv3_large_100": "mobilenetv3_large", "convnext_tiny": "convnext_tiny", "resnet18": "resnet18",
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _memory_stats(device: torch.device) -> Optional[float]:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _result(seconds: float, steps: int, batch: int, device: torch.device, gflops: Optional[float],
            peak_tflops: Optional[float]) -> dict[str, Any]:
    """images/s, step time, peak memory and model-FLOPs utilization (train = 3 x forward FLOPs)."""
    ips = steps * batch / seconds
    out: dict[str, Any] = {"images_per_s": ips, "step_ms": 1000 * seconds / steps, "peak_mem_gib": _memory_stats(device)}
    if gflops:
        out["train_tflops"] = 3 * gflops * ips / 1000
        if peak_tflops:
            out["mfu"] = out["train_tflops"] / peak_tflops
    return out


def _synthetic(batch: int, in_chans: int, img_size: int, num_classes: int, device: torch.device,
               channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, in_chans, img_size, img_size, generator=g, device=device)
    y = torch.randint(0, num_classes, (batch,), generator=g, device=device)
    return memory_format(x, channels_last), y


def build_train_step(name: str, batch: int, img_size: int, device: torch.device, amp: bool = True,
                     channels_last: bool = True, compile: bool = False, compile_mode: str = "default",
                     num_classes: int = 1000, in_chans: int = 3,
                     cpu_bf16: bool = False) -> tuple["partial[StepResult]", float]:
    """foveal's train step (`TrainStep`, as the Trainer runs it) for model `name` on one synthetic batch, as a
    `partial` whose `.func` is the TrainStep, and the model's forward GFLOPs per image. Nothing is read on
    the host: no `.item()`, no logging."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, in_chans=in_chans, img_size=img_size).to(device).train()
    gflops = count_gflops(model, img_size, in_chans)
    fused = {"fused": True} if device.type == "cuda" else {"foreach": True}
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True, **fused)
    options = StepOptions.plain(amp=amp, cpu_bf16=cpu_bf16, channels_last=channels_last, compile=compile,
                                compile_mode=compile_mode)
    step = TrainStep(model, opt, classify(nn.CrossEntropyLoss()), device, options)
    x, y = _synthetic(batch, in_chans, img_size, num_classes, device, channels_last)
    return partial(step, x, y), gflops


def bench_train_ours(name: str, batch: int = 256, img_size: int = 224, steps: int = 30, warmup: int = 10,
                     device: str | torch.device = "auto", amp: bool = True, channels_last: bool = True,
                     compile: bool = False, compile_mode: str = "default", num_classes: int = 1000,
                     peak_tflops: Optional[float] = None) -> dict[str, Any]:
    """images/s of foveal's train step for model `name` on synthetic (batch, 3, img_size, img_size) data.

    The result also says whether the step ran compiled ("compiled", `step.compile_applied`), the loss of its
    last timed step ("final_loss", read after the timing) and "passed": false when that loss is not finite
    or when compilation was asked for and did not apply (a fast step that computes garbage, or a timing of
    something else than what was asked, is a failure, not a result)."""
    dev = resolve_device(str(device))
    step, gflops = build_train_step(name, batch, img_size, dev, amp, channels_last, compile, compile_mode, num_classes)
    seconds, last = _time_steps(step, steps, warmup, dev)
    loss = last.loss.float().item()  # deliberate sync, after the timed region
    compiled = compile_applied(step.func.net)
    return {"impl": "foveal", "model": name, **_result(seconds, steps, batch, dev, gflops, peak_tflops),
            "compiled": compiled, "compile_check": step.func.compile_check, "final_loss": loss,
            "passed": math.isfinite(loss) and compiled == compile}


def _time_steps(step: Callable[[], Any], steps: int, warmup: int, dev: torch.device) -> tuple[float, Any]:
    """Seconds for `steps` calls of `step` after `warmup` untimed ones (no sync between steps), and what the
    last call returned."""
    for _ in range(warmup):
        step()
    _sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with Timer(dev) as t:
        for _ in range(steps):
            last = step()
    return t.seconds, last


def bench_train_timm(name: str, batch: int = 256, img_size: int = 224, steps: int = 30, warmup: int = 10,
                     device: str | torch.device = "auto", amp: bool = True, channels_last: bool = True,
                     compile: bool = False, num_classes: int = 1000,
                     peak_tflops: Optional[float] = None) -> dict[str, Any]:
    """images/s of timm's model `name`, stepped as timm's benchmark.py TrainBenchmarkRunner does."""
    import timm
    from timm.optim import create_optimizer_v2

    dev = resolve_device(str(device))
    torch.manual_seed(0)
    size_kw = {"img_size": img_size} if name.startswith("vit") else {}  # timm's convnets take any size as is
    model = timm.create_model(name, num_classes=num_classes, in_chans=3, **size_kw)
    model.to(dev).train()
    gflops = count_gflops(model, img_size, 3)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = create_optimizer_v2(model, opt="sgd", lr=1e-4)
    criterion = nn.CrossEntropyLoss().to(dev)
    step_model = torch.compile(model, backend="inductor") if compile else model
    x = memory_format(torch.randn(batch, 3, img_size, img_size, device=dev), channels_last)

    def step() -> None:  # as in timm: zero_grad, forward under autocast, fresh target, backward, step, sync
        opt.zero_grad()
        with autocast(dev, amp):
            out = step_model(x)
            target = torch.empty(out.shape[0], dtype=torch.long, device=dev).random_(num_classes)
            criterion(out, target).backward()
        opt.step()
        _sync(dev)

    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - t0
    return {"impl": "timm-style", "model": name, **_result(seconds, steps, batch, dev, gflops, peak_tflops)}


def matmul_peak_tflops(device: str | torch.device = "auto", n: int = 8192, iters: int = 20) -> Optional[float]:
    """Measured bf16 matrix-multiply TFLOP/s of the GPU (the MFU denominator); None on the CPU."""
    dev = resolve_device(str(device))
    if dev.type != "cuda":
        return None
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    with Timer(dev) as t:
        for _ in range(iters):
            a @ b
    return 2 * n**3 * iters / t.seconds / 1e12


def _timm_knows(name: str) -> bool:
    import timm

    return timm.is_model(name)


def compare_train(timm_name: str, with_timm: Optional[bool] = None, **kw: Any) -> dict[str, Any]:
    """foveal vs timm-style throughput for one model of TIMM_TO_OURS (timm skipped when not installed)."""
    ours_name = TIMM_TO_OURS.get(timm_name, timm_name)
    ours = bench_train_ours(ours_name, **kw)
    row: dict[str, Any] = {"model": timm_name, "ours": ours}
    if with_timm is None:  # automatic: when timm is installed and knows the name
        import importlib.util

        with_timm = importlib.util.find_spec("timm") is not None and _timm_knows(timm_name)
    if with_timm:
        kw.pop("compile_mode", None)
        row["timm"] = bench_train_timm(timm_name, **kw)
        row["speedup"] = ours["images_per_s"] / row["timm"]["images_per_s"]
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


# label -> (channels_last, bf16 autocast); the first is the baseline of the ratios
CPU_PRECISIONS: dict[str, tuple[bool, bool]] = {"fp32": (False, False), "fp32_channels_last": (True, False),
                                                "bf16_channels_last": (True, True)}


def compare_cpu_precision(name: str, batch: int = 256, img_size: int = 28, in_chans: int = 1, num_classes: int = 10,
                          steps: int = 10, warmup: int = 3) -> dict[str, Any]:
    """CPU train-step images/s of model `name` in fp32 NCHW (baseline), fp32 channels-last and bf16 autocast +
    channels-last (what `train.cpu_bf16` + `train.channels_last` run), each timed in its own block."""
    dev = torch.device("cpu")
    row: dict[str, Any] = {"model": name, "bf16_native": cpu_has_native_bf16()}
    for label, (channels_last, bf16) in CPU_PRECISIONS.items():
        step, gflops = build_train_step(name, batch, img_size, dev, amp=False, channels_last=channels_last,
                                        num_classes=num_classes, in_chans=in_chans, cpu_bf16=bf16)
        row[label] = _result(_time_steps(step, steps, warmup, dev)[0], steps, batch, dev, gflops, None)
    base = row["fp32"]["images_per_s"]
    for label in CPU_PRECISIONS:
        row[label]["speedup"] = row[label]["images_per_s"] / base
    return row
