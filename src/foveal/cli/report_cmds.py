"""`foveal explain RUN IMAGES...` (overlay PNGs), `foveal embed RUN [DATA]` (embeddings and their 2-D map)
and `foveal report RUN` (report.html)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_explain(args: argparse.Namespace) -> int:
    from ..tasks.explain_files import explain_files
    from ..tasks.inference import Predictor

    pred = Predictor.load(args.run, args.device)
    for e in explain_files(pred, args.images, args.method, args.out, target=args.target, alpha=args.alpha,
                           batch_size=args.batch_size):
        print(f"{e.image}\t{args.method} for '{e.target}' (p={e.prob:.3f}; predicted '{e.predicted}')\t-> {e.overlay}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from ..tasks.embed import embed_run

    res = embed_run(args.run, args.data, args.split, args.out, args.map, args.device, args.batch_size, args.data_dir)
    n, d = res.embeddings.shape
    print(f"embedded {n} images ({d}-d) -> {res.out_dir / 'embeddings.npy'} (+ embeddings.csv, "
          f"embedding_map.json/.png: {args.map}); `foveal report` draws the map")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..tasks.reporting import report_from_run

    path = report_from_run(args.run, Path(args.out) if args.out else None, args.split, args.device)
    print(f"wrote {path}", file=sys.stderr)
    return 0


# The names in foveal.explain's registry, written out so `foveal -h` and argument errors answer without
# importing torch (tests/cli/test_startup.py checks the list against EXPLAINERS.names()).
EXPLAIN_METHODS = ("gradcam", "gradcampp", "ig", "occlusion", "rollout", "saliency", "smoothgrad")


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("explain", help="saliency / Grad-CAM / ... overlays of image files for a trained model")
    sp.add_argument("run", help="run folder or weights file")
    sp.add_argument("images", nargs="+", help="image files or folders")
    sp.add_argument("--method", default="gradcam", choices=EXPLAIN_METHODS)
    sp.add_argument("--target", help="class to explain (default: each image's predicted class)")
    sp.add_argument("--out", default="explanations", help="folder for the overlay PNGs (default: explanations)")
    sp.add_argument("--alpha", type=float, default=0.5, help="opacity of the heat map over the image")
    sp.add_argument("--batch-size", type=int, default=32)
    sp.add_argument("--device", default="auto")
    sp.set_defaults(handler=cmd_explain)

    sp = sub.add_parser("embed", help="pre-logit embeddings of a split saved as .npy (+ paths, labels) and a 2-D map")
    sp.add_argument("run", help="run folder or weights file (a `foveal pretrain` run too)")
    sp.add_argument("data", nargs="?", help="dataset name, image folder or CSV (default: the run's own data)")
    sp.add_argument("--data-dir", help="folder with the official files of a named dataset")
    sp.add_argument("--split", default="test", help="split to embed (default: test; a folder without splits: all)")
    sp.add_argument("--map", default="pca", choices=["pca", "tsne"], help="2-D map drawn in the report")
    sp.add_argument("--out", help="output folder (default: the run folder, so the report shows the map)")
    sp.add_argument("--batch-size", default="auto", help="images per forward pass (default: auto, sized by memory)")
    sp.add_argument("--device", default="auto")
    sp.set_defaults(handler=cmd_embed)

    sp = sub.add_parser("report", help="(re)build report.html of a run folder")
    sp.add_argument("run", help="run folder")
    sp.add_argument("--out", help="HTML file to write (default: RUN/report.html)")
    sp.add_argument("--split", default="test")
    sp.add_argument("--device", default="auto")
    sp.set_defaults(handler=cmd_report)
