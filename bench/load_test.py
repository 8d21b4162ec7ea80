"""Serving load test: `foveal serve` in a subprocess, N requests at concurrency C from this process.

    nice -n 10 python bench/load_test.py --out runs/load_test.json
    python bench/load_test.py --model runs/my_run --requests 2000 --concurrency 32 --batches 32,1

Runs the server once per --batches value (micro-batching up to 32 vs one at a time), reports
errors, throughput and p50/p99 latency, and the throughput ratio of the first setting over the
last. Without --model it serves a randomly initialised model (latency does not depend on the
weights) saved as a run folder in a temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_run(model: str, img_size: int, root: Path) -> Path:
    """A run folder with random weights of `model` for 10 classes (3 channels, `img_size` px)."""
    import torch

    from foveal.card import ModelCard, Preprocessing
    from foveal.training.checkpoint import save_weights
    from foveal.models import create_model

    torch.manual_seed(0)
    m = create_model(model, num_classes=10, in_chans=3, img_size=img_size).eval()
    card = ModelCard(model, [str(i) for i in range(10)], 3, Preprocessing([0.5] * 3, [0.25] * 3, img_size))
    save_weights(root / "best.safetensors", m, card)
    return root


def sample_pngs(n: int = 16, size: int = 64) -> list[bytes]:
    """Small PNG files of real digits (scikit-learn), coloured and upscaled, as upload bodies."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    out = []
    for i in range(n):
        img = Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).convert("RGB").resize((size, size))
        buf = io.BytesIO()
        img.save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, max_batch: int, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "foveal.cli.main", "serve", model, "--port", str(port), "--max-batch", str(max_batch),
           *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import httpx

    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not answer /health within 180 s")


async def hammer(url: str, bodies: list[bytes], n: int, concurrency: int) -> dict:
    """n POST /predict at `concurrency` in flight; latencies in ms, errors listed by status/reason."""
    import httpx

    lat, errors, next_i = [], {}, 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_i
        while next_i < n:
            i, next_i = next_i, next_i + 1
            t = time.perf_counter()
            try:
                r = await client.post(url, files={"file": (f"{i}.png", bodies[i % len(bodies)], "image/png")})
                ok = r.status_code == 200 and len(r.json()["results"][0]["top"]) == 5
                key = None if ok else f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                key = type(e).__name__
            lat.append((time.perf_counter() - t) * 1e3)
            if key:
                errors[key] = errors.get(key, 0) + 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"requests": n, "concurrency": concurrency, "errors": sum(errors.values()), "error_kinds": errors,
            "seconds": wall, "throughput_rps": n / wall, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99))}


def run_one(model: str, max_batch: int, args: argparse.Namespace, bodies: list[bytes]) -> dict:
    import httpx

    port = free_port()
    extra = ["--max-wait-ms", str(args.max_wait_ms)] + (["--threads", str(args.threads)] if args.threads else [])
    proc = start_server(model, port, max_batch, extra)
    try:
        url = f"http://127.0.0.1:{port}/predict"
        asyncio.run(hammer(url, bodies, min(64, args.requests), args.concurrency))  # warm-up, not counted
        res = asyncio.run(hammer(url, bodies, args.requests, args.concurrency))
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        batches = {ln.split()[0]: float(ln.split()[1]) for ln in metrics.splitlines()
                   if ln.startswith(("foveal_batches_total", "foveal_batched_images_total"))}
        res["mean_batch"] = batches["foveal_batched_images_total"] / max(batches["foveal_batches_total"], 1)
        return {"max_batch": max_batch, **res}
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="run folder or .onnx (default: random-init --arch saved in a temp dir)")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--batches", default="32,1", help="server --max-batch values to compare")
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--threads", type=int, help="server inference threads")
    p.add_argument("--out")
    args = p.parse_args()
    bodies = sample_pngs()
    with tempfile.TemporaryDirectory() as td:
        model = args.model or str(make_run(args.arch, args.img_size, Path(td)))
        rows = [run_one(model, int(b), args, bodies) for b in args.batches.split(",")]
    result = {"model": args.model or f"{args.arch} (random init) at {args.img_size} px", "rows": rows,
              "throughput_ratio_first_vs_last": rows[0]["throughput_rps"] / rows[-1]["throughput_rps"],
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cores": os.cpu_count(),
              "load_average_1_5_15": list(os.getloadavg())}
    print(json.dumps(result, indent=2))
    print("| max batch | requests | concurrency | errors | req/s | p50 ms | p99 ms | mean batch |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['max_batch']} | {r['requests']} | {r['concurrency']} | {r['errors']} | {r['throughput_rps']:.1f} "
              f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['mean_batch']:.1f} |")
    if args.out:
        from foveal.io import write_json

        write_json(args.out, result)
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
