"""The streaming path: lazy file-backed splits, DataLoader workers, draft decoding, same batches as in memory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from foveal.config import DataConfig, RunConfig, apply_overrides
from foveal.data import make_splits, stats
from foveal.data.augment import Compose
from foveal.data.decode import open_image
from foveal.data.loader import BatchPlan, DeviceLoader
from foveal.data.sources import load_folder
from foveal.data.images import TensorImages
from foveal.data.stream import FileImages, StreamLoader, fits_in_memory, make_loader

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (50, 60, 210)}


def write_jpeg_folder(root: Path, per_class: int = 12, size: tuple[int, int] = (160, 120)) -> Path:
    """root/<colour>/<i>.jpg: noisy images whose colour is the class, with a bright square at a random place."""
    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = np.clip(np.array(rgb) + rng.normal(0, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
            y0, x0 = rng.integers(0, size[1] - 30), rng.integers(0, size[0] - 30)
            a[y0:y0 + 30, x0:x0 + 30] = 255
            Image.fromarray(a).save(root / name / f"{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory) -> Path:
    return write_jpeg_folder(tmp_path_factory.mktemp("jpegs") / "colours")


def test_auto_choice_follows_memory_budget(monkeypatch, jpeg_folder):
    assert fits_in_memory(1000, 3, 32, None) and not fits_in_memory(1000, 3, 32, False)
    import foveal.data.images as stream

    monkeypatch.setattr(stream, "MEMORY_BUDGET", 36 * 3 * 32 * 32 - 1)  # one byte short of the decoded folder
    lazy = load_folder(jpeg_folder, DataConfig(), 32)
    assert isinstance(lazy.splits["all"].images, FileImages)
    monkeypatch.setattr(stream, "MEMORY_BUDGET", 36 * 3 * 32 * 32)
    assert isinstance(load_folder(jpeg_folder, DataConfig(), 32).splits["all"].images, TensorImages)


def test_stream_batches_equal_in_memory_batches(jpeg_folder):
    """Same seed and epoch: identical order, pixels and augmentation draws on both paths."""
    cfg = DataConfig(augment=["flip", "crop"])
    mem = make_splits(load_folder(jpeg_folder, dataclasses.replace(cfg, in_memory=True), 32), cfg, 0)
    lazy = make_splits(load_folder(jpeg_folder, dataclasses.replace(cfg, in_memory=False), 32), cfg, 0)
    tr_m, tr_l = mem.splits["train"], lazy.splits["train"]
    assert isinstance(tr_l.images, FileImages) and tr_m.paths == tr_l.paths
    assert torch.equal(tr_m.images.load(), tr_l.images.load())  # same decoder, same pixels
    mean, std = stats(tr_m.images)
    aug = Compose(cfg.augment, cfg, 3)
    kw = dict(plan=BatchPlan(5, shuffle=True, drop_last=True, seed=3), device=torch.device("cpu"), mean=mean, std=std,
              augment=aug)
    dev = DeviceLoader(tr_m, **kw)
    streamed = StreamLoader(tr_l, workers=1, **kw)
    assert len(dev) == len(streamed) == len(tr_m) // 5
    for epoch in (0, 1):
        dev.set_epoch(epoch)
        streamed.set_epoch(epoch)
        for (xa, ya), (xb, yb) in zip(dev, streamed):
            assert torch.equal(ya, yb) and torch.allclose(xa, xb)


def test_stream_decodes_in_threads_and_a_loop_left_early_leaves_nothing_behind(jpeg_folder):
    """On the CPU, decoder threads, not worker processes (forked workers share the trainer's heap copy-on-write:
    every page it writes afterwards faults); a loop left after one batch drops its prefetched batches, and the
    next pass over the epoch gives exactly the batches of an uninterrupted one, as do CUDA's worker processes."""
    import multiprocessing
    import threading

    cfg = DataConfig(augment=["flip"], in_memory=False)
    tr = make_splits(load_folder(jpeg_folder, cfg, 32), cfg, 0).splits["train"]
    loader = StreamLoader(tr, BatchPlan(3, shuffle=True, seed=1), torch.device("cpu"), [0.5] * 3, [0.25] * 3,
                          augment=Compose(cfg.augment, cfg, 3), workers=2)
    full = list(loader)
    assert len(full) == len(loader) > 2
    assert any(t.name.startswith("foveal-decode") for t in threading.enumerate())
    assert not multiprocessing.active_children()
    it = iter(loader)
    next(it)
    it.close()  # as a `break` does
    again = list(loader)
    assert len(again) == len(full)
    for (xa, ya), (xb, yb) in zip(full, again):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    # CUDA's way (persistent worker processes), forced here on the CPU: the very same batches
    procs = StreamLoader(tr, BatchPlan(3, shuffle=True, seed=1), torch.device("cpu"), [0.5] * 3, [0.25] * 3,
                         augment=Compose(cfg.augment, cfg, 3), workers=2, processes=True)
    for _ in range(2):  # the second pass reuses the persistent workers
        by_procs = list(procs)
        assert len(by_procs) == len(full) and multiprocessing.active_children()
        for (xa, ya), (xb, yb) in zip(full, by_procs):
            assert torch.equal(ya, yb) and torch.equal(xa, xb)


