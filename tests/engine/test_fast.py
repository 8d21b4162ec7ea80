"""The fast recipe on the CPU: it learns, its step loop never syncs, its pieces do what they say."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from foveal.benchmarks.fast import bench_fast
from foveal.training import fast
from foveal.models import create_model

from tests.conftest import SHARED_DATA


@pytest.fixture(scope="module")
def digits() -> fast.FastData:
    return fast.load_fast_data("digits", img_size=16)


def test_tiny_recipe_learns_digits(digits: fast.FastData) -> None:
    torch.set_num_threads(1)
    cfg = dataclasses.replace(fast.RECIPES["digits"], epochs=8.0)
    res = bench_fast(digits, cfg, runs=1, warmup=False, log=lambda m: None)
    assert res["accuracy_mean"] >= 0.90, res  # chance is 0.10; 12 epochs reach ~0.96
    assert res["seconds_mean"] > 0


def _forbid(*_a, **_k):
    raise AssertionError("host synchronization inside the step loop")


def test_train_and_tta_eval_do_not_sync_with_the_host(digits: fast.FastData, monkeypatch) -> None:
    """On the CPU, a sync shows up as Tensor.item/tolist/bool/float/int; all are made to raise."""
    cfg = dataclasses.replace(fast.RECIPES["digits"], epochs=1.0)
    run = fast.prepare(digits, cfg)
    fast.reinit(run, digits, seed=0)
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, _forbid)
    fast.train(run, digits, seed=0)
    correct = (fast.predict_tta(run, digits.test_x).argmax(1) == digits.test_y).sum()
    monkeypatch.undo()
    assert 0 <= correct.item() <= len(digits.test_y)


def test_whitening_init_decorrelates_patches() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 1, 20, 20)
    x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, 1)  # neighbouring pixels correlated
    model = create_model("airnet_tiny", num_classes=10, in_chans=1, img_size=20)
    model.init_whitening(x)
    f = model.whiten(x) - model.whiten.bias[:, None, None]  # (N, 2*9, H', W')
    half = f[:, :9].permute(1, 0, 2, 3).reshape(9, -1)
    cov = torch.cov(half)
    off_diagonal = cov - torch.diag(cov.diag())
    assert off_diagonal.abs().max() < 0.02
    assert (cov.diag() > 0.85).all() and (cov.diag() < 1.01).all()  # below 1 only by the eps of the weakest directions
    assert torch.allclose(f[:, 9:], -f[:, :9], atol=1e-4)
    with pytest.raises(ValueError, match="init_whitening needs"):
        model.init_whitening(torch.randn(4, 3, 20, 20))


def test_translate_is_a_reflect_padded_shift() -> None:
    x = torch.arange(3 * 2 * 7 * 9, dtype=torch.float32).view(3, 2, 7, 9)
    out = fast.translate(x, 2, torch.Generator().manual_seed(1))
    off = torch.randint(0, 5, (2, 3), generator=torch.Generator().manual_seed(1))
    xp = F.pad(x, (2, 2, 2, 2), mode="reflect")
    for b in range(3):
        oy, ox = off[:, b].tolist()
        assert torch.equal(out[b], xp[b, :, oy:oy + 7, ox:ox + 9])


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_files_load_whole_through_the_data_reader(tmp_path: Path) -> None:
    """The recipe reads the official splits with data/datasets.py (every training image, none held out)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("t10k", 5)):
        arrays[split] = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, (n,))
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", arrays[split][0])
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", arrays[split][1])
    data = fast.load_fast_data("mnist", str(tmp_path))
    assert data.train_x.shape == (12, 1, 28, 28) and data.test_y.shape == (5,)
    assert np.array_equal(data.train_x[:, 0].numpy(), arrays["train"][0]) and data.train_x.dtype == torch.uint8
    assert np.array_equal(data.test_y.numpy(), arrays["t10k"][1]) and data.test_y.dtype == torch.int64
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x0d\x01" + (5).to_bytes(4, "big") + bytes(20))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz': not an idx file of unsigned bytes"):
        fast.load_fast_data("mnist", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="fashion-mnist: files .* not found .*--data-dir"):
        fast.load_fast_data("fashion-mnist", str(tmp_path / "missing"))


@pytest.mark.skipif(not (SHARED_DATA / "fashion-mnist").is_dir(), reason="shared Fashion-MNIST files not present")
def test_real_fashion_mnist_loads_whole() -> None:
    data = fast.load_fast_data("fashion-mnist", str(SHARED_DATA / "fashion-mnist"))
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.train_x.dtype == torch.uint8 and set(data.train_y.unique().tolist()) == set(range(10))


def _host_reads_in_one_epoch(tmp_path: Path, batch_size: int, monkeypatch) -> tuple[int, int]:
    from foveal.config import load_config
    from foveal.training import Trainer

    cfg = load_config(overrides={"data.source": "digits", "model.name": "lenet5_modern", "train.epochs": 1,
                                 "train.progress": False, "train.channels_last": True, "train.batch_size": batch_size,
                                 "train.out_dir": str(tmp_path), "train.name": f"b{batch_size}",
                                 # SGD: Adam's CPU path reads its step counter with .item() (a CPU tensor, so no
                                 # sync there; on CUDA the fused Adam keeps it on the device).
                                 "optim.name": "sgd"})
    trainer = Trainer(cfg, log=lambda m: None)
    trainer.setup()
    calls = {"n": 0}
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counting(self, *a, _original=original, **k):
            calls["n"] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counting)
    trainer.train_epoch(0)
    monkeypatch.undo()
    return calls["n"], len(trainer.run.loaders.train)


def test_trainer_epoch_reads_the_device_a_fixed_number_of_times(tmp_path: Path, monkeypatch) -> None:
    """Host reads (each one a sync on a GPU) happen at epoch end only, however many steps there are;
    channels-last training runs on the CPU too."""
    reads_few, steps_few = _host_reads_in_one_epoch(tmp_path, 128, monkeypatch)
    reads_many, steps_many = _host_reads_in_one_epoch(tmp_path, 32, monkeypatch)
    assert steps_many >= 3 * steps_few
    assert reads_many == reads_few
