"""Loader throughput: foveal's two loader paths against torchvision's ImageFolder + DataLoader.

(a) small images (32 px): the in-memory `DeviceLoader` (uint8 on the device, batched flip and
    pad-crop) against ImageFolder + DataLoader workers with the same flip + pad-crop from
    transforms v2.
(b) photos to 224 px: the streaming `StreamLoader` (batch decoding on decoder threads, JPEG draft
    mode, uint8 batches, flip on the device) against ImageFolder + DataLoader with Resize(224) + flip.

Both sides deliver normalized float (B, 3, H, W) batches with labels on the same device; each
loader is timed over whole epochs after one warm-up epoch (the baseline's workers persist, so
their start-up is not counted against it), alternating baseline and foveal, and the
median epoch is kept. Files are generated into a temporary folder.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from PIL import Image

from ..config import DataConfig


def write_image_folder(root: Path, n: int, size: tuple[int, int], fmt: str, classes: int = 10, seed: int = 0) -> Path:
    """root/<class>/<i>.<fmt>: smooth random colour fields with noise (photo-like JPEG sizes), (w, h) = size."""
    rng = np.random.default_rng(seed)
    w, h = size
    for i in range(n):
        d = root / f"c{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        a = np.asarray(img, np.int16) + rng.integers(-12, 13, (h, w, 3), dtype=np.int16)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(d / f"{i}.{fmt}", quality=90)
    return root


def _tree_cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process and its live children (DataLoader
    workers), read from /proc. On a shared machine wall-clock rates swing with other people's load;
    images per CPU-second of the whole process tree do not, and bound what 2 dedicated cores give."""
    tick = os.sysconf("SC_CLK_TCK")

    def one(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            own = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            kids = []
            for task in Path(f"/proc/{pid}/task").iterdir():
                kids += [int(k) for k in (task / "children").read_text().split()]
            return own + sum(one(k) for k in kids)
        except (OSError, IndexError, ValueError):
            return 0.0

    return one(os.getpid())


def _epoch_rate(loader: Iterable, sync: Callable[[], None]) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU-second of the process tree) over one pass of `loader`."""
    t0, c0, n = time.perf_counter(), _tree_cpu_seconds(), 0
    for x, y in loader:
        n += len(y)
    sync()
    return n / (time.perf_counter() - t0), n / max(_tree_cpu_seconds() - c0, 1e-9)


def _compare(baseline: Iterable, ours: Any, epochs: int, sync: Callable[[], None]) -> dict[str, Any]:
    """Warm both up for one epoch, then alternate timed epochs; median rates of each."""
    _epoch_rate(baseline, sync)
    _epoch_rate(ours, sync)
    base, mine = [], []
    for e in range(epochs):
        base.append(_epoch_rate(baseline, sync))
        if hasattr(ours, "set_epoch"):
            ours.set_epoch(e + 1)
        mine.append(_epoch_rate(ours, sync))
    b, m = (statistics.median(r[0] for r in base), statistics.median(r[0] for r in mine))
    bc, mc = (statistics.median(r[1] for r in base), statistics.median(r[1] for r in mine))
    return {"baseline_img_s": round(b, 1), "foveal_img_s": round(m, 1), "ratio": round(m / b, 2),
            "baseline_img_per_cpu_s": round(bc, 1), "foveal_img_per_cpu_s": round(mc, 1), "cpu_ratio": round(mc / bc, 2),
            "baseline_epochs_img_s": [round(r[0], 1) for r in base], "foveal_epochs_img_s": [round(r[0], 1) for r in mine]}


def _tv_loader(root: Path, transform: Any, batch_size: int, workers: int):
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    return DataLoader(ImageFolder(str(root), transform=transform), batch_size=batch_size, shuffle=True,
                      num_workers=workers, persistent_workers=workers > 0, drop_last=True)


def bench_in_memory(root: Path, batch_size: int, workers: int, epochs: int, device: torch.device,
                    sync: Callable[[], None]) -> dict[str, Any]:
    """(a) 32-px images: DeviceLoader vs ImageFolder + DataLoader, both flip + pad-crop (4 px) + normalize."""
    from torchvision.transforms import v2

    from ..data.augment import Compose
    from ..data.loader import BatchPlan, DeviceLoader
    from ..data.preprocess import stats
    from ..data.sources import load_folder

    cfg = DataConfig(in_chans=3, in_memory=True, augment=["flip", "crop"], pad=4, workers=workers)
    t0 = time.perf_counter()
    bundle = load_folder(root, cfg, 32)
    decode_s = time.perf_counter() - t0
    split = bundle.splits["all"]
    mean, std = stats(split.images)
    ours = DeviceLoader(split, BatchPlan(batch_size, shuffle=True, drop_last=True), device, mean, std,
                        augment=Compose(cfg.augment, cfg, len(bundle.classes)))
    tf = v2.Compose([v2.ToImage(), v2.RandomHorizontalFlip(), v2.RandomCrop(32, padding=4),
                     v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    base = _OnDevice(_tv_loader(root, tf, batch_size, workers), device)
    return {"images": len(split), "img_size": 32, "one_time_decode_s": round(decode_s, 2),
            **_compare(base, ours, epochs, sync)}


def bench_stream(root: Path, batch_size: int, workers: int, epochs: int, device: torch.device,
                 sync: Callable[[], None]) -> dict[str, Any]:
    """(b) photos to 224 px: StreamLoader vs ImageFolder + DataLoader, both resize to 224 + flip + normalize."""
    from torchvision.transforms import v2

    from ..data.augment import Compose
    from ..data.loader import BatchPlan
    from ..data.sources import load_folder
    from ..data.stream import StreamLoader

    cfg = DataConfig(in_chans=3, in_memory=False, augment=["flip"], workers=workers)
    split = load_folder(root, cfg, 224).splits["all"]
    mean, std = [0.5] * 3, [0.25] * 3
    ours = StreamLoader(split, BatchPlan(batch_size, shuffle=True, drop_last=True), device, mean, std,
                        augment=Compose(cfg.augment, cfg, 10), workers=workers)
    tf = v2.Compose([v2.Resize((224, 224)), v2.RandomHorizontalFlip(), v2.ToImage(),
                     v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    base = _OnDevice(_tv_loader(root, tf, batch_size, workers), device)
    return {"images": len(split), "img_size": 224, **_compare(base, ours, epochs, sync)}


class _OnDevice:
    """Move a DataLoader's batches to `device`, as a training loop would (pinned, non-blocking on CUDA)."""

    def __init__(self, loader: Any, device: torch.device):
        self.loader, self.device = loader, device

    def __iter__(self):
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def run_loader_bench(small: int = 10_000, photos: int = 2_000, photo_size: tuple[int, int] = (640, 480),
                     batch_size: int = 256, photo_batch: int = 64, workers: int = 2, epochs: int = 3,
                     device: str = "cpu", workdir: str | None = None) -> dict[str, Any]:
    """Both comparisons in one run; returns images/s, ratios and settings (JSON-able)."""
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        t0 = time.perf_counter()
        small_root = write_image_folder(Path(tmp) / "small", small, (32, 32), "png")
        photo_root = write_image_folder(Path(tmp) / "photos", photos, photo_size, "jpg")
        gen_s = time.perf_counter() - t0
        a = bench_in_memory(small_root, batch_size, workers, epochs, dev, sync)
        b = bench_stream(photo_root, photo_batch, workers, epochs, dev, sync)
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.platform(),
            "cpus": os.cpu_count(), "device": str(dev), "torch_threads": torch.get_num_threads(), "workers": workers,
            "photo_size": list(photo_size), "generate_s": round(gen_s, 1),
            "in_memory_32px": {"batch_size": batch_size, **a}, "stream_224px": {"batch_size": photo_batch, **b}}


__all__ = ["run_loader_bench", "write_image_folder", "bench_in_memory", "bench_stream"]