def test_unreadable_files_are_skipped_and_named(tmp_path, capsys):
    root = write_jpeg_folder(tmp_path / "c", per_class=4)
    (root / "red" / "broken.jpg").write_bytes((root / "red" / "0.jpg").read_bytes()[:300])
    (root / "blue" / "empty.jpg").write_bytes(b"")
    bundle = load_folder(root, DataConfig(in_memory=False), 32)
    split = bundle.splits["all"]
    loader = make_loader(split, 4, torch.device("cpu"), [0.5] * 3, [0.25] * 3, workers=2)
    seen = sum(len(y) for _, y in loader)
    assert seen == 12  # the 14 files minus the two unreadable ones
    assert sorted(Path(p.split("'")[1]).name for p in loader.problems) == ["broken.jpg", "empty.jpg"]
    assert "skipped unreadable image" in capsys.readouterr().err
    assert sum(len(y) for _, y in loader) == 12 and len(loader.problems) == 2  # persistent workers, next epoch


def test_draft_mode_decodes_large_jpeg_at_reduced_scale(tmp_path):
    p = tmp_path / "big.jpg"
    Image.fromarray(np.full((1200, 1600, 3), 128, np.uint8)).save(p)
    w, h = open_image(p, draft_size=100).size
    assert 100 <= min(w, h) and w <= 400  # 1/8 scale: 200x150, never below the target size
    assert open_image(p).size == (1600, 1200)


def test_trainer_streams_a_folder_and_learns(tmp_path, jpeg_folder):
    import json
    import shutil

    from foveal.training import Trainer

    folder = tmp_path / "colours"
    shutil.copytree(jpeg_folder, folder)
    (folder / "red" / "zz_broken.jpg").write_bytes((folder / "red" / "0.jpg").read_bytes()[:300])
    cfg = apply_overrides(RunConfig(), {
        "data.source": str(folder), "data.in_memory": False, "data.img_size": 32, "data.workers": 1,
        "data.val_fraction": 0.2, "data.test_fraction": 0.25, "model.name": "lenet5", "train.epochs": 2,
        "train.batch_size": 8, "optim.lr": 3e-3, "train.out_dir": str(tmp_path / "runs"), "train.progress": False})
    trainer = Trainer(cfg, log=lambda m: None)
    result = trainer.fit()
    assert isinstance(trainer.run.loaders.train, StreamLoader)
    assert isinstance(trainer.run.data.splits["test"].images, FileImages)
    assert result.test_metrics["accuracy"] >= 0.9  # colour is the class: streaming must not scramble labels
    if any("zz_broken" in str(p) for split in ("train", "val") for p in trainer.run.data.splits[split].images.paths):
        problems = json.loads((result.run_dir / "data_problems.json").read_text())
        assert any("zz_broken.jpg" in p for p in problems), problems  # found while streaming, written down


def test_draft_in_crop_mode_keeps_the_centre(tmp_path):
    """resize='crop' decodes at reduced scale too, and still takes the centre square of the full image."""
    from foveal.data.decode import load_image

    a = np.zeros((1200, 1600, 3), np.uint8)
    a[:, 200:1400] = 255  # the centre 1200x1200 square is white, the side bands black
    p = tmp_path / "wide.jpg"
    Image.fromarray(a).save(p, quality=95)
    x = load_image(p, 64, 3, resize="crop").float()
    assert x.shape == (3, 64, 64) and x[:, :, 2:-2].min() > 200  # no black band inside the centre crop


def test_worker_processes_only_for_large_splits_on_cuda():
    """Threads on the CPU always; on CUDA, processes only where an epoch is long enough to repay starting them."""
    from foveal.data.stream import PROCESS_MIN_BATCHES, use_processes

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not use_processes(cpu, 10_000, 4)
    assert not use_processes(cuda, PROCESS_MIN_BATCHES - 1, 4) and use_processes(cuda, PROCESS_MIN_BATCHES, 4)
    assert not use_processes(cuda, 10_000, 0)  # no workers: in this thread
    assert use_processes(cpu, 3, 2, processes=True) and not use_processes(cuda, 10_000, 2, processes=False)
