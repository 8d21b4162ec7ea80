"""Training images/s from JPEG files, from shards and from tensors already on the GPU, in one command:
`python bench/gpu_e2e.py --out DIR` (under 9 minutes on one H200 at the defaults; everything under DIR).

1. generates a folder of photo-like JPEGs (default 20,000 at 375-500 px, quality 90) with every core;
2. writes it as shards (`foveal shard`, max side 512: the bytes kept);
3. for each model (resnet50, resnet18, efficientnet_b0 at 224 px; bf16, channels-last, compiled), the same
   foveal train step fed (a) the folder streamed, (b) the shards streamed (JPEGs decoded on the GPU,
   random-resized-crop + flip on the device; `--workers` threads read bytes), (c) one synthetic batch already
   on the device: images/s, the ratio to (c), and the CPU cores the process used while timed ((user + sys)
   / wall).
Target (issue 36): from shards at least 95% of the synthetic rate for resnet50 with at most 8 cores.
Results: DIR/gpu_e2e.json and DIR/gpu_e2e.md. `--smoke` runs it at toy sizes on any device.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from foveal.benchmarks import train_step as bench  # noqa: E402
from foveal.benchmarks.cpu_e2e import write_photo_folders  # noqa: E402
from foveal.config import DataConfig  # noqa: E402
from foveal.data.augment import Compose  # noqa: E402
from foveal.data.loader import BatchPlan  # noqa: E402
from foveal.data.shard_write import write_shards  # noqa: E402
from foveal.data.shards import load_shards  # noqa: E402
from foveal.data.sources import load_source  # noqa: E402
from foveal.data.stream import StreamLoader  # noqa: E402

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def time_loader(step: Any, loader: StreamLoader, steps: int, warmup: int, device: torch.device) -> dict[str, Any]:
    """images/s of `step` fed by `loader` (epochs repeated as needed), and the cores used while timed."""
    def batches():
        epoch = 0
        while True:
            loader.set_epoch(epoch)
            yield from loader
            epoch += 1

    it = batches()
    for _ in range(warmup):
        x, y = next(it)
        step(x, y)
    bench._sync(device)
    c0, t0 = _cpu_seconds(), time.perf_counter()
    n = 0
    for _ in range(steps):
        x, y = next(it)
        step(x, y)
        n += len(x)
    bench._sync(device)
    wall = time.perf_counter() - t0
    return {"images_per_s": round(n / wall, 1), "cores_used": round((_cpu_seconds() - c0) / wall, 2),
            "problems": loader.problems[:5]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="gpu_e2e")
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--models", default="resnet50,resnet18,efficientnet_b0")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--workers", type=int, default=8, help="threads reading (shards: bytes) or decoding (folder)")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.smoke:
        args.n, args.models, args.batch, args.img_size, args.steps, args.warmup = 48, "lenet5_modern", 8, 32, 3, 1
        args.no_compile = True
    out = Path(args.out).resolve()
    work = out / "data"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    res: dict[str, Any] = {"command": "python bench/gpu_e2e.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                           "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                           "torch": torch.__version__, "cpu_count": os.cpu_count(), "settings": vars(args)}
    procs = max(1, min(16, os.cpu_count() or 1))
    t0 = time.perf_counter()
    write_photo_folders(work / "photos", args.n, classes=10, sizes=(375, 500), procs=procs)
    res["generate_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    write_shards(str(work / "photos"), str(work / "shards"), max_side=512, log=lambda m: None)
    res["shard_s"] = round(time.perf_counter() - t0, 1)
    cfg = DataConfig(in_memory=False, in_chans=3, workers=args.workers, augment=["rrc", "flip"])
    splits = {"folder": load_source(DataConfig(source=str(work / "photos"), in_memory=False, in_chans=3),
                                    args.img_size).splits["all"],
              "shards": load_shards(str(work / "shards"), cfg, args.img_size).splits["all"]}
    rows = []
    for name in args.models.split(","):
        step, _ = bench.build_train_step(name, args.batch, args.img_size, device, amp=True, channels_last=True,
                                         compile=not args.no_compile, num_classes=10)
        row: dict[str, Any] = {"model": name}
        seconds, _ = bench._time_steps(step, args.steps, args.warmup, device)
        row["synthetic"] = {"images_per_s": round(args.batch * args.steps / seconds, 1)}
        for source, split in splits.items():
            loader = StreamLoader(split, BatchPlan(args.batch, shuffle=True, drop_last=True, seed=0), device,
                                  MEAN, STD, Compose(cfg.augment, cfg, 10), workers=args.workers)
            row[source] = time_loader(step.func, loader, args.steps, args.warmup, device)
            row[source]["of_synthetic"] = round(row[source]["images_per_s"] / row["synthetic"]["images_per_s"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    res["results"] = rows
    r50 = next((r for r in rows if r["model"] == "resnet50"), None)
    if r50 is not None:
        res["target_met"] = r50["shards"]["of_synthetic"] >= 0.95 and r50["shards"]["cores_used"] <= 8
    shutil.rmtree(work, ignore_errors=True)
    (out / "gpu_e2e.json").write_text(json.dumps(res, indent=1))
    lines = [f"`{res['command']}` on {res['device']}, torch {res['torch']}, {res['cpu_count']} CPUs; "
             f"{args.n} JPEGs generated in {res['generate_s']} s, sharded in {res['shard_s']} s.", "",
             "| model | synthetic img/s | folder img/s (of synthetic, cores) | shards img/s (of synthetic, cores) |",
             "| --- | --- | --- | --- |"]
    for r in rows:
        cell = lambda s: f"{r[s]['images_per_s']:.0f} ({r[s]['of_synthetic']:.2f}, {r[s]['cores_used']:.1f})"  # noqa: E731
        lines.append(f"| {r['model']} | {r['synthetic']['images_per_s']:.0f} | {cell('folder')} | {cell('shards')} |")
    if "target_met" in res:
        lines += ["", f"Target (resnet50 from shards >= 0.95 of synthetic, <= 8 cores): "
                      f"{'met' if res['target_met'] else 'NOT met'}."]
    (out / "gpu_e2e.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return res


if __name__ == "__main__":
    main()
