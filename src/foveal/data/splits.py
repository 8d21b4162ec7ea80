"""Seeded stratified splits, so every run with the same seed sees the same images."""

from __future__ import annotations

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


def concat(a: Split, b: Split) -> Split:
    paths = a.paths + b.paths if a.paths is not None and b.paths is not None else None
    groups = a.groups + b.groups if a.groups is not None and b.groups is not None else None
    return Split(a.images.cat(b.images), torch.cat([a.labels, b.labels]), paths, groups)


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
    if fracs:
        parts = stratified_indices(train.labels, fracs, seed)
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
    return DataBundle(bundle.name, bundle.classes, {k: s[k] for k in ("train", "val", "test")}, bundle.problems)
