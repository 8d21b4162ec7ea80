"""`foveal bench ...`: speed measurements, one subcommand per benchmark.

To add one, write `def _add_NAME(sub) -> None` that adds its parser with
`set_defaults(handler=fn)` and put it in SUBCOMMANDS; the handler prints its JSON result
(and writes it with --out). Library code does the work; this module only parses and prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Callable

from ..io import write_json


def _emit(result: Any, out: str | None) -> None:
    print(json.dumps(result, indent=2))
    if out:
        write_json(out, result)


def _cmd_train(args: argparse.Namespace) -> int:
    from ..benchmarks.train_step import compare_train, matmul_peak_tflops

    peak = matmul_peak_tflops(args.device)
    kw = dict(batch=args.batch_size, img_size=args.img_size, steps=args.steps, warmup=args.warmup, device=args.device,
              amp=not args.no_amp, channels_last=args.channels_last, compile=args.compile,
              compile_mode=args.compile_mode, peak_tflops=peak)
    rows = [compare_train(m, with_timm=args.timm, **kw) for m in args.model.split(",")]
    _emit({"bf16_matmul_peak_tflops": peak, "settings": {k: v for k, v in kw.items() if k != "peak_tflops"},
           "results": rows}, args.out)
    failed = [r["model"] for r in rows if not r["ours"]["passed"]]
    if failed:
        print(f"FAILED: {', '.join(failed)}: the last step's loss is not finite, or compilation did not apply; "
              "its timing is not a result", file=sys.stderr)
    return 1 if failed else 0


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train-step images/s on synthetic data, foveal vs timm-style (when installed)")
    p.add_argument("--model", default="resnet50", help="comma-separated; timm names map to ours (e.g. "
                   "mobilenetv3_large_100 -> mobilenetv3_large), other names are foveal models")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (compilation, autotuning)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-amp", action="store_true", help="full precision instead of bf16 autocast (CUDA)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode for foveal's model")
    p.add_argument("--timm", action=argparse.BooleanOptionalAction, default=None,
                   help="also time timm's model (default: when timm is installed)")
    p.add_argument("--out", help="also write the JSON here")
    p.set_defaults(handler=_cmd_train)


def _cmd_fast(args: argparse.Namespace) -> int:
    import torch

    from ..runtime.device import resolve_device
    from ..benchmarks.fast import bench_fast
    from ..training.fast import RECIPES, load_fast_data

    if args.data not in RECIPES:
        raise ValueError(f"--data '{args.data}' has no fast recipe; choose one of {', '.join(RECIPES)}")
    overrides = {k: v for k, v in (("epochs", args.epochs), ("model", args.model), ("batch_size", args.batch_size),
                                   ("tta", args.tta), ("min_accuracy", args.min_accuracy)) if v is not None}
    if args.compile:
        overrides.update(compile=True, compile_mode=args.compile_mode)
    cfg = dataclasses.replace(RECIPES[args.data], **overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_fast_data(args.data, args.data_dir).to(resolve_device(args.device))
    res = bench_fast(data, cfg, runs=args.runs, seed=args.seed, warmup=not args.no_warmup,
                     log=lambda m: print(m, file=sys.stderr))  # stdout is the JSON
    compiled = "compiled" if res["compiled"] else "eager"
    if res["passed"]:
        print(f"{args.data}: accuracy {res['accuracy_mean']:.4f} +- {res['accuracy_std']:.4f} over {args.runs} runs, "
              f"{res['seconds_mean']:.2f} s per run on {res['device']} ({compiled})")
    else:
        why = (f"{len(res['failed'])} of {args.runs} runs under the floor {res['min_accuracy']:.4f}" if res["failed"]
               else "--compile was given and compilation did not apply")
        print(f"{args.data}: FAILED: {why} (accuracies {', '.join(f'{a:.4f}' for a in res['accuracies'])}; "
              f"{compiled} on {res['device']}); no timing reported", file=sys.stderr)
    _emit(res, args.out)
    return 0 if res["passed"] else 1


def _add_fast(sub: Any) -> None:
    p = sub.add_parser("fast", help="seeded runs of the fast (speedrun) recipe: accuracy and seconds per run")
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist, mnist or digits")
    p.add_argument("--data-dir", help="folder with the official IDX files")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="run i uses seed + i")
    p.add_argument("--device", default="auto")
    p.add_argument("--epochs", type=float, help="override the preset's epochs")
    p.add_argument("--model", help="override the preset's model (an airnet variant)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--tta", type=lambda v: [s for s in v.split(",") if s and s != "none"],
                   help="test-time views, comma-separated: flip, shift; 'none' for none (default: the preset's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step (warmed up before timing)")
    p.add_argument("--compile-mode", default="default", help="or max-autotune-no-cudagraphs (minutes of autotuning)")
    p.add_argument("--min-accuracy", type=float, help="the floor under which a run fails (default: the preset's); "
                   "lower it on purpose, e.g. for short smoke runs")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up run")
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--out", help="also write the JSON here")
    p.set_defaults(handler=_cmd_fast)


# name -> function adding that subcommand's parser; other benchmarks register here.
def _cmd_loader(args: argparse.Namespace) -> int:
    import torch

    from ..benchmarks.loader import run_loader_bench

    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.photo_size.lower().split("x"))
    _emit(run_loader_bench(args.small, args.photos, (w, h), workers=args.workers, epochs=args.epochs,
                           device=args.device), args.out)
    return 0


def _add_loader(sub: Any) -> None:
    p = sub.add_parser("loader", help="data loader images/s: in-memory and streaming vs torchvision ImageFolder")
    p.add_argument("--small", type=int, default=10_000, help="32-px images for the in-memory comparison")
    p.add_argument("--photos", type=int, default=2_000, help="JPEGs for the streaming comparison")
    p.add_argument("--photo-size", default="640x480", help="WxH of the generated JPEGs")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (baseline) and decoder threads (foveal)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per loader (after one warm-up)")
    p.add_argument("--threads", type=int, default=2, help="torch threads in the main process (torch's default on 2 cores)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="also write the JSON here")
    p.set_defaults(handler=_cmd_loader)


def _cmd_cpu_train(args: argparse.Namespace) -> int:
    import torch

    from ..benchmarks.train_step import compare_cpu_precision

    torch.set_num_threads(args.threads)
    rows = [compare_cpu_precision(m, args.batch_size, args.img_size, args.in_chans, args.num_classes, args.steps,
                                  args.warmup) for m in args.model.split(",")]
    _emit({"threads": args.threads, "batch_size": args.batch_size, "img_size": args.img_size, "results": rows},
          args.out)
    return 0


def _add_cpu_train(sub: Any) -> None:
    p = sub.add_parser("cpu-train", help="CPU train-step images/s: fp32 vs channels-last vs bf16 autocast "
                       "(train.cpu_bf16)")
    p.add_argument("--model", default="airnet_mnist", help="comma-separated foveal models")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--img-size", type=int, default=28)
    p.add_argument("--in-chans", type=int, default=1)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=10, help="timed steps per precision")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--out", help="also write the JSON here")
    p.set_defaults(handler=_cmd_cpu_train)


def _cmd_cpu_e2e(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from ..benchmarks.cpu_e2e import compare_peer, run_cpu_e2e

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="foveal-cpu-e2e-"))
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731  (stdout is the JSON)
    out = {}
    unknown = set(args.parts) - {"malloc", "train", "robust", "peer"}
    if unknown:
        raise ValueError(f"--parts {','.join(sorted(unknown))}: expected malloc, train, robust or peer")
    timed = [p for p in ("train", "robust") if "malloc" in args.parts or p in args.parts]  # robust runs train too
    if timed:
        out["malloc"] = run_cpu_e2e(work, args.images, args.epochs, args.robust_images, args.model, args.batch_size,
                                    args.img_size, log, args.pretrained, timed)
    if "peer" in args.parts:
        out["peer"] = compare_peer(work, args.pretrained, args.images, args.epochs, args.batch_size, args.model,
                                   args.rounds, args.lr, log)
    _emit(out, args.out)
    return 0


def _add_cpu_e2e(sub: Any) -> None:
    p = sub.add_parser("cpu-e2e", help="whole `foveal train` and `foveal robust` commands on generated JPEGs, "
                       "with foveal's CPU allocator settings and with FOVEAL_MALLOC=default")
    p.add_argument("--images", type=int, default=400, help="generated JPEGs (300-500 px, 2 classes)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--robust-images", type=int, default=49, help="images for `foveal robust` (--limit)")
    p.add_argument("--model", default="timm/tf_efficientnet_lite0")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--work", help="folder for the images and runs (default: a new temporary folder)")
    p.add_argument("--parts", type=lambda v: v.split(","), default=["malloc"],
                   help="comma-separated: 'malloc' (= 'train,robust': those commands with and without the allocator "
                   "settings), 'train' or 'robust' alone (robust attacks the train part's model), 'peer' (foveal "
                   "train against bench/peer_timm_train.py, a timm user's script, same recipe)")
    p.add_argument("--pretrained", help="weights both start from (a safetensors state_dict or a foveal weights name): "
                   "'peer', and 'train' (then also a one-epoch linear probe, the issue's second command)")
    p.add_argument("--rounds", type=int, default=1, help="'peer': alternating runs of each command")
    p.add_argument("--lr", type=float, default=5e-4, help="'peer': AdamW learning rate of both (a fine-tuning rate)")
    p.add_argument("--out", help="also write the JSON here")
    p.set_defaults(handler=_cmd_cpu_e2e)


def _add_infer(sub: Any) -> None:
    from .deploy import add_bench_infer  # CPU inference latency: eager vs ONNX Runtime fp32/int8

    add_bench_infer(sub)


SUBCOMMANDS: dict[str, Callable[[Any], None]] = {"train": _add_train, "fast": _add_fast, "loader": _add_loader,
                                                 "infer": _add_infer, "cpu-train": _add_cpu_train,
                                                 "cpu-e2e": _add_cpu_e2e}


def register(subparsers: Any) -> None:
    """Add `foveal bench` and its subcommands to the top-level parser."""
    p = subparsers.add_parser("bench", help="speed benchmarks: " + ", ".join(SUBCOMMANDS))
    sub = p.add_subparsers(dest="bench", metavar="BENCH")
    sub.required = True
    for add in SUBCOMMANDS.values():
        add(sub)
