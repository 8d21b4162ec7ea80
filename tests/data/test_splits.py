"""Seeded stratified splits: exact per-class counts, disjoint and complete parts, uniform draws within a class,
and `make_splits` carving only the splits a source lacks (after data.exclude / data.relabel)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch

from foveal.config import DataConfig
from foveal.data.bundle import DataBundle, Split
from foveal.data.splits import concat, make_splits, stratified_indices


def _labels(counts: dict[int, int], seed: int = 0) -> torch.Tensor:
    """Labels with `counts[c]` images of class c, shuffled (so a class's images are not contiguous)."""
    y = torch.cat([torch.full((n,), c) for c, n in counts.items()])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]


COUNTS = {0: 37, 1: 10, 2: 1, 3: 5, 5: 25}  # class 4 absent, class 2 a single image


@pytest.mark.parametrize("fractions", [[0.2], [0.2, 0.1], [0.25, 0.1, 0.3], [0.5]])
def test_parts_are_disjoint_complete_sorted_and_exact_per_class(fractions):
    y = _labels(COUNTS)
    parts = stratified_indices(y, fractions, seed=3)
    assert len(parts) == len(fractions) + 1
    allidx = torch.cat(parts)
    assert sorted(allidx.tolist()) == list(range(len(y)))  # every index once
    for p in parts:
        assert p.dtype == torch.int64 and torch.equal(p, torch.sort(p)[0])
    for c, n in COUNTS.items():
        taken = 0
        for k, frac in enumerate(fractions):  # Python's round: half to even, class by class
            assert int((y[parts[k]] == c).sum()) == round(frac * n), (c, k)
            taken += round(frac * n)
        assert int((y[parts[-1]] == c).sum()) == n - taken


def test_seeded_and_uniform_within_each_class():
    y = _labels({0: 20, 1: 12})
    a, b = stratified_indices(y, [0.25], 7), stratified_indices(y, [0.25], 7)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(stratified_indices(y, [0.25], 8)[0], a[0])
    # over many seeds every image of a class lands in the 25% part equally often
    hits = Counter()
    for s in range(400):
        hits.update(stratified_indices(y, [0.25], s)[0].tolist())
    freq = torch.tensor([hits[i] / 400 for i in range(len(y))])
    assert (freq - 0.25).abs().max() < 0.1, freq
    # the classes are drawn from one generator in class order: class 1's draw follows class 0's permutation
    g = torch.Generator().manual_seed(7)
    idx0 = torch.nonzero(y == 0).flatten()[torch.randperm(20, generator=g)]
    idx1 = torch.nonzero(y == 1).flatten()[torch.randperm(12, generator=g)]
    assert torch.equal(a[0], torch.sort(torch.cat([idx0[:5], idx1[:3]]))[0])


def test_no_labels_gives_empty_parts():
    parts = stratified_indices(torch.empty(0, dtype=torch.long), [0.2, 0.1], 0)
    assert len(parts) == 3 and all(p.dtype == torch.int64 and p.numel() == 0 for p in parts)


