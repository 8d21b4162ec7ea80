"""Data sources: named datasets, image folders and CSV manifests, loaded as uint8 tensors.

Every source returns a `DataBundle`: class names and splits ('train', 'val', 'test'), each
an (N, C, H, W) uint8 tensor with int64 labels. Problems (unreadable files, empty classes)
are collected by name in `bundle.problems` and never stop a run.
"""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..config import DataConfig
from .bundle import DATASETS, DataBundle, Split
from .decode import DecodeError, is_image_name, load_image, probe_channels
from .images import FileImages, resize_u8
from . import datasets  # noqa: F401  (registers mnist, fashion-mnist, kmnist, cifar10/100, medmnist)

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}


@DATASETS.register("digits", native_size=8)
def load_digits(cfg: DataConfig, img_size: int) -> DataBundle:
    """scikit-learn's bundled 1,797 8x8 handwritten digits (values 0-16), upsampled to `img_size`."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.from_numpy((d.images * (255.0 / 16.0)).round().astype(np.uint8))[:, None]  # (N, 1, 8, 8)
    x = resize_u8(x, img_size)
    if cfg.in_chans == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(d.target.astype(np.int64))
    return DataBundle("digits", [str(c) for c in range(10)], {"all": Split(x, y)})


def _decode_all(paths: list[Path], cfg: DataConfig, img_size: int, in_chans: int,
                problems: list[str]) -> tuple[list[int], list[torch.Tensor]]:
    """Decode `paths` in threads (Pillow releases the GIL); return indices kept and tensors."""

    def one(p: Path):
        try:
            return load_image(p, img_size, in_chans, cfg.resize, cfg.max_pixels, cfg.crop_pct or 1.0)
        except DecodeError as e:
            return e

    with ThreadPoolExecutor(max(1, cfg.workers)) as pool:
        results = list(pool.map(one, paths))
    keep, tensors = [], []
    for i, r in enumerate(results):
        if isinstance(r, DecodeError):
            problems.append(f"skipped unreadable image {r}")
        else:
            keep.append(i)
            tensors.append(r)
    return keep, tensors


def _infer_chans(paths: list[Path], cfg: DataConfig) -> int:
    """The configured channel count, else 1 when every file (header) is grayscale, else 3."""
    if cfg.in_chans:
        return cfg.in_chans
    chans = {probe_channels(p) for p in paths[:: max(1, len(paths) // 200)]} - {None}  # sample <= ~200 headers
    return 1 if chans == {1} else 3


def bundle_from_items(name: str, items: list[tuple[Path, str, str]], classes: list[str],
                      cfg: DataConfig, img_size: int, problems: list[str],
                      groups: Optional[list[str]] = None) -> DataBundle:
    """items: (path, class name, split name) -> DataBundle, decoding every file into memory, or,
    when `cfg.in_memory` is False or auto finds the decoded data too big, with lazy file-backed
    images that `foveal.data.stream` decodes on its decoder threads each epoch.

    `groups`, parallel to `items` (a CSV manifest's group column), lands on each `Split.groups`."""
    in_chans = _infer_chans([p for p, _, _ in items], cfg)
    from .stream import fits_in_memory

    if not fits_in_memory(len(items), in_chans, img_size, cfg.in_memory):
        return _lazy_bundle(name, items, classes, cfg, img_size, in_chans, problems, groups)
    keep, tensors = _decode_all([p for p, _, _ in items], cfg, img_size, in_chans, problems)
    index = {c: i for i, c in enumerate(classes)}
    by_split: dict[str, list[int]] = {}
    for k, i in enumerate(keep):
        by_split.setdefault(items[i][2], []).append(k)
    if not keep:
        raise ValueError(f"{name}: no readable images ({len(problems)} problems:\n  " + "\n  ".join(problems[:20]) + ")")
    images = torch.stack(tensors)
    labels = torch.tensor([index[items[i][1]] for i in keep], dtype=torch.int64)
    paths = [str(items[i][0]) for i in keep]
    splits = {}
    for split, ks in by_split.items():
        idx = torch.tensor(ks)
        kept_groups = [groups[keep[k]] for k in ks] if groups is not None else None
        splits[split] = Split(images[idx], labels[idx], [paths[k] for k in ks], kept_groups)
    return DataBundle(name, classes, splits, problems)


def _lazy_bundle(name: str, items: list[tuple[Path, str, str]], classes: list[str], cfg: DataConfig,
                 img_size: int, in_chans: int, problems: list[str],
                 groups: Optional[list[str]] = None) -> DataBundle:
    """Splits whose images stay in their files, for `foveal.data.stream.StreamLoader`."""
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for split in dict.fromkeys(s for _, _, s in items):  # first-seen order
        rows = [k for k, (_, _, s) in enumerate(items) if s == split]
        chosen = [(str(items[k][0]), index[items[k][1]]) for k in rows]
        images = FileImages(tuple(p for p, _ in chosen), in_chans, img_size, cfg.resize, cfg.max_pixels,
                            max(1, cfg.workers), cfg.crop_pct or 1.0)
        splits[split] = Split(images, torch.tensor([y for _, y in chosen], dtype=torch.int64), [p for p, _ in chosen],
                              [groups[k] for k in rows] if groups is not None else None)
    return DataBundle(name, classes, splits, problems)


def _scan_class_dirs(root: Path, split: str, problems: list[str]) -> list[tuple[Path, str, str]]:
    items = []
    for cdir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in cdir.rglob("*") if f.is_file() and not f.name.startswith("."))
        images = [f for f in files if is_image_name(f)]
        for f in files:
            if not is_image_name(f):
                problems.append(f"skipped non-image file '{f}'")
        if not images:
            problems.append(f"class folder '{cdir}' has no image files; class '{cdir.name}' dropped")
        items += [(f, cdir.name, split) for f in images]
    for f in sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")):
        problems.append(f"skipped file outside class folders '{f}'")
    return items


