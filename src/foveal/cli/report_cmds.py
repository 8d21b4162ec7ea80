"""`foveal explain RUN IMAGES...` (overlay PNGs), `foveal embed RUN [DATA]` (embeddings and their 2-D map)
and `foveal report RUN` (report.html). Their flags are built from ExplainConfig, EmbedConfig and
ReportConfig (foveal.config_commands), where each default is written once."""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

from ..config import EmbedConfig, ExplainConfig, ReportConfig
from .config_args import add_dataclass_flags, dataclass_from_args


def cmd_explain(args: argparse.Namespace) -> int:
    from ..tasks.explain_files import explain_files
    from ..tasks.inference import Predictor

    o = dataclass_from_args(ExplainConfig, args)
    pred = Predictor.load(args.run, o.device)
    for e in explain_files(pred, args.images, o.method, o.out, target=o.target, alpha=o.alpha,
                           batch_size=o.batch_size):
        print(f"{e.image}\t{o.method} for '{e.target}' (p={e.prob:.3f}; predicted '{e.predicted}')\t-> {e.overlay}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from ..tasks.embed import embed_run

    o = dataclass_from_args(EmbedConfig, args)
    res = embed_run(args.run, args.data, o.split, o.out, o.map, o.device, o.batch_size, o.data_dir)
    n, d = res.embeddings.shape
    print(f"embedded {n} images ({d}-d) -> {res.out_dir / 'embeddings.npy'} (+ embeddings.csv, "
          f"embedding_map.json/.png: {o.map}); `foveal report` draws the map")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..tasks.reporting import report_from_run

    o = dataclass_from_args(ReportConfig, args)
    path = report_from_run(args.run, Path(o.out) if o.out else None, o.split, o.device)
    print(f"wrote {path}", file=sys.stderr)
    return 0


# The names in foveal.explain's registry, written out in ExplainConfig.method's type so `foveal -h` and argument
# errors answer without importing torch (tests/cli/test_startup.py checks the list against EXPLAINERS.names()).
EXPLAIN_METHODS: tuple[str, ...] = typing.get_args(typing.get_type_hints(ExplainConfig)["method"])


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("explain", help="saliency / Grad-CAM / ... overlays of image files for a trained model")
    sp.add_argument("run", help="run folder or weights file")
    sp.add_argument("images", nargs="+", help="image files or folders")
    add_dataclass_flags(sp, ExplainConfig)
    sp.set_defaults(handler=cmd_explain)

    sp = sub.add_parser("embed", help="pre-logit embeddings of a split saved as .npy (+ paths, labels) and a 2-D map")
    sp.add_argument("run", help="run folder or weights file (a `foveal pretrain` run too)")
    sp.add_argument("data", nargs="?", help="dataset name, image folder or CSV (default: the run's own data)")
    add_dataclass_flags(sp, EmbedConfig)
    sp.set_defaults(handler=cmd_embed)

    sp = sub.add_parser("report", help="(re)build report.html of a run folder")
    sp.add_argument("run", help="run folder")
    add_dataclass_flags(sp, ReportConfig)
    sp.set_defaults(handler=cmd_report)