def _split(n: int, start: int = 0, paths: bool = True, groups: bool = True, counts: dict | None = None) -> Split:
    """A split whose image i holds the value start + i (mod 256) everywhere, so rows can be traced."""
    y = _labels(counts, seed=start) if counts else torch.arange(n) % 3
    n = len(y)
    ids = torch.arange(start, start + n)
    images = (ids % 256).to(torch.uint8).view(-1, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return Split(images, y, [f"img{i}" for i in ids.tolist()] if paths else None,
                 [f"g{i % 2}" for i in ids.tolist()] if groups else None)


def _ids(s: Split) -> list[int]:
    return [int(p[3:]) for p in s.paths]


def _cfg(**kw) -> DataConfig:
    return dataclasses.replace(DataConfig(), **kw)


def _consistent(s: Split) -> None:
    """Images, labels, paths and groups of a split still belong to the same rows."""
    ids = torch.tensor(_ids(s))
    assert torch.equal(s.images.load()[:, 0, 0, 0].long(), ids % 256)
    assert s.groups == [f"g{i % 2}" for i in ids.tolist()]


def test_all_pool_is_carved_into_test_val_train():
    src = _split(0, counts={0: 50, 1: 30, 2: 20})
    b = DataBundle("toy", ["a", "b", "c"], {"all": src}, ["a note"])
    out = make_splits(b, _cfg(val_fraction=0.1, test_fraction=0.2), seed=5)
    assert list(out.splits) == ["train", "val", "test"] and out.name == "toy" and out.classes == ["a", "b", "c"]
    assert out.problems == ["a note"]
    parts = stratified_indices(src.labels, [0.2, 0.1], 5)  # test first, then val
    for name, p in zip(("test", "val", "train"), parts):
        assert _ids(out.splits[name]) == p.tolist(), name
        assert torch.equal(out.splits[name].labels, src.labels[p])
        _consistent(out.splits[name])
    assert [len(out.splits[k]) for k in ("train", "val", "test")] == [70, 10, 20]


def test_train_and_all_are_pooled_and_only_missing_splits_are_carved():
    train, pool, test = _split(40), _split(20, start=100), _split(9, start=200)
    b = DataBundle("toy", ["a", "b", "c"], {"train": train, "all": pool, "test": test})
    out = make_splits(b, _cfg(val_fraction=0.25, test_fraction=0.5), seed=0)
    assert out.splits["test"] is test  # the source's own test split is kept as it is
    joined = concat(train, pool)
    parts = stratified_indices(joined.labels, [0.25], 0)  # only val is carved, at val_fraction
    assert _ids(out.splits["val"]) == [(list(range(40)) + list(range(100, 120)))[i] for i in parts[0].tolist()]
    assert len(out.splits["val"]) + len(out.splits["train"]) == 60
    _consistent(out.splits["val"])
    _consistent(out.splits["train"])
    # with every split given, nothing moves
    b = DataBundle("toy", ["a", "b", "c"], {"train": train, "val": pool, "test": test})
    out = make_splits(b, _cfg(), seed=0)
    assert out.splits["train"] is train and out.splits["val"] is pool and out.splits["test"] is test


def test_concat_keeps_paths_and_groups_only_when_both_have_them():
    a, b = _split(4), _split(3, start=10)
    c = concat(a, b)
    assert _ids(c) == [0, 1, 2, 3, 10, 11, 12] and c.groups == a.groups + b.groups
    assert torch.equal(c.labels, torch.cat([a.labels, b.labels]))
    assert concat(a, _split(3, paths=False)).paths is None and concat(_split(3, paths=False), a).paths is None
    assert concat(a, _split(3, groups=False)).groups is None and concat(_split(3, groups=False), a).groups is None
    assert concat(a, _split(3, paths=False)).groups is not None


def test_limit_keeps_a_stratified_sample_of_train():
    src = _split(0, counts={0: 60, 1: 30, 2: 30})
    b = DataBundle("toy", ["a", "b", "c"], {"all": src})
    cfg = _cfg(val_fraction=0.1, test_fraction=0.2, limit=42)
    full = make_splits(b, _cfg(val_fraction=0.1, test_fraction=0.2), seed=1)
    out = make_splits(b, cfg, seed=1)
    train = full.splits["train"]  # 84 images: 42, 21, 21
    keep = stratified_indices(train.labels, [42 / 84], 1)[0]
    assert _ids(out.splits["train"]) == [_ids(train)[i] for i in keep.tolist()]
    assert Counter(out.splits["train"].labels.tolist()) == {0: 21, 1: 10, 2: 10}  # round(10.5) == 10
    assert _ids(out.splits["val"]) == _ids(full.splits["val"])
    _consistent(out.splits["train"])
    for limit in (84, 1000):  # a limit at or above the size keeps every image, in order
        same = make_splits(b, _cfg(val_fraction=0.1, test_fraction=0.2, limit=limit), seed=1)
        assert _ids(same.splits["train"]) == _ids(train)


@pytest.mark.parametrize("given,missing", [({"train": 3, "test": 3}, "val"), ({"train": 0, "val": 3, "test": 3}, "train")])
def test_an_empty_split_is_refused_with_its_name(given, missing):
    b = DataBundle("toy", ["a"], {k: _split(n, counts={0: n} if n else None) if n else
                                  Split(torch.zeros(0, 1, 2, 2, dtype=torch.uint8), torch.zeros(0, dtype=torch.long))
                                  for k, n in given.items()})
    with pytest.raises(ValueError, match=f"toy: the '{missing}' split is empty; add images or change "
                                         r"data\.val_fraction / data\.test_fraction$"):
        make_splits(b, _cfg(val_fraction=0.01), seed=0)


def test_exclude_applies_before_carving(tmp_path):
    src = _split(0, counts={0: 30, 1: 30})
    f = tmp_path / "exclude.txt"
    f.write_text("all:3\nimg7  # by path\n")
    b = DataBundle("toy", ["a", "b"], {"all": src})
    out = make_splits(b, _cfg(exclude=str(f)), seed=0)
    ids = sorted(sum((_ids(s) for s in out.splits.values()), []))
    assert ids == [i for i in range(60) if i not in (3, 7)]
    assert any("data.exclude: 2 images" in p for p in out.problems)
