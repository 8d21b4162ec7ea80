"""Shards against the folder they came from, on the CPU: `python bench/bench_shards.py FOLDER [--out DIR]`.

For a folder of full-size photos (e.g. ../shared/data/weather4), in one run:
1. writing: `foveal shard` (--max-side 512) with webdataset's TarWriter, against litdata's `optimize` of
   the same bytes when litdata is installed (webdataset and litdata wall, user, sys);
2. decoding: images per CPU-second (user + sys, the per-core rate) of decode + random-resized-crop to
   224 px + flip, from (a) the folder and (b) the shards through foveal's decoder (`FileImages` /
   `ShardImages`, 2 threads), against (c) torchvision's ImageFolder + DataLoader (2 worker processes),
   the usual user's script;
3. whole commands: `foveal train` (resnet18 at 224 px, 1 epoch) in memory, streamed from the folder and
   streamed from the shards: wall, user, sys and sys/user, the streamed/in-memory wall ratios.
Results: DIR/bench_shards.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from foveal.benchmarks.cpu_e2e import foveal_argv, time_command  # noqa: E402
from foveal.config import DataConfig  # noqa: E402
from foveal.data.shard_write import write_shards  # noqa: E402
from foveal.data.shards import load_shards  # noqa: E402
from foveal.data.sources import load_source  # noqa: E402


def _cpu() -> tuple[float, float]:
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + b.ru_utime, a.ru_stime + b.ru_stime


def measured(fn: Callable[[], Any]) -> dict[str, Any]:
    """Wall, user and sys seconds of `fn()` in this process and its reaped children."""
    u0, s0 = _cpu()
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    u1, s1 = _cpu()
    return {"wall_s": round(wall, 2), "user_s": round(u1 - u0, 2), "sys_s": round(s1 - s0, 2)}


def write_litdata(folder: Path, out: Path) -> None:
    import litdata as ld

    files = sorted(p for p in folder.rglob("*") if p.is_file())
    ld.optimize(fn=_litdata_item, inputs=[str(p) for p in files], output_dir=str(out), chunk_bytes="64MB",
                num_workers=1, mode="overwrite")


def _litdata_item(path: str) -> dict[str, Any]:
    return {"image": Path(path).read_bytes(), "label": Path(path).parent.name}


def decode_rate(store: Any, threads: int = 2) -> dict[str, Any]:
    """foveal's decoder (the one streaming uses): every image decoded at 224 px, then crop + flip as the
    loader does on the batch; images per CPU-second."""
    from foveal.data.augment import Compose

    n = len(store)
    aug = Compose(["rrc", "flip"], DataConfig(), 2)
    g = torch.Generator().manual_seed(0)

    batches: list[torch.Tensor] = []

    def decode() -> None:
        with ThreadPoolExecutor(threads) as pool:
            for start in range(0, n, 64):
                xs = list(pool.map(_decode_or_none(store), range(start, min(start + 64, n))))
                batches.append(torch.stack([t for t in xs if t is not None]))

    def crop() -> None:  # the loader's batched augmentation, on the CPU here (on the device in training)
        for x in batches:
            aug(x.float() / 255, torch.zeros(len(x), dtype=torch.long), g)

    r, a = measured(decode), measured(crop)
    cpu = r["user_s"] + r["sys_s"]
    return {**r, "images": n, "images_per_cpu_s": round(n / cpu, 1), "sys_over_user": round(r["sys_s"] / r["user_s"], 3),
            "crop_cpu_s": round(a["user_s"] + a["sys_s"], 2),
            "with_crop_images_per_cpu_s": round(n / (cpu + a["user_s"] + a["sys_s"]), 1)}


def _decode_or_none(store: Any) -> Callable[[int], Any]:
    def one(i: int) -> Any:
        try:
            return store.decode(i)
        except ValueError:
            return None
    return one


def _rgb(path: str) -> Any:
    """torchvision's default loader, which fails on the folder's grayscale GIFs named .jpg only at convert."""
    from PIL import Image

    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


def torchvision_rate(folder: Path, workers: int = 2) -> dict[str, Any]:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    ds = datasets.ImageFolder(str(folder), transform=tf, loader=_rgb)
    dl = DataLoader(ds, batch_size=64, num_workers=workers, shuffle=True)
    r = measured(lambda: [None for _ in dl])
    return {**r, "images": len(ds), "images_per_cpu_s": round(len(ds) / (r["user_s"] + r["sys_s"]), 1),
            "sys_over_user": round(r["sys_s"] / r["user_s"], 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder")
    p.add_argument("--out", default="bench_results")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-side", type=int, default=512)
    p.add_argument("--skip-train", action="store_true", help="writing and decoding only")
    args = p.parse_args()
    folder = Path(args.folder).resolve()
    res: dict[str, Any] = {"date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
                           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                           "torch": torch.__version__, "folder": str(folder)}
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp) / "shards"
        res["write_webdataset"] = measured(lambda: write_shards(str(folder), str(shards), max_side=args.max_side,
                                                                log=lambda m: None))
        res["write_webdataset"]["bytes"] = sum(f.stat().st_size for f in shards.iterdir())
        res["folder_bytes"] = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        cfg = DataConfig(source=str(folder), in_memory=False, in_chans=3)
        res["decode_folder"] = decode_rate(load_source(cfg, args.img_size).splits["all"].images)
        res["decode_shards"] = decode_rate(load_shards(str(shards), cfg, args.img_size).splits["all"].images)
        res["decode_torchvision_imagefolder"] = torchvision_rate(folder)
        common = ["--model", args.model, "--img-size", str(args.img_size), "--epochs", str(args.epochs),
                  "--device", "cpu", "--train.progress", "false", "--out-dir", str(Path(tmp) / "runs"),
                  "--train.report", "false"]
        for label, data in () if args.skip_train else (("train_in_memory", [str(folder), "--data.in_memory", "true"]),
                            ("train_streamed_folder", [str(folder), "--data.in_memory", "false"]),
                            ("train_streamed_shards", [str(shards), "--data.in_memory", "false"])):
            r = time_command(foveal_argv("train", "--data", *data, "--name", label, *common))
            r.pop("output_tail")
            res[label] = r
            print(label, r, flush=True)
        try:  # last: litdata switches multiprocessing to spawn for the whole process
            res["write_litdata_same_bytes_unresized"] = measured(lambda: write_litdata(folder, Path(tmp) / "ld"))
        except ImportError:
            res["write_litdata_same_bytes_unresized"] = "litdata not installed"
    for label in () if args.skip_train else ("train_streamed_folder", "train_streamed_shards"):
        res[label]["wall_over_in_memory"] = round(res[label]["wall_s"] / res["train_in_memory"]["wall_s"], 2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_shards.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
