"""`foveal export` and `foveal serve`: thin commands over foveal.export and foveal.serve."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _cmd_export(args: argparse.Namespace) -> int:
    from ..export.parity import ExportCheckError, ExportOptions, ParityLimits, export_run, format_parity
    from ..export.quantize import QuantSettings

    formats = tuple(dict.fromkeys(["onnx", *args.format]))  # int8 is built from the float32 ONNX file
    opts = ExportOptions(formats=formats, out_dir=args.out, calib_images=args.calib_images, eval_limit=args.eval_limit,
                         threads=args.threads,
                         quant=QuantSettings(format=args.quant_format, per_channel=args.per_channel,
                                             reduce_range=args.reduce_range, calibration=args.calibration),
                         limits=ParityLimits(max_int8_drop=args.max_int8_drop))
    try:
        report = export_run(args.run, opts)
    except ExportCheckError as e:
        print(f"foveal export: error: {e}")
        return 1
    print(json.dumps(report, indent=2) if args.json else format_parity(report))
    if not args.json:
        print("wrote " + ", ".join(report["files"].values()) + " (+ .json sidecars) and parity.json")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..serve.app import ServeSettings, run_server

    settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, backend=args.backend,
                             max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels, threads=args.threads,
                             topk=args.topk)
    if args.max_uploads_in_flight_mb is not None:  # unset: ServeSettings holds the default
        settings.max_uploads_in_flight_mb = args.max_uploads_in_flight_mb
    run_server(args.model, settings, host=args.host, port=args.port)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("export", help="export a run to ONNX (and int8), checked against eager PyTorch")
    p.add_argument("run", help="run folder or weights file")
    p.add_argument("--format", action="append", choices=["onnx", "int8"], default=None,
                   help="repeatable; default: onnx and int8")
    p.add_argument("--out", help="output folder (default: RUN/export)")
    p.add_argument("--calib-images", type=int, default=256, help="training images for int8 calibration")
    p.add_argument("--eval-limit", type=int, help="check on at most this many test images (default: all)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    p.add_argument("--quant-format", choices=["qdq", "qoperator"], default="qdq")
    p.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--reduce-range", action="store_true", help="7-bit weights (pre-VNNI x86 saturation)")
    p.add_argument("--calibration", choices=["minmax", "entropy", "percentile"], default="minmax")
    p.add_argument("--max-int8-drop", type=float, default=1.0, help="accuracy points int8 may lose (default 1)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=lambda a: _cmd_export(_default_formats(a)))

    p = sub.add_parser("serve", help="HTTP API and web page for a run or an exported .onnx model")
    p.add_argument("model", help="run folder, weights file or .onnx file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=32, help="images per model call (1: no micro-batching)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="longest a request waits for a batch to fill")
    p.add_argument("--backend", choices=["torch", "onnx"], help="default: onnx for .onnx files, else torch")
    p.add_argument("--max-upload-mb", type=float, default=20.0)
    p.add_argument("--max-uploads-in-flight-mb", type=float,
                   help="MB of request bodies held at once by all requests together; past it, 503 "
                        "(default: ServeSettings.max_uploads_in_flight_mb)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="refuse images declaring more pixels")
    p.add_argument("--threads", type=int, help="inference threads")
    p.add_argument("--topk", type=int, default=5)
    p.set_defaults(handler=_cmd_serve)


def _default_formats(args: argparse.Namespace) -> argparse.Namespace:
    if not args.format:
        args.format = ["onnx", "int8"]
    return args


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
