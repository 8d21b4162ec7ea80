"""`foveal check DATA`: what a data set holds before training on it.

Class counts and imbalance, unreadable files, duplicates by content hash (and whether they cross
classes or splits, which leaks test images into training), the image-size histogram, and the
normalization and input size to use. Folders and CSV manifests are checked file by file (every
file is fully decoded, so truncated files are found); named datasets are checked as loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from PIL import Image

from ..config import DataConfig
from .decode import DecodeError, _to_mode, open_image
from .bundle import DATASETS, DataBundle
from .preprocess import stats, stats_from_sums
from .sources import Item, bundle_from_items, load_source, scan_files

STANDARD_SIZES = (28, 32, 48, 64, 96, 128, 160, 192, 224, 256, 299, 384, 512)
SIZE_BINS = ((0, "<32"), (32, "32-63"), (64, "64-127"), (128, "128-255"), (256, "256-511"), (512, "512-1023"),
             (1024, ">=1024"))
STATS_SIDE = 64  # px: images are reduced to this before summing pixels for mean/std (cheap, and accurate enough)
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def suggest_size(short_sides: Iterable[int]) -> int:
    """The largest standard input size not above the median shorter side (upscaling adds nothing)."""
    sides = list(short_sides)
    if not sides:
        return 32
    median = float(np.median(sides))
    fits = [s for s in STANDARD_SIZES if s <= median]
    return fits[-1] if fits else max(8, int(median))


def _size_bin(side: int) -> str:
    return [label for lo, label in SIZE_BINS if side >= lo][-1]


def _declared_size(path: Path) -> tuple[int, int]:
    """(width, height) as viewed: the header's size, swapped when EXIF says the image is turned 90 degrees."""
    with Image.open(path) as img:
        w, h = img.size
        return (h, w) if img.getexif().get(0x0112) in (5, 6, 7, 8) else (w, h)


