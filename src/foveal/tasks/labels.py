"""Out-of-sample probabilities by K-fold cross-validation (or from a model trained on the other
splits, for a held-out split), and `find_label_issues` on top of them.

Confident learning needs, for every image, probabilities from a model that never saw its label.
K models are trained, each on K-1 folds (stratified, seeded), and each predicts its held-out fold;
a test or val split is instead judged by one model trained on the source's other splits. The
trainings are the whole cost, so they use a short in-memory recipe in the manner of the fast
recipe (`foveal.training.fast`): the images as one uint8 tensor, batched translate augmentation,
AdamW with a one-cycle schedule, no host sync in the step loop; a small model per input size
(`crossval_defaults`) keeps K folds of MNIST's 10,000 test images at minutes on 2 CPU cores
(BENCHMARKS.md, "Label errors"). With pretrained weights (`pretrained=`, `--pretrained`) nothing is
trained from scratch: each fold is a linear head on the frozen backbone's features (`label_probe.py`).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import CheckConfig, CrossValConfig, OptimConfig  # CrossValConfig re-exported
from ..data.augment import translate
from ..data.labels import LabelIssues, confident_learning
from ..data.preprocess import normalize_u8, stats
from ..data.splits import stratified_indices
from ..models import create_model, model_info
from ..training.loop import run_steps
from ..training.optim import Schedule, Shape, build_optimizer, param_groups
from ..training.step import StepHook, StepOptions, TrainStep, classify

_INIT_LOCK = threading.Lock()


def crossval_defaults(side: int, n: int) -> CrossValConfig:
    """Defaults by image side and number of images `n` (the split for K-fold, the training splits for
    a held-out check): LeNet-5 (modern) up to 32 px; ResNet-20 at 32 px above (larger images are
    shrunk: label errors are visible at thumbnail size, and K trainings at full size would take
    hours on a CPU). Fewer epochs for many images, more for few."""
    epochs = 6 if n > 30_000 else 10 if n > 3_000 else 20
    if side <= 32:
        return CrossValConfig(model="lenet5_modern", epochs=epochs)
    return CrossValConfig(model="resnet20", img_size=32, epochs=epochs)


def fold_indices(labels: torch.Tensor, folds: int, seed: int) -> list[torch.Tensor]:
    """`folds` stratified, disjoint parts covering every position of `labels`."""
    if folds < 2:
        raise ValueError(f"--folds must be at least 2 (each image is predicted by a model trained on the "
                         f"others), got {folds}")
    fracs = [1 / folds] * (folds - 1)
    # stratified_indices takes fractions of the whole per class; fold k takes 1/folds of what it is given
    return stratified_indices(labels, fracs, seed)


def fold_jobs(labels: torch.Tensor, folds: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(train, held) positions of each fold: held one of `fold_indices`' parts, train the others."""
    parts = fold_indices(labels, folds, seed)
    return [(torch.cat([p for j, p in enumerate(parts) if j != k]), held) for k, held in enumerate(parts)]


