"""Seeded stratified splits, so every run with the same seed sees the same images; byte-identical copies of
an image always land in the same split (a copy in train and its twin in test would inflate the test score)."""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from typing import Optional

import torch

from ..config import DataConfig
from .bundle import DataBundle, Split


def stratified_indices(labels: torch.Tensor, fractions: list[float], seed: int) -> list[torch.Tensor]:
    """Split indices of `labels` into len(fractions)+1 parts, class by class.

    Written by hand rather than with sklearn's train_test_split, which refuses classes with
    fewer than two members; here a rare class simply lands where rounding puts it.
    """
    g = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in range(len(fractions) + 1)]
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        start = 0
        for k, frac in enumerate(fractions):
            n = int(round(frac * len(idx)))
            parts[k].append(idx[start:start + n])
            start += n
        parts[-1].append(idx[start:])
    return [torch.sort(torch.cat(p))[0] if p else torch.empty(0, dtype=torch.long) for p in parts]


def pixel_keys(images: torch.Tensor) -> list[str]:
    """One hash per (N, ...) uint8 image, equal for identical pixels (`foveal check` groups datasets' copies by it)."""
    return [hashlib.sha1(row.tobytes()).hexdigest() for row in images.flatten(1).numpy()]


def content_keys(*splits: Split) -> list[list[Optional[str]]]:
    """A key per image of each split, equal for byte-identical images across all of them: for files, the SHA-256
    of the bytes of those whose size another file shares (a file of unique size has no copy, so large folders
    are not read whole); for images in memory without files, the hash of their uint8 pixels. None: no copy
    possible, or the file cannot be read. Splits that know their files' sha256 (from shards) use it."""
    if all(s.digests is not None for s in splits):
        return [list(s.digests) for s in splits]  # type: ignore[arg-type]
    if not all(s.paths is not None for s in splits):
        return [pixel_keys(s.images.load()) if s.images.in_memory else [None] * len(s)  # hashing would decode all
                for s in splits]
    paths = [p for s in splits for p in s.paths]
    sizes: list[Optional[int]] = []
    for p in paths:
        try:
            sizes.append(os.stat(p).st_size)
        except OSError:
            sizes.append(None)
    seen: dict[int, int] = defaultdict(int)
    for size in sizes:
        if size is not None:
            seen[size] += 1
    keys: list[Optional[str]] = []
    for p, size in zip(paths, sizes):
        try:
            keys.append(hashlib.sha256(open(p, "rb").read()).hexdigest() if size is not None and seen[size] > 1
                        else None)
        except OSError:
            keys.append(None)
    out, start = [], 0
    for s in splits:
        out.append(keys[start:start + len(s)])
        start += len(s)
    return out


def keep_copies_together(parts: list[torch.Tensor], keys: list[Optional[str]]) -> list[torch.Tensor]:
    """Move every copy of an image into the part that holds its first (lowest-index) copy; parts without
    copies are returned unchanged."""
    part_of = {int(i): k for k, p in enumerate(parts) for i in p.tolist()}
    first: dict[str, int] = {}
    moved = False
    for i in sorted(part_of):
        key = keys[i]
        if key is None:
            continue
        if key in first:
            moved |= part_of[i] != part_of[first[key]]
            part_of[i] = part_of[first[key]]
        else:
            first[key] = i
    if not moved:
        return parts
    out: list[list[int]] = [[] for _ in parts]
    for i, k in sorted(part_of.items()):
        out[k].append(i)
    return [torch.tensor(o, dtype=torch.long) for o in out]


def shared_copies(given: dict[str, list[Optional[str]]], train_keys: list[Optional[str]]) -> list[str]:
    """Notes naming given splits (name -> their `content_keys`) that share byte-identical images with 'train'
    (`train_keys`, keyed in the same call); carved splits never do."""
    train = {k for k in train_keys if k is not None}
    notes = []
    for name, keys in given.items():
        n = sum(k is not None and k in train for k in keys)
        if n:
            notes.append(f"{n} images of split '{name}' have byte-identical copies in 'train': its score is "
                         "inflated by them (foveal check lists the copies)")
    return notes


def concat(a: Split, b: Split) -> Split:
    paths = a.paths + b.paths if a.paths is not None and b.paths is not None else None
    groups = a.groups + b.groups if a.groups is not None and b.groups is not None else None
    digests = a.digests + b.digests if a.digests is not None and b.digests is not None else None
    return Split(a.images.cat(b.images), torch.cat([a.labels, b.labels]), paths, groups, digests)


def make_splits(bundle: DataBundle, cfg: DataConfig, seed: int) -> DataBundle:
    """Ensure 'train', 'val' and 'test' exist: carve missing ones out of 'all' or 'train'.

    `cfg.relabel` / `cfg.exclude` apply first, while the splits are still the source's own, since
    their indices are positions in those splits (what `foveal check --labels` writes).
    """
    from .labels import apply_label_files

    bundle = apply_label_files(bundle, cfg.exclude, cfg.relabel)
    s = dict(bundle.splits)
    if "all" in s:
        pool = s.pop("all")
        s["train"] = concat(s["train"], pool) if "train" in s else pool
    train = s["train"]
    want_test = "test" not in s
    want_val = "val" not in s
    fracs = ([cfg.test_fraction] if want_test else []) + ([cfg.val_fraction] if want_val else [])
    given = [k for k in ("val", "test") if k in s]
    keys, *given_keys = content_keys(train, *(s[k] for k in given))
    notes = shared_copies(dict(zip(given, given_keys)), keys)
    if fracs:
        parts = keep_copies_together(stratified_indices(train.labels, fracs, seed), keys)
        k = 0
        if want_test:
            s["test"] = train.subset(parts[k]); k += 1
        if want_val:
            s["val"] = train.subset(parts[k]); k += 1
        s["train"] = train.subset(parts[-1])
    if cfg.limit and len(s["train"]) > cfg.limit:
        keep = stratified_indices(s["train"].labels, [cfg.limit / len(s["train"])], seed)[0]
        s["train"] = s["train"].subset(keep)
    for name in ("train", "val", "test"):
        if len(s[name]) == 0:
            raise ValueError(f"{bundle.name}: the '{name}' split is empty; add images or change data.val_fraction / "
                             "data.test_fraction")
    return DataBundle(bundle.name, bundle.classes, {k: s[k] for k in ("train", "val", "test")},
                      list(bundle.problems) + notes)
