"""CPU inference latency: PyTorch eager vs ONNX Runtime float32 vs int8, batch 1, from one run.

Each engine is timed in its own block (warm-up, then `rounds` calls), one after the other. Not
interleaved: ONNX Runtime's pool threads spin-wait for a while after each run, so an eager call
made right after an ORT call shares the cores with them (measured on 2 idle cores: ResNet-18
eager 99.6 ms interleaved, 36.7 ms alone). Measure on an idle machine. Random weights are fine:
latency does not depend on their values.
Every engine gets the same uint8 input and the same folded normalization; each model is
measured in its own fresh process.
"""

from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..card import ModelCard, Preprocessing
from ..config import QuantConfig
from ..data.preprocess import Normalized
from .onnx_export import export_onnx
from .quantize import quantize_int8
from .runtime import make_session

INT8_VARIANTS: dict[str, QuantConfig] = {
    "qdq": QuantConfig(calibration="minmax"),  # QDQ, per-channel weights (export's default, one method)
    "qdq_reduce_range": QuantConfig(calibration="minmax", reduce_range=True),
    "qoperator": QuantConfig(calibration="minmax", format="qoperator"),
    "qoperator_reduce_range": QuantConfig(calibration="minmax", format="qoperator", reduce_range=True),
}


def cpu_info() -> dict[str, Any]:
    """CPU model and the x86 int8 dot-product extensions that decide int8 speed."""
    flags, name = set(), platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not name:
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    import os

    return {"cpu": name, "cores_visible": os.cpu_count(), "load_average_1_5_15": list(os.getloadavg()),
            "int8_extensions": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"})}


def _timed_blocks(fns: dict[str, Callable[[], Any]], rounds: int, warmup: int) -> dict[str, float]:
    """Median ms per engine, each timed in its own block after its warm-up."""
    med = {}
    for k, f in fns.items():
        for _ in range(warmup):
            f()
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            f()
            times.append((time.perf_counter() - t) * 1e3)
        med[k] = float(np.median(times))
        time.sleep(0.5)  # let this engine's spinning threads go idle before the next block
    return med


def bench_model(name: str, img_size: int = 224, threads: int = 2, rounds: int = 50, warmup: int = 10,
                variants: Optional[list[str]] = None, calib_images: int = 16, workdir: Optional[str] = None) -> dict[str, Any]:
    """Median batch-1 latency of eager, ORT fp32 and each int8 variant for model `name`; ratios vs eager."""
    from ..models import create_model

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    model = create_model(name, num_classes=1000, in_chans=3, img_size=img_size).eval()
    pre = Preprocessing((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), img_size)
    card = ModelCard(name, tuple(str(i) for i in range(1000)), 3, pre)
    wrapped = Normalized(model, pre.mean, pre.std).eval()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1, 3, img_size, img_size), dtype=np.uint8)
    calib = rng.integers(0, 256, (calib_images, 3, img_size, img_size), dtype=np.uint8)
    with tempfile.TemporaryDirectory(dir=workdir) as td:
        fp32_path = export_onnx(model, card, Path(td) / f"{name}.onnx")
        sessions = {"onnx_fp32": make_session(fp32_path, threads)}
        for v in variants or list(INT8_VARIANTS):
            q = quantize_int8(fp32_path, Path(td) / f"{name}.{v}.onnx", calib, INT8_VARIANTS[v])
            sessions[f"int8_{v}"] = make_session(q, threads)
    xt = torch.from_numpy(x)
    fns: dict[str, Callable[[], Any]] = {"eager": lambda: wrapped(xt)}
    fns.update({k: (lambda s=s: s.run(None, {"images": x})) for k, s in sessions.items()})
    with torch.inference_mode():
        med = _timed_blocks(fns, rounds, warmup)
    return {"model": name, "median_ms": med, "ratio_vs_eager": {k: v / med["eager"] for k, v in med.items()}}


def _in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) in a new interpreter: each model starts with no thread pools, sessions or cached
    allocations left by the one before (measured: MobileNetV3-Large's ORT times rose from 3.4 to
    5.8 ms when it followed ResNet-18 in the same process)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def bench_infer(models: list[str], img_size: int = 224, threads: int = 2, rounds: int = 50, warmup: int = 10,
                variants: Optional[list[str]] = None) -> dict[str, Any]:
    """`bench_model` for each model, with the settings, versions, machine and date."""
    import onnxruntime

    res = [_in_fresh_process(bench_model, m, img_size, threads, rounds, warmup, variants) for m in models]
    return {"settings": {"img_size": img_size, "batch": 1, "threads": threads, "rounds": rounds, "warmup": warmup,
                         "int8_variants": {k: asdict(INT8_VARIANTS[k]) for k in (variants or INT8_VARIANTS)}},
            "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
            "machine": cpu_info(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": res}
