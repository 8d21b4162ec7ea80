"""`foveal export` and `foveal serve`: thin commands over foveal.export and foveal.serve."""

from __future__ import annotations

import argparse
import json
from typing import Any


# Flag spellings kept from before the flags were built from config.py: {flag: field path}.
EXPORT_FLAGS = {"format": "formats", "out": "out_dir", "quant-format": "quant.format",
                "per-channel": "quant.per_channel", "reduce-range": "quant.reduce_range",
                "calibration": "quant.calibration", "max-int8-drop": "limits.max_int8_drop",
                "qat": "quant.qat", "qat-epochs": "quant.qat_epochs", "qat-lr": "quant.qat_lr"}


def _cmd_export(args: argparse.Namespace) -> int:
    from ..config import ExportConfig
    from ..export.parity import ExportCheckError, export_run, format_parity
    from .config_args import dataclass_from_args

    try:
        report = export_run(args.run, dataclass_from_args(ExportConfig, args))
    except ExportCheckError as e:
        print(f"foveal export: error: {e}")
        return 1
    print(json.dumps(report, indent=2) if args.json else format_parity(report))
    if not args.json:
        print("wrote " + ", ".join(report["files"].values()) + " (+ .json sidecars) and parity.json")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..config import ServeConfig
    from ..serve.app import run_server
    from .config_args import dataclass_from_args

    run_server(args.model, dataclass_from_args(ServeConfig, args))
    return 0


def register(sub: Any) -> None:
    from ..config import ExportConfig, ServeConfig
    from .config_args import add_dataclass_flags

    p = sub.add_parser("export", help="export a run to ONNX (and int8), checked against eager PyTorch")
    p.add_argument("run", help="run folder or weights file")
    add_dataclass_flags(p, ExportConfig, EXPORT_FLAGS)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_export)

    p = sub.add_parser("serve", help="HTTP API and web page for a run or an exported .onnx model")
    p.add_argument("model", help="run folder, weights file or .onnx file")
    add_dataclass_flags(p, ServeConfig)
    p.set_defaults(handler=_cmd_serve)


def _cmd_bench_infer(args: argparse.Namespace) -> int:
    from ..export.bench import bench_infer
    from ..io import write_json

    res = bench_infer(args.model.split(","), args.img_size, args.threads, args.rounds, args.warmup,
                      args.variants.split(",") if args.variants else None)
    print(json.dumps(res, indent=2))
    print(_latency_table(res))
    if args.out:
        write_json(args.out, res)
    return 0


def _latency_table(res: dict[str, Any]) -> str:
    """Markdown rows: model | engine | median ms | ratio vs eager."""
    rows = ["| model | engine | median ms | vs eager |", "| --- | --- | ---: | ---: |"]
    for r in res["results"]:
        for k, v in r["median_ms"].items():
            rows.append(f"| {r['model']} | {k} | {v:.2f} | {r['ratio_vs_eager'][k]:.2f}x |")
    return "\n".join(rows)


def add_bench_infer(sub: Any) -> None:
    """`foveal bench infer` (registered by foveal.cli.bench)."""
    p = sub.add_parser("infer", help="CPU batch-1 latency: PyTorch eager vs ONNX Runtime fp32 and int8 variants")
    p.add_argument("--model", default="resnet18,mobilenetv3_large", help="comma-separated model names")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2, help="torch threads and ORT intra-op threads")
    p.add_argument("--rounds", type=int, default=50, help="timed calls per engine (each engine in its own block)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--variants", help="int8 variants (default all): qdq, qdq_reduce_range, qoperator, "
                   "qoperator_reduce_range")
    p.add_argument("--out", help="also write the JSON here")
    p.set_defaults(handler=_cmd_bench_infer)
