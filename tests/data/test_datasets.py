"""Named datasets in their official formats (generated files), MedMNIST .npz and numpy arrays."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from foveal.config import DataConfig
from foveal.data import load_source, make_splits
from foveal.data.datasets import DatasetFilesMissing, from_arrays, read_idx, safe_unpickle
from tests.conftest import SHARED_DATA


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def fake_idx_folder(root: Path, n_train: int = 50, n_test: int = 20, gz: bool = True) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = np.arange(n) % 10
        ext = ".gz" if gz else ""
        write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", x)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", y)
        out += [x, y]
    return tuple(out)


def test_idx_dataset_from_subfolder_with_val_carved_from_train(tmp_path):
    x_tr, y_tr, x_te, y_te = fake_idx_folder(tmp_path / "kmnist")
    cfg = DataConfig(source="kmnist", data_dir=str(tmp_path), val_fraction=0.2)
    bundle = load_source(cfg, 28)
    assert bundle.classes[:2] == ["o", "ki"]
    assert torch.equal(bundle.splits["train"].images.load()[:, 0], torch.from_numpy(x_tr))  # native size: bytes kept
    assert torch.equal(bundle.splits["test"].labels, torch.from_numpy(y_te))
    split = make_splits(bundle, cfg, seed=0)
    assert len(split.splits["test"]) == 20  # the official test split is kept whole
    assert len(split.splits["val"]) == 10 and len(split.splits["train"]) == 40
    assert set(split.splits["val"].labels.tolist()) == set(range(10))  # stratified: every class in val


def test_idx_unpacked_files_and_resize(tmp_path):
    fake_idx_folder(tmp_path, gz=False)
    bundle = load_source(DataConfig(source="mnist", data_dir=str(tmp_path)), 32)
    assert bundle.splits["train"].images.shape == (50, 1, 32, 32)


def test_idx_truncated_file_is_named(tmp_path):
    fake_idx_folder(tmp_path)
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    with gzip.open(p, "rb") as f:
        data = f.read()
    with gzip.open(p, "wb") as f:
        f.write(data[:-100])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz.*truncated"):
        read_idx(p)


def test_missing_files_name_files_and_folders(tmp_path):
    with pytest.raises(DatasetFilesMissing) as e:
        load_source(DataConfig(source="fashion-mnist", data_dir=str(tmp_path)), 28)
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz" in msg and str(tmp_path / "fashion-mnist") in msg and "--download" in msg


def test_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(*a, **k):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(tvu, "download_url", offline)
    with pytest.raises(DatasetFilesMissing, match="could not download train-images-idx3-ubyte.gz.*offline"):
        load_source(DataConfig(source="mnist", data_dir=str(tmp_path), download=True), 28)


def write_cifar10(root: Path, n: int = 20) -> np.ndarray:
    """The official layout: pickled dicts with bytes keys, uint8 (N, 3072) rows in CHW order."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f, protocol=2)
    first = None
    for fname in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        first = data if first is None else first
        with open(root / fname, "wb") as f:
            pickle.dump({b"data": data, b"labels": [i % 10 for i in range(n)], b"batch_label": b"x"}, f, protocol=2)
    return first


def test_cifar10_official_batches(tmp_path):
    first = write_cifar10(tmp_path / "cifar-10-batches-py")
    bundle = load_source(DataConfig(source="cifar10", data_dir=str(tmp_path)), 32)
    assert bundle.classes[0] == "airplane" and len(bundle.classes) == 10
    tr = bundle.splits["train"]
    assert tr.images.shape == (100, 3, 32, 32) and len(bundle.splits["test"]) == 20
    assert torch.equal(tr.images.load()[0], torch.from_numpy(first[0].reshape(3, 32, 32)))  # channel order kept


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_unpickler_refuses_code(tmp_path):
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({b"data": _Evil()}))
    with pytest.raises(ValueError, match="refusing to load global '(posix|os|nt).system'"):
        safe_unpickle(p)


def test_medmnist_npz(tmp_path):
    rng = np.random.default_rng(2)
    arrays = {f"{s}_images": rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
              for s, n in (("train", 30), ("val", 10), ("test", 10))}
    arrays.update({f"{s}_labels": (np.arange(n) % 3)[:, None] for s, n in (("train", 30), ("val", 10), ("test", 10))})
    np.savez(tmp_path / "bloodmnist.npz", **arrays)
    bundle = load_source(DataConfig(source="bloodmnist", data_dir=str(tmp_path)), 28)
    assert set(bundle.splits) == {"train", "val", "test"} and bundle.classes == ["0", "1", "2"]
    assert torch.equal(bundle.splits["val"].images.load()[0], torch.from_numpy(arrays["val_images"][0]).permute(2, 0, 1))
    direct = load_source(DataConfig(source=str(tmp_path / "bloodmnist.npz")), 28)  # a path works too
    assert len(direct.splits["train"]) == 30


@pytest.mark.parametrize("shape,chans", [((6, 10, 10), 1), ((6, 10, 10, 3), 3), ((6, 3, 10, 10), 3),
                                         ((6, 10, 10, 4), 3)])
def test_from_arrays_layouts(shape, chans):
    x = np.random.default_rng(0).random(shape).astype(np.float32)  # floats in [0, 1]
    bundle = from_arrays(x, np.array([0, 1, 2, 0, 1, 2]))
    img = bundle.splits["all"].images.load()
    assert img.shape == (6, chans, 10, 10) and img.dtype == torch.uint8
    assert int(img.max()) > 200  # scaled by 255, not truncated to 0/1


def test_from_arrays_string_labels_and_errors():
    x = np.zeros((4, 8, 8), np.uint8)
    b = from_arrays(x, ["cat", "dog", "cat", "dog"])
    assert b.classes == ["cat", "dog"] and b.splits["all"].labels.tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match=r"expected shape \(4,\)"):
        from_arrays(x, [0, 1])
    with pytest.raises(ValueError, match="no channel axis"):
        from_arrays(np.zeros((4, 8, 8, 7)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="within"):
        from_arrays(np.full((4, 8, 8), 300.0), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="only 1 class names"):
        from_arrays(x, [0, 1, 0, 1], classes=["a"])


@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="shared MNIST files not present")
def test_real_mnist_from_shared_data():
    bundle = load_source(DataConfig(source="mnist", data_dir=str(SHARED_DATA)), 28)
    tr, te = bundle.splits["train"], bundle.splits["test"]
    assert tr.images.shape == (60000, 1, 28, 28) and len(te) == 10000
    assert tr.labels[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first MNIST labels
    assert torch.bincount(te.labels).tolist()[:2] == [980, 1135]
    assert 30 < tr.images.load().float().mean() < 36  # MNIST mean ~ 0.1307 * 255 = 33.3
