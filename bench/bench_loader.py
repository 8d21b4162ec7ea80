"""Loader throughput on this machine: foveal's in-memory and streaming loaders vs torchvision.

    python bench/bench_loader.py                 # 10,000 32-px PNGs and 2,000 640x480 JPEGs
    python bench/bench_loader.py --out loader.json

See foveal.data.bench for what is compared and how it is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from foveal.data.bench import run_loader_bench
from foveal.io import write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", type=int, default=10_000, help="32-px images for the in-memory comparison")
    p.add_argument("--photos", type=int, default=2_000, help="JPEGs for the streaming comparison")
    p.add_argument("--photo-size", default="640x480", help="WxH of the generated JPEGs")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers on both sides")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per loader (after one warm-up)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads in the main process (1: on a busy 2-core box, 2 OpenMP threads spin and run ~4x slower)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="also write the JSON result here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.photo_size.lower().split("x"))
    result = run_loader_bench(args.small, args.photos, (w, h), workers=args.workers, epochs=args.epochs,
                              device=args.device)
    result.update(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=platform.platform(),
                  cpus=os.cpu_count(), threads=args.threads)
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