Item = tuple[Path, str, str]  # (file, class name, split name)


def scan_folder(root: Path) -> tuple[list[Item], list[str], list[str]]:
    """root/<class>/* or root/{train,val|valid|validation,test}/<class>/* -> (items, classes, problems).

    Only lists files; nothing is decoded, so checking and streaming can reuse it on any size of folder.
    """
    problems: list[str] = []
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not subdirs:
        raise ValueError(f"image folder '{root}' has no class subfolders (expected {root}/<class>/<image>)")
    split_dirs = {SPLIT_ALIASES.get(p.name.lower()): p for p in subdirs}
    if "train" in split_dirs and None not in split_dirs:  # every subfolder is a split
        items = [it for split, d in split_dirs.items() for it in _scan_class_dirs(d, split, problems)]
    else:
        items = _scan_class_dirs(root, "all", problems)
    classes = sorted({c for _, c, _ in items})
    if not classes:
        raise ValueError(f"image folder '{root}' holds no image files ({'; '.join(problems[:5])})")
    return items, classes, problems


def load_folder(root: Path, cfg: DataConfig, img_size: int) -> DataBundle:
    """An image folder (see `scan_folder`), decoded into memory or left to stream (see `bundle_from_items`)."""
    items, classes, problems = scan_folder(root)
    return bundle_from_items(root.name, items, classes, cfg, img_size, problems)


def scan_csv(path: Path) -> tuple[list[Item], list[str], list[str]]:
    """A CSV manifest: `path,label[,split]` rows (header optional); paths relative to the CSV."""
    items, classes, problems, _ = scan_csv_groups(path)
    return items, classes, problems


def scan_csv_groups(path: Path) -> tuple[list[Item], list[str], list[str], Optional[list[str]]]:
    """`scan_csv` plus the manifest's group per item (None without a `group` column).

    Columns are found by a header naming them (`path,label,split,group`, any order); without a
    header they are `path,label[,split]`. A group is any string; `site=A|sex=F` holds two
    attributes (see `foveal.metrics.groups`). Kept apart from `Item`, whose 3-tuples many callers unpack.
    """
    problems: list[str] = []
    items, groups = [], []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    col = {"path": 0, "label": 1, "split": 2}
    head = [c.strip().lower() for c in rows[0]] if rows else []
    if {"path", "label"} <= set(head):
        col = {k: head.index(k) for k in ("path", "label", "split", "group") if k in head}
        rows = rows[1:]
    for n, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) <= max(col["path"], col["label"]):
            problems.append(f"'{path}' row {n}: expected path,label, got {row!r}")
            continue
        cell = {k: row[i].strip() if i < len(row) else "" for k, i in col.items()}
        p = Path(cell["path"])
        p = p if p.is_absolute() else path.parent / p
        split = SPLIT_ALIASES.get(cell["split"].lower(), "all") if cell.get("split") else "all"
        if not p.is_file():
            problems.append(f"'{path}' row {n}: file '{p}' does not exist")
            continue
        items.append((p, cell["label"], split))
        groups.append(cell.get("group") or "")
    if not items:
        raise ValueError(f"CSV manifest '{path}' lists no existing image files ({'; '.join(problems[:5])})")
    return items, sorted({c for _, c, _ in items}), problems, groups if "group" in col else None


def load_csv(path: Path, cfg: DataConfig, img_size: int) -> DataBundle:
    items, classes, problems, groups = scan_csv_groups(path)
    return bundle_from_items(path.stem, items, classes, cfg, img_size, problems, groups)


def scan_files(source: str | Path) -> Optional[tuple[list[Item], list[str], list[str]]]:
    """(items, classes, problems) when `source` is a folder or CSV manifest; None for named datasets."""
    from .shards import is_shard_location

    if str(source).lower() in DATASETS or is_shard_location(str(source)):
        return None  # loaded whole by load_source
    path = Path(source).expanduser()
    if path.is_dir():
        return scan_folder(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return scan_csv(path)
    return None


def load_source(cfg: DataConfig, img_size: int) -> DataBundle:
    """Load `cfg.source` (a dataset name, a folder, or a CSV file) without splitting it."""
    src = cfg.source
    if src.lower() in DATASETS:
        return DATASETS.get(src.lower())(cfg, img_size)
    from .shards import is_shard_location, load_shards

    if is_shard_location(src):
        return load_shards(src, cfg, img_size)
    path = Path(src).expanduser()
    if path.is_dir():
        return load_folder(path, cfg, img_size)
    if path.is_file() and path.suffix.lower() == ".csv":
        return load_csv(path, cfg, img_size)
    if path.is_file() and path.suffix.lower() == ".npz":
        from .datasets import load_npz

        return load_npz(path, img_size)
    if path.exists():
        raise ValueError(f"data source '{src}' is a file but not a .csv manifest or .npz (MedMNIST) archive")
    raise ValueError(f"data source '{src}' is neither a known dataset ({', '.join(DATASETS.names())}) "
                     "nor an existing folder, CSV file or shard location (a folder with manifest.json, s3://...)")

