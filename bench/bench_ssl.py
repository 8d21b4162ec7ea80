"""Transfer-learning benchmark on Fashion-MNIST: linear probe and 1%-label fine-tuning of a SimCLR backbone.

Run `foveal pretrain` first (the command is in BENCHMARKS.md), then:

    python bench/bench_ssl.py --run RUNS/fashion-mnist-airnet_small-simclr --data-dir /work/shared/data \
        --out bench_ssl.json

1. Linear probe: the frozen backbone embeds all 60,000 training images and the 10,000 test
   images once (no augmentation); an L2-regularized multinomial logistic regression
   (scikit-learn, lbfgs) is fitted on the training embeddings and scored on the test set.
   The same probe on a randomly initialized backbone of the same architecture is the
   baseline (random conv features are already far above chance).
2. 1% labels: `foveal train` on 600 training images (data.limit: 60 per class, stratified)
   from the SimCLR weights (--pretrained) and from scratch, same recipe and seed; test
   accuracy on the official 10,000-image test set.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch


def embed_split(backbone: torch.nn.Module, images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    from foveal.tasks.pretrain import embed_images

    return embed_images(backbone, images, mean, std, torch.device("cpu")).numpy()


def linear_probe(backbone: torch.nn.Module, data, mean: list[float], std: list[float], C: float,
                 max_train: int | None = None) -> dict:
    """Test accuracy of a logistic regression on frozen embeddings of train+val (or a seeded
    random `max_train` of them) -> test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from foveal.data.splits import concat

    train = concat(data.splits["train"], data.splits["val"])
    if max_train and max_train < len(train):
        train = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:max_train])
    t0 = time.time()
    xtr, xte = embed_split(backbone, train.images, mean, std), embed_split(backbone, data.splits["test"].images, mean, std)
    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(C=C, max_iter=2000).fit(scaler.transform(xtr), train.labels.numpy())
    acc = float(clf.score(scaler.transform(xte), data.splits["test"].labels.numpy()))
    return {"test_acc": acc, "train_images": len(train), "test_images": len(data.splits["test"]),
            "seconds": round(time.time() - t0, 1)}


def run_probes(run: Path, data_dir: str, C: float, max_train: int | None, baseline: bool) -> dict:
    from foveal.card import ModelCard
    from foveal.config import load_config
    from foveal.training.prepare import prepare_data
    from foveal.models import create_model
    from foveal.models.weights import read_state_dict

    sd, meta = read_state_dict(run)
    card = ModelCard.from_dict(meta)
    cfg = load_config(run / "config.yaml", {"data.data_dir": data_dir})
    data, cfg = prepare_data(cfg, log=lambda m: None)
    mean, std = list(card.preprocessing.mean), list(card.preprocessing.std)
    out = {}
    for name, weights in (("simclr", sd), ("random_init", None))[:2 if baseline else 1]:
        torch.manual_seed(0)
        backbone = create_model(card.model, num_classes=0, in_chans=card.in_chans,
                                img_size=card.preprocessing.img_size)
        if weights is not None:
            backbone.load_state_dict(weights)
        out[name] = linear_probe(backbone, data, mean, std, C, max_train)
        print(f"linear probe {name}: {out[name]}", flush=True)
    return out


def finetune(run: Path, data_dir: str, args: argparse.Namespace, skip: set[str]) -> dict:
    """Train on 600 labels from scratch and from the SimCLR weights, same recipe."""
    from foveal.config import apply_overrides, load_config
    from foveal.training import Trainer

    ssl_cfg = load_config(run / "config.yaml")
    common = {"data.source": "fashion-mnist", "data.data_dir": data_dir, "data.limit": args.labels,
              "data.val_fraction": args.val_fraction, "data.img_size": ssl_cfg.data.img_size,
              "data.augment": args.augment, "model.name": ssl_cfg.model.name, "train.epochs": args.epochs,
              "train.batch_size": args.batch_size, "optim.lr": args.lr, "train.out_dir": args.runs,
              "train.progress": False, "train.seed": args.seed}
    out = {}
    common.update(kv.split("=", 1) for kv in args.overrides.split(",") if kv)
    tuned = dict(kv.split("=", 1) for kv in args.finetune_overrides.split(",") if kv)
    for arm, extra in (("scratch", {}), ("simclr_finetune", {"model.pretrained": str(run), **tuned})):
        if arm in skip:
            continue
        cfg = apply_overrides(load_config(None), {**common, **extra, "train.name": f"fmnist-{args.labels}-{arm}"})
        out.setdefault("recipe", {"common": common, "pretrained_arm_only": tuned})
        t0 = time.time()
        res = Trainer(cfg).fit()
        counts = torch.bincount(res.data.splits["train"].labels, minlength=10).tolist()
        best = res.test_metrics["best_epoch"]
        out[arm] = {"test_acc": res.test_metrics["accuracy"], "best_epoch": best,
                    "val_acc": next(r["val_acc"] for r in res.history if r["epoch"] == best),  # what a sweep selects on
                    "train_per_class": counts, "seconds": round(time.time() - t0, 1), "run_dir": str(res.run_dir)}
        print(f"{arm}: {out[arm]}", flush=True)
    if "scratch" in out and "simclr_finetune" in out:
        out["gain_points"] = round(100 * (out["simclr_finetune"]["test_acc"] - out["scratch"]["test_acc"]), 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, type=Path, help="run folder written by `foveal pretrain`")
    p.add_argument("--data-dir", default="/work/shared/data")
    p.add_argument("--runs", default="/tmp/ssl_bench/runs", help="out_dir of the fine-tuning runs")
    p.add_argument("--labels", type=int, default=600, help="labeled training images (stratified)")
    p.add_argument("--val-fraction", type=float, default=0.01, help="of the 60,000 train images, for model selection")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--augment", default="crop,flip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overrides", default="", help="config overrides for both arms, e.g. "
                   "train.cpu_bf16=true,train.channels_last=true")
    p.add_argument("--finetune-overrides", default="", help="config overrides for the pretrained arm only, "
                   "e.g. optim.layer_decay=0.5,model.finetune=gradual (fine-tuning settings scratch has no use for)")
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the probe")
    p.add_argument("--probe-train", type=int, help="fit the probe on this many training images (default: all 60,000)")
    p.add_argument("--no-baseline", action="store_true", help="skip the probe of a randomly initialized backbone")
    p.add_argument("--skip", default="", help="comma-separated phases to skip: probe,scratch,simclr_finetune")
    p.add_argument("--out", help="write the JSON result here")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "run": str(args.run)}
    skip = set(args.skip.split(","))
    if "probe" not in skip:
        result["linear_probe"] = run_probes(args.run, args.data_dir, args.C, args.probe_train, not args.no_baseline)
    if not {"scratch", "simclr_finetune"} <= skip:
        result["finetune_1pct"] = finetune(args.run, args.data_dir, args, skip)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