def _train_fold(x: torch.Tensor, y: torch.Tensor, num_classes: int, cfg: CrossValConfig, mean: list[float],
                std: list[float], seed: int) -> torch.nn.Module:
    """One model on (N, C, H, W) uint8 images x and (N,) labels y; no host sync in the step loop."""
    # The global generator draws the weights: one fold at a time (folds train in threads), the caller's state kept.
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(cfg.model, num_classes=num_classes, in_chans=x.shape[1], img_size=x.shape[-1])
    opt = build_optimizer(model, OptimConfig(name="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay),
                          param_groups(model, cfg.weight_decay, exempt=False))  # AdamW's default: decay every parameter
    steps = max(1, len(y) // cfg.batch_size)
    # torch's OneCycleLR with its defaults (lr from lr/25 to lr/25/1e4, beta1 0.95 -> 0.85 -> 0.95), peak at 25%
    shape = Shape("onecycle", cfg.epochs * steps, start=1 / 25, peak_at=0.25, end=1 / 25 / 1e4, as_torch=True,
                  momentum=(0.95, 0.85))
    step = TrainStep(model, opt, classify(F.cross_entropy), x.device, StepOptions.plain(),  # K small models, in threads
                     [StepHook(before=Schedule(opt, shape).set_step)])
    g = torch.Generator().manual_seed(seed)

    def batches(order: torch.Tensor):  # full batches only; the tail of each shuffled epoch waits for the next
        for i in range(steps):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            xb = normalize_u8(x[idx], mean, std)  # (B, C, H, W) float
            yield (translate(xb, cfg.translate, g) if cfg.translate else xb), y[idx]

    model.train()
    for _ in range(cfg.epochs):
        run_steps(step, batches(torch.randperm(len(y), generator=g)))
    return model.eval()


@torch.no_grad()
def _predict(model: torch.nn.Module, x: torch.Tensor, mean: list[float], std: list[float], bs: int) -> torch.Tensor:
    """(N, K) softmax probabilities of (N, C, H, W) uint8 images."""
    return torch.cat([model(normalize_u8(x[i:i + bs], mean, std)).float().softmax(1) for i in range(0, len(x), bs)])


def _fit_size(x: torch.Tensor, cfg: CrossValConfig) -> torch.Tensor:
    """Images at cfg.img_size, or raised to the model's smallest input side."""
    side = cfg.img_size or max(x.shape[-1], model_info(cfg.model)["min_img_size"])
    if side == x.shape[-1]:
        return x
    y = F.interpolate(x.float(), size=(side, side), mode="bilinear", antialias=side < x.shape[-1], align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8)


def _fold_job(args: tuple) -> tuple[int, torch.Tensor, float]:
    """One job: train on the `train` positions of x, predict the `held` ones."""
    k, x, y, train, held, num_classes, cfg, mean, std = args
    t0 = time.perf_counter()
    model = _train_fold(x[train], y[train], num_classes, cfg, mean, std, cfg.seed + k)
    return k, _predict(model, x[held], mean, std, cfg.eval_batch_size), time.perf_counter() - t0


def _norm_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of (N, C, H, W) uint8 images: 4,096 of them evenly spaced through the split, so a
    folder listed class by class gives every class its share (no label enters them)."""
    return stats(x[torch.linspace(0, len(x) - 1, min(len(x), 4096)).round().long()], unbiased=True)


def _train_and_predict(x: torch.Tensor, labels: torch.Tensor, jobs: list[tuple[torch.Tensor, torch.Tensor]],
                       num_classes: int, cfg: CrossValConfig, mean: list[float], std: list[float],
                       names: list[str], log: Callable[[str], None]) -> torch.Tensor:
    """(N, num_classes) probabilities: one model per (train, held) pair of positions in x, each predicting
    its held positions (rows no job holds stay 0).

    Jobs train side by side in `cfg.workers` threads with torch's intra-op pool at one thread (torch
    releases the GIL in its kernels): a small model gains little from intra-op threads, and an
    intra-op pool that shares its cores with other jobs can run 10x slower (measured: LeNet-5 steps
    at 8,300 img/s on 1 thread, 920 on 2 threads of a loaded 2-core box). One job (a held-out model)
    keeps one thread too: on the quiet box two threads trained MNIST's held-out LeNet-5 in 52 s against
    58 s, and made the result depend on the thread count.
    """
    probs = torch.zeros(len(labels), num_classes)
    args = [(k, x, labels, train, held, num_classes, cfg, mean, std) for k, (train, held) in enumerate(jobs)]
    workers = min(len(jobs), cfg.workers or os.cpu_count() or 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pool = ThreadPoolExecutor(workers)
    try:
        for k, p, sec in pool.map(_fold_job, args):
            train, held = jobs[k]
            probs[held] = p
            acc = (p.argmax(1) == labels[held]).float().mean().item()
            log(f"{names[k]}: trained on {len(train):,}, predicted {len(held):,} "
                f"(agreement with the given labels {acc:.4f}), {sec:.0f} s")
    finally:
        pool.shutdown()
        torch.set_num_threads(threads)
    return probs


def out_of_sample_probs(images: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: CrossValConfig,
                        log: Callable[[str], None] = print) -> np.ndarray:
    """(N, num_classes) probabilities, each row from the fold model that did not train on that image."""
    x = _fit_size(images, cfg)
    jobs = fold_jobs(labels, cfg.folds, cfg.seed)
    names = [f"fold {k + 1}/{cfg.folds}" for k in range(cfg.folds)]
    return _train_and_predict(x, labels, jobs, num_classes, cfg, *_norm_stats(x), names, log).numpy()


def holdout_probs(train_images: torch.Tensor, train_labels: torch.Tensor, images: torch.Tensor,
                  labels: torch.Tensor, num_classes: int, cfg: CrossValConfig,
                  log: Callable[[str], None] = print) -> np.ndarray:
    """(N, num_classes) probabilities of `images` from one model trained on other images (another split:
    out of sample by construction). `labels` only report the model's agreement with them."""
    n = len(train_labels)
    x = _fit_size(torch.cat([train_images, images]), cfg)
    y = torch.cat([train_labels, labels])
    job = (torch.arange(n), torch.arange(n, len(y)))
    mean, std = _norm_stats(x[:n])  # the training images' statistics, as any trained model has them
    return _train_and_predict(x, y, [job], num_classes, cfg, mean, std, ["held-out model"], log)[n:].numpy()


@dataclass
class LabelCheck:
    """`find_label_issues`' answer: the issues and what names them (split, classes, paths)."""

    issues: LabelIssues
    classes: list[str]
    split: str
    paths: Optional[list[str]]
    images: torch.Tensor  # (N, C, H, W) uint8, as loaded (for thumbnails)
    cv: Optional[CrossValConfig]  # None when the probabilities were given
    seconds: float
    method: str = "given probabilities"  # where the probabilities came from, in words (page, check.json)
    model: Optional[dict[str, Any]] = None  # the model behind the probabilities (check.json), None when given

    def rows(self, everything: bool = False) -> list[dict[str, Any]]:
        """The ranked rows of `label_issues.csv` (flagged images), or with `everything` of `label_quality.csv`
        (every image of the split, same ranking, with a `flagged` column)."""
        from ..data.labels import issue_rows

        return issue_rows(self.issues, self.classes, self.split, self.paths, everything)


def _as_split(data: Any, labels: Any, split: Optional[str], data_dir: Optional[str], img_size: Optional[int],
              pre: Any = None
              ) -> tuple[torch.Tensor, torch.Tensor, list[str], str, Optional[list[str]], dict[str, Any]]:
    """(images uint8, labels, classes, split name, paths, the source's other splits by name) from a
    source name/path, a DataBundle, a Split, or (N, H, W[, C]) / (N, C, H, W) arrays with `labels`.
    `pre`: pretrained weights' Preprocessing, whose resize rule and crop fraction a source loaded from disk takes."""
    from ..config import DataConfig
    from ..data.arrays import to_images_u8
    from ..data.bundle import DataBundle, Split

    if isinstance(data, (str, os.PathLike)):
        from ..data.check import native_size
        from ..data.sources import load_source

        cfg = DataConfig(source=str(data), data_dir=data_dir)
        if pre is not None:
            cfg = dataclasses.replace(cfg, resize=pre.resize, crop_pct=pre.crop_pct)
        data = load_source(cfg, img_size or native_size(str(data)) or 32)
    if isinstance(data, DataBundle):
        name = split or default_split(data)
        if name not in data.splits:
            raise ValueError(f"{data.name} has no split '{name}' (it has {', '.join(data.splits)}); pass one of them")
        s = data.splits[name]
        others = {k: v for k, v in data.splits.items() if k != name}
        return s.images.load(), s.labels, list(data.classes), name, s.paths, others
    if isinstance(data, Split):
        n = int(data.labels.max()) + 1
        return data.images.load(), data.labels, [str(c) for c in range(n)], split or "all", data.paths, {}
    if labels is None:
        raise ValueError("find_label_issues(images, labels): array input needs the labels")
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    x = to_images_u8(data)
    return x, y, [str(c) for c in range(int(y.max()) + 1)], split or "all", None, {}


def default_split(bundle: Any) -> str:
    """The split a label check looks at by default: 'train' when the source has one, else its first."""
    return "train" if "train" in bundle.splits else next(iter(bundle.splits))


def holdout_splits(name: str, others: Sequence[str], holdout: Optional[bool]) -> list[str]:
    """The splits a held-out model trains on to check split `name` ([]: K-fold on `name` itself).

    Default (`holdout` None): held out when `name` is not 'train' and the source has a 'train' split,
    i.e. checking a test or val split. A model trained on the other splits sees more images than
    K-1 folds of the checked split (MNIST: 60,000 against 7,500) and never sees the checked labels,
    which is what a user who checks a test split expects it to be judged by; `holdout=False` keeps
    the check inside the split (K-fold), `True` asks for the other splits whatever the name.
    """
    if holdout is None:
        holdout = name != "train" and "train" in others
    if holdout and not others:
        raise ValueError(f"a held-out check of split '{name}' trains on the source's other splits, and it has "
                         "none; check it by K-fold on itself (--no-holdout, holdout=False)")
    return list(others) if holdout else []


def _recipe(side: int, n_train: int, seed: int, model: Optional[str], folds: Optional[int],
            epochs: Optional[int]) -> CrossValConfig:
    """`crossval_defaults` for images of `side` px and `n_train` training images, with the overrides."""
    over = {k: v for k, v in dict(model=model, folds=folds, epochs=epochs).items() if v is not None}
    cv = dataclasses.replace(crossval_defaults(side, n_train), seed=seed, **over)
    if model is not None and cv.img_size is None and side > 32:
        cv.img_size = 32
    return cv


def find_label_issues(data: Any, labels: Optional[Sequence[int]] = None, *, probs: Optional[np.ndarray] = None,
                      split: Optional[str] = None, holdout: Optional[bool] = None, model: Optional[str] = None,
                      folds: Optional[int] = None, epochs: Optional[int] = None, rank_by: str = CheckConfig.rank_by,
                      data_dir: Optional[str] = None, img_size: Optional[int] = None, seed: int = 0,
                      pretrained: Optional[str] = None, device: str = CheckConfig.device,
                      log: Callable[[str], None] = print) -> LabelCheck:
    """Mislabeled images of one split by confident learning on out-of-sample probabilities.

    `data`: a dataset name / folder / CSV (with `data_dir` for named datasets), a DataBundle (its
    `split`, default 'train' or its only split), a Split, or images as arrays with `labels`.
    The probabilities come from K-fold cross-validation on the split, or, for a held-out split (see
    `holdout_splits`: by default any split but 'train' of a source that has one), from one model
    trained on the source's other splits. `probs` (N, K): use these out-of-sample probabilities
    instead of training. `model`, `folds`, `epochs`: override `crossval_defaults` for the image size
    (`folds` only applies to K-fold). `pretrained`: weights as `foveal train --pretrained` takes them; the
    images are then loaded at their input size and each fold (or the held-out model) is a linear head on the
    frozen backbone's features (`foveal.tasks.label_probe`; `model` names the architecture of weights given by
    name), run on `device`. Index i of the answer is position i in the split (for named datasets, the official
    order).
    """
    t0 = time.perf_counter()
    weights = None
    if pretrained and probs is None:
        from .label_probe import probe_size, resolve_pretrained

        weights = resolve_pretrained(pretrained, model, log)
        img_size = probe_size(weights, img_size)
    x, y, classes, name, paths, others = _as_split(data, labels, split, data_dir, img_size, weights and weights.pre)
    cv, method, record = None, "given probabilities", None
    if weights is not None:
        train = holdout_splits(name, list(others), holdout)
        cv = dataclasses.replace(CrossValConfig(), seed=seed, **({"folds": folds} if folds is not None else {}))
        x, probs, method, record = _probe(weights, x, y, name, {s: others[s] for s in train}, len(classes), cv,
                                          img_size, device, log)
    elif probs is None:
        train = holdout_splits(name, list(others), holdout)
        tx = torch.cat([others[s].images.load() for s in train]) if train else None
        ty = torch.cat([others[s].labels for s in train]) if train else y
        k = max(len(classes), int(y.max()) + 1, int(ty.max()) + 1)
        cv = _recipe(x.shape[-1], len(ty), seed, model, folds, epochs)
        held = f"one {cv.model} trained on {' + '.join(train)} ({len(ty):,} images)"
        method = (f"held out: {held}, {cv.epochs} epochs" if train
                  else f"{cv.folds}-fold cross-validation on {name}: {cv.model}, {cv.epochs} epochs per fold")
        log(f"label check of {len(y):,} images ({name}), {method}")
        probs = holdout_probs(tx, ty, x, y, k, cv, log) if train else out_of_sample_probs(x, y, k, cv, log)
        record = {"model": cv.model, "pretrained": None, "trained": "from scratch, one per fold" if not train
                  else "from scratch, one on the other splits"}
    elif len(probs) != len(y):
        raise ValueError(f"probs has {len(probs)} rows for {len(y)} images of split '{name}'")
    classes += [str(c) for c in range(len(classes), np.shape(probs)[1])]  # classes absent from the labels
    issues = confident_learning(y.numpy(), probs, rank_by=rank_by)  # type: ignore[arg-type]
    return LabelCheck(issues, classes, name, paths, x, cv, time.perf_counter() - t0, method, record)


def _probe(w: Any, x: torch.Tensor, y: torch.Tensor, name: str, train: dict[str, Any], num_classes: int,
           cv: CrossValConfig, img_size: int, device: str, log: Callable[[str], None]
           ) -> tuple[torch.Tensor, np.ndarray, str, dict[str, Any]]:
    """`find_label_issues` from pretrained weights `w` (a `label_probe.PretrainedWeights`): (the images as the
    backbone saw them, (N, K) probabilities, the method in words, check.json's record of the model). K folds of
    linear heads on the split's features, or with `train` (the other splits by name) one head on theirs."""
    from ..runtime.device import resolve_device
    from .label_probe import backbone_features, head_probs

    ty = torch.cat([s.labels for s in train.values()]) if train else y[:0]
    k = max(num_classes, int(y.max()) + 1, int(ty.max()) + 1 if len(ty) else 0)
    of = f"on the frozen features of {w.model} ({w.source})"
    if train:
        method = f"held out: one linear head trained on {' + '.join(train)} ({len(ty):,} images) {of}"
    else:
        method = f"{cv.folds}-fold cross-validation on {name}: a linear head per fold {of}"
    log(f"label check of {len(y):,} images ({name}), {method}")
    x, feats, record = backbone_features(w, x, [s.images for s in train.values()], k, img_size,
                                         resolve_device(device), log)
    n = len(ty)
    if train:  # the other splits' features come first
        jobs, names = [(torch.arange(n), torch.arange(n, n + len(y)))], ["held-out head"]
    else:
        jobs = fold_jobs(y, cv.folds, cv.seed)
        names = [f"fold {i + 1}/{cv.folds}" for i in range(cv.folds)]
    probs = head_probs(feats, torch.cat([ty, y]), jobs, k, cv, names, log)[n:]
    return x, probs, method, record


def label_check_dir(source: str | os.PathLike, split: str) -> Path:
    """Where `foveal check --labels` writes unless told: checks/<data name>-<split>/ in the working directory."""
    return Path("checks") / f"{Path(str(source)).name}-{split}"


def write_label_check(check: LabelCheck, out_dir: str | os.PathLike, top: int = 60,
                      data_report: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Write label_issues.csv (the flagged images, ranked), label_quality.csv (every image, ranked the same way,
    with `flagged`: confident learning flags few images of a clean split, and a review reads further down),
    noise_matrix.csv and label_issues.html into `out_dir`, and with
    `data_report` (`foveal.data.check.check_data`'s) check.json, that report with the summary under
    "labels"; return the summary (also printed by `foveal check --labels`)."""
    from ..data.labels import write_issue_csv, write_noise_csv
    from ..io import atomic_path, write_json, write_text
    from ..report.label_issues import issues_html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = check.rows()
    with atomic_path(out / "label_issues.csv") as tmp:
        write_issue_csv(rows, tmp)
    with atomic_path(out / "label_quality.csv") as tmp:
        write_issue_csv(check.rows(everything=True), tmp)
    with atomic_path(out / "noise_matrix.csv") as tmp:
        write_noise_csv(check.issues, check.classes, tmp)
    write_text(out / "label_issues.html", issues_html(check, top))
    summary = {"split": check.split, "probabilities": check.method, "model": check.model,
               "images": len(check.issues.given),
               "flagged": len(rows), "noise_rate": round(check.issues.noise_rate, 4),
               "seconds": round(check.seconds, 1), "out": str(out),
               "top": [(r["index"], r["given"], r["suggested"], r["self_confidence"]) for r in rows[:10]]}
    if data_report is not None:
        write_json(out / "check.json", {**data_report, "labels": summary})
    return summary
