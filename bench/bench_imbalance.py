"""Class imbalance on MNIST: plain cross-entropy against class weights, the balanced sampler and focal loss.

Three classes of the MNIST training set are cut to 1% of their images (about 60 each, the others keep
~5,400); every method trains the same model for the same number of steps with the same seed, and is
scored on the full, balanced 10,000-image test set: macro-F1 and the mean recall of the rare classes.

    nice -n 10 python bench/bench_imbalance.py --data-dir /work/shared/data [--epochs 3] [--seeds 0]

Prints a Markdown table (the one in BENCHMARKS.md, "Data: class imbalance") and writes it as JSON
with --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from typing import Any

import torch

from foveal.config import RunConfig, apply_overrides
from foveal.data.sources import DataBundle, load_source
from foveal.training import Trainer

METHODS: dict[str, dict[str, Any]] = {
    "cross-entropy": {},
    "class weights": {"data.balance": "weights"},
    "balanced sampler": {"data.balance": "sampler"},
    "focal (gamma 2)": {"optim.loss": "focal", "optim.focal_gamma": 2.0},
}


def reduce_classes(bundle: DataBundle, rare: tuple[int, ...], fraction: float, seed: int = 0) -> DataBundle:
    """Keep `fraction` of the training images of each class in `rare` (a seeded random subset)."""
    train = bundle.splits["train"]
    g = torch.Generator().manual_seed(seed)
    keep = torch.ones(len(train), dtype=torch.bool)
    for c in rare:
        idx = (train.labels == c).nonzero().flatten()
        drop = idx[torch.randperm(len(idx), generator=g)[max(1, round(fraction * len(idx))):]]
        keep[drop] = False
    splits = {**bundle.splits, "train": train.subset(keep.nonzero().flatten())}
    return dataclasses.replace(bundle, splits=splits)


def run(method: str, bundle: DataBundle, args: argparse.Namespace, seed: int, out_dir: str) -> dict[str, Any]:
    over = {"data.source": "mnist", "data.img_size": 28, "data.augment": [], "model.name": args.model,
            "train.epochs": args.epochs, "train.batch_size": 128, "train.seed": seed, "train.device": "cpu",
            "train.progress": False, "train.out_dir": out_dir, "train.name": f"{method}-{seed}".replace(" ", "_"),
            "optim.lr": 3e-3, **METHODS[method]}
    t0 = time.perf_counter()
    res = Trainer(apply_overrides(RunConfig(), over), data=bundle, log=lambda m: None).fit()
    m = res.test_metrics
    rare_recall = sum(m["per_class"][str(c)]["recall"] for c in args.rare) / len(args.rare)
    return {"method": method, "seed": seed, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
            "rare_recall": rare_recall, "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--rare", type=int, nargs="+", default=[2, 5, 8], help="classes cut to --fraction")
    ap.add_argument("--fraction", type=float, default=0.01)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--model", default="lenet5_modern")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the box is shared)")
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = apply_overrides(RunConfig(), {"data.source": "mnist", "data.data_dir": args.data_dir})
    bundle = reduce_classes(load_source(cfg.data, 28), tuple(args.rare), args.fraction)
    counts = torch.bincount(bundle.splits["train"].labels).tolist()
    print(f"train images per class (before the val split): {counts}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in METHODS:
            for seed in args.seeds:
                rows.append(run(method, bundle, args, seed, tmp))
                print(json.dumps(rows[-1]), flush=True)
    print(f"\n| method | test accuracy | macro-F1 | recall of classes {args.rare} | seconds |")
    print("| --- | --- | --- | --- | --- |")
    for method in METHODS:
        r = [x for x in rows if x["method"] == method]
        mean = {k: sum(x[k] for x in r) / len(r) for k in ("accuracy", "macro_f1", "rare_recall", "seconds")}
        print(f"| {method} | {mean['accuracy']:.4f} | {mean['macro_f1']:.4f} | {mean['rare_recall']:.4f} | "
              f"{mean['seconds']:.0f} |")
    if args.out:
        from foveal.io import write_json

        write_json(args.out, {"args": vars(args), "train_counts": counts, "rows": rows})


if __name__ == "__main__":
    main()
