"""Acceptance 1 of the label-errors issue: synthetic flips with a known answer on an MNIST subset.

For each noise setting (uniform flips to another class; class-dependent 7->1, 2->7, 5->6, 3->8
drawn only from those four classes), at 10% and 20% of all training labels:
1. out-of-sample probabilities of the noisy subset by K-fold cross-validation
   (`foveal.engine.labels.out_of_sample_probs`, the recipe `foveal check --labels` uses);
2. the flagged set of foveal's confident learning and of `cleanlab.filter.find_label_issues`
   on the same probabilities: precision, recall, F1 against the flipped images;
3. test accuracy (official 10,000 test images, mean over --seeds seeds) of models trained on the
   clean subset, the noisy subset, the noisy subset without foveal's flagged images (exclude), and
   the noisy subset with the flagged images given their suggested label (relabel); same recipe.

    nice -n 10 python bench/bench_labels.py --data-dir /work/shared/data --n 12000 --seeds 2 --out bench_labels.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from foveal.config import DataConfig
from foveal.data.labels import confident_learning
from foveal.data.sources import load_source
from foveal.data.splits import stratified_indices
from foveal.engine.labels import CrossValConfig, _predict, _train_fold, out_of_sample_probs

PAIRS = {7: 1, 2: 7, 5: 6, 3: 8}


def flip(y: np.ndarray, rate: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Noisy copy of y with round(rate * N) labels changed (uniform: to any other class)."""
    noisy = y.copy()
    n = int(round(rate * len(y)))
    if kind == "uniform":
        idx = rng.choice(len(y), n, replace=False)
        noisy[idx] = (y[idx] + rng.integers(1, 10, n)) % 10
    else:
        pool = np.flatnonzero(np.isin(y, list(PAIRS)))
        idx = rng.choice(pool, min(n, len(pool)), replace=False)
        noisy[idx] = [PAIRS[int(c)] for c in y[idx]]
    return noisy


def prf(flagged: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp = int((flagged & truth).sum())
    p, r = tp / max(flagged.sum(), 1), tp / max(truth.sum(), 1)
    return {"flagged": int(flagged.sum()), "precision": round(p, 4), "recall": round(r, 4),
            "f1": round(2 * p * r / max(p + r, 1e-12), 4)}


def test_acc(x, y, tx, ty, cfg: CrossValConfig, mean, std, seeds: int) -> float:
    """Mean test accuracy over `seeds` trainings, two at a time (threads, 1 intra-op thread each)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(seed: int) -> float:
        model = _train_fold(x, torch.as_tensor(y), 10, cfg, mean, std, 1000 + seed)
        return (_predict(model, tx, mean, std, 1024).argmax(1) == ty).float().mean().item()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(2) as pool:
            accs = list(pool.map(one, range(seeds)))
    finally:
        torch.set_num_threads(threads)
    return round(float(np.mean(accs)), 4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--n", type=int, default=12000, help="training images (stratified subset of the official train)")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=2, help="trainings averaged per test accuracy")
    ap.add_argument("--out", default="bench_labels.json")
    args = ap.parse_args()
    from cleanlab.filter import find_label_issues as cl_find

    b = load_source(DataConfig(source="mnist", data_dir=args.data_dir), 28)
    tr = b.splits["train"]
    keep = stratified_indices(tr.labels, [args.n / len(tr)], seed=0)[0]
    x, y = tr.images.load(keep), tr.labels[keep].numpy()
    tx, ty = b.splits["test"].images.load(), b.splits["test"].labels
    cfg = CrossValConfig(model="lenet5_modern", folds=args.folds, epochs=args.epochs)
    xf = x[:4096].float().div(255)
    mean, std = xf.mean(dim=(0, 2, 3)).tolist(), xf.std(dim=(0, 2, 3)).tolist()
    t0 = time.time()
    res = {"n": len(y), "cfg": vars(args), "machine": platform.processor() or platform.machine(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "settings": [],
           "clean_acc": test_acc(x, y, tx, ty, cfg, mean, std, args.seeds)}
    print(f"clean subset: test accuracy {res['clean_acc']}", flush=True)
    for kind in ("uniform", "class"):
        for rate in (0.1, 0.2):
            rng = np.random.default_rng(int(rate * 100) + (kind == "class"))
            noisy = flip(y, rate, kind, rng)
            truth = noisy != y
            t = time.time()
            probs = out_of_sample_probs(x, torch.as_tensor(noisy), 10, cfg, log=lambda m: print("  " + m, flush=True))
            cv_s = time.time() - t
            np.save(f"{args.out}.{kind}{rate}.probs.npy", probs)
            found = confident_learning(noisy, probs)
            ours = found.mask
            relabeled = noisy.copy()
            relabeled[ours] = found.suggested[ours]
            ref = cl_find(noisy, probs, n_jobs=1)
            row = {"noise": kind, "rate": rate, "flipped": int(truth.sum()), "cv_seconds": round(cv_s, 1),
                   "ours": prf(ours, truth), "cleanlab": prf(ref, truth), "same_set": bool((ours == ref).all()),
                   "relabel_correct": round(float((relabeled[ours] == y[ours]).mean()), 4),
                   "noisy_acc": test_acc(x, noisy, tx, ty, cfg, mean, std, args.seeds),
                   "cleaned_acc": test_acc(x[torch.from_numpy(~ours)], noisy[~ours], tx, ty, cfg, mean, std,
                                           args.seeds),
                   "relabeled_acc": test_acc(x, relabeled, tx, ty, cfg, mean, std, args.seeds)}
            lost = res["clean_acc"] - row["noisy_acc"]
            for k in ("cleaned", "relabeled"):
                row[f"{k}_recovered"] = round((row[f"{k}_acc"] - row["noisy_acc"]) / lost, 3) if lost > 0 else None
            res["settings"].append(row)
            print(json.dumps(row), flush=True)
    res["seconds"] = round(time.time() - t0, 1)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"wrote {args.out} ({res['seconds']} s)")


if __name__ == "__main__":
    main()
