"""`foveal explain RUN IMAGES...` (overlay PNGs), `foveal embed RUN [DATA]` (embeddings and their 2-D map)
and `foveal report RUN` (report.html)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_explain(args: argparse.Namespace) -> int:
    import torch

    from ..data.loader import normalize_u8
    from ..engine.inference import Predictor, list_images
    from ..explain import explain, save_overlay

    pred = Predictor.load(args.run, args.device)
    paths = list_images(args.images)
    out = Path(args.out)
    classes = pred.classes
    target = None
    if args.target is not None:
        if args.target not in classes:
            raise ValueError(f"--target '{args.target}' is not a class of this model ({', '.join(classes)})")
        target = classes.index(args.target)
    for i in range(0, len(paths), args.batch_size):
        chunk = paths[i:i + args.batch_size]
        images = pred.load_images(chunk)  # (B, C, H, W) uint8
        # The class and probability come from `predict`'s own path (test-time views + temperature),
        # so explain names the class predict prints; the heat map explains the model on the plain
        # image, since a map averaged over shifted and mirrored views would not line up with it.
        probs = pred.probabilities(images)  # (B, K) on the CPU
        targets = probs.argmax(1) if target is None else torch.full((len(images),), target)
        x = normalize_u8(images.to(pred.device), pred.mean, pred.std)
        maps = explain(pred.model, x, args.method, target=targets.to(pred.device)).cpu()
        for p, img, m, t, pr in zip(chunk, images, maps, targets.tolist(), probs):
            dest = out / f"{p.stem}_{args.method}.png"
            save_overlay(dest, img, m, args.alpha)
            print(f"{p}\t{args.method} for '{classes[t]}' (p={pr[t]:.3f}; predicted '{classes[int(pr.argmax())]}')"
                  f"\t-> {dest}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from ..engine.embed import embed_run

    res = embed_run(args.run, args.data, args.split, args.out, args.map, args.device, args.batch_size, args.data_dir)
    n, d = res.embeddings.shape
    print(f"embedded {n} images ({d}-d) -> {res.out_dir / 'embeddings.npy'} (+ embeddings.csv, "
          f"embedding_map.json/.png: {args.map}); `foveal report` draws the map")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import report_from_run

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