def check_file(item: Item, max_pixels: int) -> dict[str, Any]:
    """Hash, fully decode (finds truncation) and sum the pixels of one file; errors are recorded, not raised."""
    path, cls, split = item
    rec: dict[str, Any] = {"path": str(path), "class": cls, "split": split}
    try:
        rec["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        img = open_image(path, max_pixels, draft_size=STATS_SIDE)  # JPEG: decoded at 1/2..1/8 scale
        rec["size"] = _declared_size(path)
        gray = img.mode in GRAY_MODES
        small = _to_mode(img, 1 if gray else 3)
        small.thumbnail((STATS_SIDE, STATS_SIDE))
    except (DecodeError, OSError) as e:
        rec["error"] = str(e) if isinstance(e, DecodeError) else f"'{path}': {e}"
        return rec
    a = np.asarray(small, dtype=np.float64) / 255.0
    a = a[:, :, None] if a.ndim == 2 else a  # (h, w, C)
    rec.update(gray=gray, sum=a.sum((0, 1)), sumsq=(a * a).sum((0, 1)), n=a.shape[0] * a.shape[1])
    return rec


def _mean_std(recs: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Per-channel mean/std over all pixels (`stats_from_sums`, the formula training uses), rounded for the
    report; colour when any image is colour (gray counts as R=G=B)."""
    chans = 1 if all(r["gray"] for r in recs) else 3
    s, s2, n = np.zeros(chans), np.zeros(chans), 0
    for r in recs:
        s += r["sum"] if len(r["sum"]) == chans else np.repeat(r["sum"], chans)
        s2 += r["sumsq"] if len(r["sumsq"]) == chans else np.repeat(r["sumsq"], chans)
        n += r["n"]
    mean, std = stats_from_sums(torch.from_numpy(s), torch.from_numpy(s2), n)
    return [round(m, 4) for m in mean], [round(v, 4) for v in std]


def _counts(labels: list[str], classes: list[str]) -> dict[str, Any]:
    counts = Counter(labels)
    per_class = {c: counts.get(c, 0) for c in classes}
    nonzero = [v for v in per_class.values() if v > 0]
    ratio = max(nonzero) / min(nonzero) if nonzero else None
    return {"class_counts": per_class, "imbalance_ratio": round(ratio, 3) if ratio else None,
            "empty_classes": [c for c, v in per_class.items() if v == 0]}


def _duplicates(keys: list[tuple[str, str, str, str]]) -> dict[str, Any]:
    """keys: (hash, name, class, split). Groups of identical content, flagging label and split conflicts."""
    groups: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for h, name, cls, split in keys:
        groups[h].append((name, cls, split))
    dup = [g for g in groups.values() if len(g) > 1]
    return {"duplicate_groups": len(dup), "duplicate_files": sum(len(g) - 1 for g in dup),
            "conflicting_labels": sum(len({c for _, c, _ in g}) > 1 for g in dup),
            "cross_split": sum(len({s for _, _, s in g}) > 1 for g in dup),
            "groups": [[n for n, _, _ in g] for g in dup[:50]]}


def check_files(name: str, items: list[Item], classes: list[str], problems: list[str], cfg: DataConfig) -> dict:
    """The report for a folder or CSV manifest, decoding every file in threads."""
    with ThreadPoolExecutor(max(1, cfg.workers)) as pool:
        recs = list(pool.map(lambda it: check_file(it, cfg.max_pixels), items))
    ok = [r for r in recs if "error" not in r]
    sides = [min(r["size"]) for r in ok]
    mean, std = _mean_std(ok) if ok else (None, None)
    report = {"source": name, "kind": "files", "images": len(ok), "files": len(items),
              "splits": dict(Counter(r["split"] for r in ok)), **_counts([r["class"] for r in ok], classes),
              "unreadable": [r["error"] for r in recs if "error" in r], "problems": problems,
              "duplicates": _duplicates([(r["sha256"], r["path"], r["class"], r["split"]) for r in ok]),
              "size_histogram": {b: n for _, b in SIZE_BINS if (n := sum(_size_bin(s) == b for s in sides))},
              "common_sizes": {f"{w}x{h}": n for (w, h), n in Counter(r["size"] for r in ok).most_common(8)},
              "channels": 1 if ok and all(r["gray"] for r in ok) else 3,
              "suggested": {"mean": mean, "std": std, "img_size": suggest_size(sides)}}
    return report


def check_bundle(bundle: DataBundle) -> dict[str, Any]:
    """The report for a loaded dataset (MNIST, CIFAR...): duplicates by hash of each image's pixels."""
    from .splits import pixel_keys

    labels, keys = [], []
    for split, s in bundle.splits.items():
        for i, (key, y) in enumerate(zip(pixel_keys(s.images.load()), s.labels.tolist())):
            keys.append((key, f"{split}[{i}]", bundle.classes[y], split))
            labels.append(bundle.classes[y])
    train = bundle.splits.get("train") or next(iter(bundle.splits.values()))
    mean, std = stats(train.images)
    side = train.images.img_size
    return {"source": bundle.name, "kind": "dataset", "images": len(labels), "files": None,
            "splits": {k: len(s) for k, s in bundle.splits.items()}, **_counts(labels, bundle.classes),
            "unreadable": [], "problems": bundle.problems, "duplicates": _duplicates(keys),
            "size_histogram": {_size_bin(side): len(labels)}, "common_sizes": {f"{side}x{side}": len(labels)},
            "channels": bundle.in_chans,
            "suggested": {"mean": [round(m, 4) for m in mean], "std": [round(v, 4) for v in std],
                          "img_size": suggest_size([side])}}


def check_data(cfg: DataConfig) -> dict[str, Any]:
    """Inspect `cfg.source` (a folder, CSV manifest, or named dataset); returns a JSON-able report."""
    scanned = scan_files(cfg.source)
    if scanned is not None:
        items, classes, problems = scanned
        return check_files(Path(cfg.source).name, items, classes, problems, cfg)
    return check_bundle(load_source(cfg, cfg.img_size or native_size(cfg.source) or 32))


def native_size(source: str) -> int | None:
    """A named dataset's own image size (28 for MNIST), None for anything else."""
    return DATASETS.entry(source.lower()).meta.get("native_size") if source.lower() in DATASETS else None


def format_check(r: dict[str, Any]) -> str:
    """The report as text for the terminal."""
    lines = [f"data '{r['source']}': {r['images']:,} images" + (f" of {r['files']:,} files" if r["files"] else "")
             + f", {len(r['class_counts'])} classes, splits: "
             + ", ".join(f"{k} {v:,}" for k, v in r["splits"].items())]
    width = max(len(c) for c in r["class_counts"]) if r["class_counts"] else 5
    top = max(r["class_counts"].values(), default=1) or 1
    for c, n in r["class_counts"].items():
        lines.append(f"  {c:<{width}} {n:>8,}  {'#' * round(30 * n / top)}")
    ratio = r["imbalance_ratio"]
    lines.append(f"imbalance ratio (largest/smallest class): {ratio if ratio else 'n/a'}"
                 + ("  -> consider --data.balance sampler or --optim.loss focal" if ratio and ratio >= 3 else ""))
    if r["empty_classes"]:
        lines.append(f"empty classes: {', '.join(r['empty_classes'])}")
    lines.append(f"unreadable files: {len(r['unreadable'])}")
    lines += [f"  {e}" for e in r["unreadable"][:20]]
    lines += [f"note: {p}" for p in r["problems"][:20]]
    d = r["duplicates"]
    lines.append(f"duplicates by content: {d['duplicate_files']} extra copies in {d['duplicate_groups']} groups "
                 f"({d['conflicting_labels']} with conflicting labels, {d['cross_split']} across splits)")
    lines += [f"  {' = '.join(g[:4])}" for g in d["groups"][:10]]
    lines.append("image sizes (shorter side): " + ", ".join(f"{b}: {n:,}" for b, n in r["size_histogram"].items()))
    lines.append("most common sizes: " + ", ".join(f"{s} ({n:,})" for s, n in r["common_sizes"].items()))
    s = r["suggested"]
    if s["mean"] is not None:
        fmt = lambda v: ",".join(f"{x:.4f}" for x in v)  # noqa: E731
        lines.append(f"suggested: --img-size {s['img_size']} --data.mean {fmt(s['mean'])} --data.std {fmt(s['std'])}")
    return "\n".join(lines)


def preview_batch(cfg: DataConfig, n: int = 32, seed: int = 0) -> torch.Tensor:
    """(n, C, H, W) float in [0, 1]: random training images after the configured augmentations."""
    from .augment import Compose
    from .splits import make_splits

    img_size = cfg.img_size or native_size(cfg.source) or 64
    scanned = scan_files(cfg.source)
    g = torch.Generator().manual_seed(seed)
    if scanned is not None:  # decode only the sampled files, not the whole folder
        items, classes, problems = scanned
        pick = torch.randperm(len(items), generator=g)[:n].tolist()
        bundle = bundle_from_items("preview", [items[i] for i in pick], classes,
                                   dataclasses.replace(cfg, in_memory=True), img_size, problems)
        split = next(iter(bundle.splits.values()))
    else:
        bundle = make_splits(load_source(cfg, img_size), cfg, seed)
        split = bundle.splits["train"]
    idx = torch.randperm(len(split), generator=g)[:n]
    x = split.images.load(idx).float() / 255.0
    x, _ = Compose(cfg.augment, cfg, len(bundle.classes))(x, split.labels[idx], g)
    return x.clamp(0, 1)


def write_preview(cfg: DataConfig, path: str | Path, n: int = 32) -> Path:
    """Write a PNG grid of `n` augmented training samples, to see what the model will be shown."""
    from torchvision.utils import make_grid

    from ..io import atomic_path

    grid = make_grid(preview_batch(cfg, n), nrow=8, padding=2, pad_value=1.0)  # (C, H, W)
    a = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    img = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
