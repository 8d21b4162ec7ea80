"""N processes see what one does: global batches sliced per rank, augmentation drawn for the global
batch, no rank dropping a remainder, every rank taking the same number of full training steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from foveal.config import DataConfig
from foveal.data import Split
from foveal.data.augment import Compose
from foveal.data.loader import BatchPlan, DeviceLoader
from foveal.data.sources import load_folder
from foveal.data.stream import StreamLoader

CPU = torch.device("cpu")
AUGMENTS = ["flip", "crop", "rotate", "noise", "rrc", "jitter", "erase", "randaugment", "trivialaugment"]


def _split(n: int = 37, side: int = 12) -> Split:
    g = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g),
                 torch.arange(n) % 4)


@pytest.mark.parametrize("aug", AUGMENTS)
def test_two_ranks_together_give_the_one_process_batch(aug):
    """Every augmentation: rank r's batch is rows r, r+2, ... of the one-process batch, pixel for pixel."""
    split, cfg = _split(), DataConfig(augment=[aug])
    kw = dict(device=CPU, mean=[0.5] * 3, std=[0.25] * 3, augment=Compose([aug], cfg, 4))
    plan = dict(shuffle=True, drop_last=True, seed=7)
    one = list(DeviceLoader(split, BatchPlan(8, **plan), **kw))
    ranks = [list(DeviceLoader(split, BatchPlan(4, rank=r, world=2, **plan), **kw)) for r in (0, 1)]
    assert len(one) == len(ranks[0]) == len(ranks[1]) == 37 // 8
    for (x, y), (x0, y0), (x1, y1) in zip(one, *ranks):
        torch.testing.assert_close(x[0::2], x0, rtol=0, atol=1e-5)
        torch.testing.assert_close(x[1::2], x1, rtol=0, atol=1e-5)
        assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)


def test_evaluation_shards_cover_every_sample_once():
    """Without drop_last, the ranks together see all N samples (N odd: no rank drops the remainder)."""
    split = _split(n=37)
    kw = dict(device=CPU, mean=[0.5] * 3, std=[0.25] * 3)
    seen = []
    for r in range(3):
        loader = DeviceLoader(split, BatchPlan(5, rank=r, world=3), **kw)
        seen += [y for _, ys in loader for y in ys.tolist()]
    assert sorted(seen) == sorted(split.labels.tolist()) and len(seen) == 37


def _folder(root, n=24, broken=()):
    for i in range(n):
        d = root / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((10, 10, 3), 20 * i % 255, np.uint8)).save(d / f"{i:02d}.png")
    for name in broken:
        (root / "c0" / name).write_bytes(b"not an image")
    return root


def test_a_rank_whose_batch_is_all_unreadable_still_takes_a_full_step(tmp_path):
    """Training loaders keep every batch full (unreadable slots refilled), so ranks never take
    different numbers of steps (which would hang DDP until dist_timeout)."""
    root = _folder(tmp_path / "f", n=8, broken=[f"zz{i}.png" for i in range(8)])
    split = load_folder(root, DataConfig(in_memory=False), 10).splits["all"]
    steps = []
    for r in (0, 1):
        plan = BatchPlan(4, shuffle=True, drop_last=True, seed=1, rank=r, world=2)
        loader = StreamLoader(split, plan, CPU, [0.5] * 3, [0.25] * 3, workers=0)
        sizes = [len(y) for _, y in loader]
        steps.append(sizes)
        assert loader.problems, "the unreadable files are named"
    assert steps[0] == steps[1] == [4] * (16 // 8)


def test_evaluation_loader_drops_unreadable_files(tmp_path):
    root = _folder(tmp_path / "f", n=6, broken=["bad.png"])
    split = load_folder(root, DataConfig(in_memory=False), 10).splits["all"]
    loader = StreamLoader(split, BatchPlan(4), CPU, [0.5] * 3, [0.25] * 3, workers=0)
    assert sum(len(y) for _, y in loader) == 6 and len(loader.problems) == 1


def test_robustness_subsets_draw_every_class():
    """`--limit` and the attacked images were the first N of splits sorted by class: now a seeded draw."""
    from foveal.robustness.measure import spread_subset

    labels = torch.arange(10).repeat_interleave(100)  # sorted by class, as folders and MNIST's test set
    pick = spread_subset(labels, 50, seed=0)
    assert len(pick) == 50 and len(set(pick.tolist())) == 50
    assert len(labels[pick].unique()) == 10  # the first 50 would hold class 0 alone
    assert torch.equal(pick, spread_subset(labels, 50, seed=0))  # seeded
    assert torch.equal(spread_subset(labels, 5000), torch.arange(1000))
