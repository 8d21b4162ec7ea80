"""The peer in `foveal bench cpu-e2e --peer`: how a timm user fine-tunes a timm model on an image folder.

timm.create_model, timm's resolve_data_config + create_transform (train: RandomResizedCrop + flip, no
colour jitter; eval: the shorter side to size / crop_pct, centre crop), torchvision ImageFolder + DataLoader with
2 workers, fp32 eager, AdamW with weight decay on weights only (timm's param_groups_weight_decay),
cosine schedule with a linear warm-up per step; validation every epoch, the test split at the end.
Written as timm's own train.py does it, cut to what this recipe uses; foveal runs the same recipe
(the flags `foveal/benchmarks/cpu_e2e.py` passes it), so the two whole commands can be timed side by side.

    python bench/peer_timm_train.py --data PHOTOS --model tf_efficientnet_lite0 --epochs 2 \
        --pretrained lite0.safetensors --out peer.json

PHOTOS holds train/, val/ and test/ subfolders of class folders.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import timm
import torch
from timm.data import create_transform, resolve_data_config
from timm.optim import param_groups_weight_decay
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder


def accuracy(model: torch.nn.Module, loader: DataLoader) -> float:
    model.eval()
    hits = n = 0
    with torch.no_grad():
        for x, y in loader:
            hits += int((model(x).argmax(1) == y).sum())
            n += len(y)
    return hits / max(n, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="tf_efficientnet_lite0")
    ap.add_argument("--pretrained", default=None, help="a safetensors state_dict of the model (head dropped)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--warmup-epochs", type=float, default=1.0)
    ap.add_argument("--min-lr-ratio", type=float, default=0.01)
    ap.add_argument("--rrc-scale", type=float, default=0.35)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    classes = sorted(p.name for p in Path(args.data, "train").iterdir() if p.is_dir())
    model = timm.create_model(args.model, num_classes=len(classes))
    cfg = resolve_data_config({}, model=model)  # the weights' input size, mean/std, crop_pct, interpolation
    common = dict(input_size=cfg["input_size"], mean=cfg["mean"], std=cfg["std"], interpolation=cfg["interpolation"])
    eval_common = {**common, "crop_pct": cfg["crop_pct"]}
    train_tf = create_transform(is_training=True, scale=(args.rrc_scale, 1.0), hflip=0.5, color_jitter=None, **common)
    eval_tf = create_transform(is_training=False, **eval_common)
    sets = {s: ImageFolder(f"{args.data}/{s}", train_tf if s == "train" else eval_tf) for s in ("train", "val", "test")}
    loaders = {s: DataLoader(d, args.batch_size if s == "train" else 256, shuffle=s == "train", drop_last=s == "train",
                             num_workers=args.workers, persistent_workers=args.workers > 0)
               for s, d in sets.items()}
    if args.pretrained:
        from safetensors.torch import load_file

        sd = {k: v for k, v in load_file(args.pretrained).items()
              if k in model.state_dict() and v.shape == model.state_dict()[k].shape}  # the new head stays random
        model.load_state_dict(sd, strict=False)
    opt = torch.optim.AdamW(param_groups_weight_decay(model, args.weight_decay), lr=args.lr)
    steps_per_epoch = len(loaders["train"])
    total, warm = args.epochs * steps_per_epoch, max(1, int(args.warmup_epochs * steps_per_epoch))

    def lr_at(step: int) -> float:  # linear warm-up, then cosine to min_lr_ratio x lr
        if step < warm:
            return args.lr * (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))

    loss_fn, step, history, t0 = torch.nn.CrossEntropyLoss(), 0, [], time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        hits = seen = 0
        for x, y in loaders["train"]:
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            logits = model(x)
            loss = loss_fn(logits, y)
            hits, seen = hits + int((logits.argmax(1) == y).sum()), seen + len(y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        history.append({"epoch": epoch + 1, "train_acc": hits / max(seen, 1), "val_acc": accuracy(model, loaders["val"])})
        print(json.dumps(history[-1]), flush=True)
    result = {"history": history, "test_acc": accuracy(model, loaders["test"]),
              "train_and_eval_s": round(time.perf_counter() - t0, 2)}
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
