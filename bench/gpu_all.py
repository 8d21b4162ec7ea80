"""All measurements of the GPU speed issue in one call: `python bench/gpu_all.py --out DIR`.

Runs from a plain checkout (it puts ./src on the path; no pip install needed) on a machine
with torch (and timm, for the comparison). Parts, in order:

- fast:  10 seeded runs each of the fast recipe on Fashion-MNIST and MNIST (data on the GPU,
         compilation warmed up first, training + TTA evaluation timed with CUDA events);
- sync:  the fast-recipe step and the zoo train step under torch.cuda.set_sync_debug_mode("error"),
         and the Trainer's host reads per epoch at two step counts (must not grow with steps);
- train: train-step images/s, batch 256, 224 px, bf16, channels-last, compiled: foveal's model
         against timm's written the way timm's benchmark.py steps it, same process.

Data: --data-dir holds fashion-mnist/ and mnist/ with the official IDX files, e.g.
`mkdir -p data && cp -r /work/shared/data/mnist /work/shared/data/fashion-mnist data/` (./data/
is git-ignored; carry it to the GPU machine). Results go to DIR/gpu_all.json and DIR/gpu_all.md
after every part, so a run cut short keeps what it measured; parts left out for the time
budget are listed, run them again with `--parts`. `--smoke` runs every part at toy sizes
(CPU included; the timm comparison is skipped when timm is missing).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.util
import json
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from foveal.engine import bench, fast  # noqa: E402
from foveal.io import write_json, write_text  # noqa: E402

MODELS = ["resnet50", "vit_base_patch16_224", "efficientnet_b0", "mobilenetv3_large_100", "convnext_tiny", "resnet18"]
TARGETS = {"fashion-mnist": (0.950, 3.5), "mnist": (0.995, 2.0)}  # (mean accuracy, seconds per run)


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    env: dict[str, Any] = {"date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
                           "python": platform.python_version(), "torch": torch.__version__,
                           "cuda": torch.version.cuda, "host": platform.node(), "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    if importlib.util.find_spec("timm"):
        import timm

        env["timm"] = timm.__version__
    try:
        env["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                       text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["commit"] = None
    return env


# ---- parts ----------------------------------------------------------------------------------
def part_fast(args: argparse.Namespace, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    out = {}
    for name in ("fashion-mnist", "mnist"):
        if args.smoke:
            data = fast.load_fast_data("digits", img_size=16).to(device)
            cfg = dataclasses.replace(fast.RECIPES["digits"], epochs=1.0)
        else:
            data = fast.load_fast_data(name, str(Path(args.data_dir) / name)).to(device)
            epochs = args.fmnist_epochs if name == "fashion-mnist" else args.mnist_epochs
            cfg = dataclasses.replace(fast.RECIPES[name], **({"epochs": epochs} if epochs else {}))
        if device.type == "cuda" and not args.no_compile:
            cfg = dataclasses.replace(cfg, compile=True, compile_mode=args.fast_compile_mode)
        log(f"fast recipe on {data.name}: {args.runs} runs, {cfg.epochs} epochs, compile={cfg.compile}")
        out[name] = fast.bench_fast(data, cfg, runs=args.runs, log=log, warmup=device.type == "cuda")
    return out


def _sync_error(fn: Callable[[], None]) -> str | None:
    """None if `fn` ran without a host sync; else the error torch raised."""
    if not torch.cuda.is_available():
        return "not checked: no CUDA"
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
        return None
    except RuntimeError as e:
        return str(e).splitlines()[0]
    finally:
        torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()


def _trainer_reads(batch_size: int, device: torch.device, tmp: Path) -> tuple[int, int]:
    """(host syncs reported in one Trainer epoch, steps in it) on digits."""
    from foveal.config import load_config
    from foveal.engine import Trainer

    cfg = load_config(overrides={"data.source": "digits", "model.name": "lenet5_modern", "train.epochs": 1,
                                 "train.progress": False, "train.batch_size": batch_size, "train.out_dir": str(tmp),
                                 "train.name": f"sync-b{batch_size}", "train.device": str(device),
                                 "train.deterministic": False})
    trainer = Trainer(cfg, log=lambda m: None)
    trainer.setup()
    if device.type != "cuda":
        trainer.train_epoch(0)
        return -1, len(trainer.train_loader)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.train_epoch(0)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught), len(trainer.train_loader)


def part_sync(args: argparse.Namespace, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    import tempfile

    data = fast.load_fast_data("digits", img_size=16).to(device)
    cfg = dataclasses.replace(fast.RECIPES["digits"], epochs=1.0)
    run = fast.prepare(data, cfg)
    fast.run_once(run, data, seed=0)  # warm-up outside the checked region
    fast.reinit(run, data, seed=1)
    res: dict[str, Any] = {"fast_train_and_tta": _sync_error(lambda: (fast.train(run, data, 1),
                                                                     fast.predict_tta(run, data.test_x)))}
    zoo_model = "lenet5_modern" if args.smoke else "resnet18"
    step, _ = bench.build_train_step(zoo_model, 8, 32 if args.smoke else 64, device, num_classes=10)
    step()
    res["zoo_train_step"] = _sync_error(lambda: [step() for _ in range(3)])
    with tempfile.TemporaryDirectory() as tmp:
        few, many = _trainer_reads(256, device, Path(tmp)), _trainer_reads(32, device, Path(tmp))
    res["trainer_epoch_syncs"] = {"steps": [few[1], many[1]], "syncs": [few[0], many[0]],
                                  "constant": few[0] == many[0] if device.type == "cuda" else None}
    log(f"host-sync check: {res}")
    return res


def part_train(args: argparse.Namespace, device: torch.device, log: Callable[[str], None],
               over_budget: Callable[[], bool]) -> dict[str, Any]:
    models = args.models.split(",")
    kw: dict[str, Any] = dict(batch=args.batch_size, img_size=args.img_size, steps=args.steps, warmup=args.warmup,
                              device=device, amp=True, channels_last=True, compile=not args.no_compile,
                              compile_mode=args.train_compile_mode)
    if args.smoke:
        kw.update(batch=2, img_size=32, steps=1, warmup=1, compile=False)
    peak = bench.matmul_peak_tflops(device)
    rows, skipped = [], []
    for m in models:
        if over_budget():
            skipped.append(m)
            continue
        log(f"train step: {m}")
        try:
            rows.append(bench.compare_train(m, peak_tflops=peak, **kw))
        except Exception as e:  # one model failing must not lose the others' numbers
            rows.append({"model": m, "error": f"{type(e).__name__}: {e}"})
        log(json.dumps(rows[-1]))
    return {"bf16_matmul_peak_tflops": peak, "settings": {k: str(v) for k, v in kw.items()}, "results": rows,
            "skipped_for_time": skipped}


# ---- report ---------------------------------------------------------------------------------
def _fmt(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def markdown(res: dict[str, Any]) -> str:
    env = res["environment"]
    lines = [f"Measured {env['date_utc']} UTC on {env.get('gpu', 'CPU (no GPU)')}, driver {env.get('driver', '-')}, "
             f"torch {env['torch']} (CUDA {env['cuda']}), timm {env.get('timm', '-')}, Python {env['python']}, "
             f"commit {env.get('commit')}; command: `{res['command']}`.", ""]
    if "fast" in res:
        lines += ["| data | runs | test accuracy (mean ± std) | min | seconds per run | target |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, r in res["fast"].items():
            acc_t, sec_t = TARGETS[name]
            lines.append(f"| {r['data']} | {r['runs']} | {r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f} | "
                         f"{r['accuracy_min']:.4f} | {r['seconds_mean']:.2f} | ≥ {acc_t:.3f} in ≤ {sec_t} s |")
        lines.append("")
    if "train" in res:
        t = res["train"]
        lines += [f"Train step, synthetic data, {t['settings']}; bf16 matmul peak "
                  f"{_fmt(t['bf16_matmul_peak_tflops'], '.0f')} TFLOP/s.", "",
                  "| model | foveal img/s | timm-style img/s | ratio | foveal step ms | peak GiB | MFU |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in t["results"]:
            if "error" in r:
                lines.append(f"| {r['model']} | error: {r['error'][:80]} | | | | | |")
                continue
            o, tm = r["ours"], r.get("timm", {})
            lines.append(f"| {r['model']} | {o['images_per_s']:.0f} | {_fmt(tm.get('images_per_s'), '.0f')} | "
                         f"{_fmt(r.get('speedup'), '.2f')} | {o['step_ms']:.1f} | {_fmt(o['peak_mem_gib'], '.1f')} | "
                         f"{_fmt(o.get('mfu'), '.2f')} |")
        if t["skipped_for_time"]:
            lines.append(f"\nNot measured (time budget): {', '.join(t['skipped_for_time'])}.")
    if "sync" in res:
        lines += ["", f"Host-sync check: `{json.dumps(res['sync'])}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="gpu_results", help="folder for gpu_all.json and gpu_all.md")
    p.add_argument("--parts", default="fast,sync,train", help="comma-separated: fast, sync, train")
    p.add_argument("--data-dir", default=str(REPO / "data"), help="holds fashion-mnist/ and mnist/ IDX files")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--fmnist-epochs", type=float, help="override the preset (default: its epochs)")
    p.add_argument("--mnist-epochs", type=float)
    p.add_argument("--fast-compile-mode", default="default", help="max-autotune-no-cudagraphs may be faster "
                   "per run but autotunes for minutes")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--train-compile-mode", default="default")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--budget-s", type=float, default=540, help="start no new model after this many seconds")
    p.add_argument("--smoke", action="store_true", help="toy sizes: checks the script runs end to end")
    args = p.parse_args(argv)
    if args.smoke:
        args.runs, args.models = 1, "resnet18"
    t0 = time.time()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out)
    res: dict[str, Any] = {"command": "python bench/gpu_all.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                           "environment": environment()}

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.1f}s] {msg}", flush=True)

    def save() -> None:
        write_json(out / "gpu_all.json", res)
        write_text(out / "gpu_all.md", markdown(res))

    for part in args.parts.split(","):
        if part == "fast":
            res["fast"] = part_fast(args, device, log)
        elif part == "sync":
            res["sync"] = part_sync(args, device, log)
        elif part == "train":
            res["train"] = part_train(args, device, log, lambda: time.time() - t0 > args.budget_s)
        else:
            raise SystemExit(f"unknown part '{part}' (fast, sync, train)")
        save()
    log(f"wrote {out / 'gpu_all.json'} and {out / 'gpu_all.md'}")
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
