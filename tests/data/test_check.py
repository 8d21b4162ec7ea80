"""`foveal check`: counts, imbalance, unreadable files, duplicates, sizes, normalization, preview."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from foveal.config import DataConfig
from foveal.data.check import check_data, format_check, preview_batch, suggest_size, write_preview
from tests.conftest import SHARED_DATA, digits_arrays, run_cli, write_digit_folder


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    """train/val splits; class 2 has 4 images vs 12; one duplicate across splits; one text file as .png;
    a few larger colour images."""
    root = tmp_path / "messy"
    write_digit_folder(root / "train", per_class=12, classes=(0, 1), size=24)
    write_digit_folder(root / "train", per_class=4, classes=(2,), size=24)
    x, y = digits_arrays()
    for c in (0, 1, 2):  # images the train folder does not hold
        (root / "val" / str(c)).mkdir(parents=True)
        for i, img in enumerate(x[y == c][50:53]):
            Image.fromarray(img).resize((24, 24), Image.Resampling.BILINEAR).save(root / "val" / str(c) / f"v{i}.png")
    shutil.copy(root / "train" / "0" / "5.png", root / "val" / "0" / "copy.png")  # leaks into val
    (root / "train" / "1" / "broken.png").write_text("not an image")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(root / "train" / "1" / f"big{i}.jpg")
    return root


def test_check_folder_report(messy_folder):
    r = check_data(DataConfig(source=str(messy_folder)))
    assert r["class_counts"] == {"0": 16, "1": 18, "2": 7}
    assert r["imbalance_ratio"] == pytest.approx(18 / 7, abs=1e-3)
    assert r["splits"] == {"train": 31, "val": 10}
    assert len(r["unreadable"]) == 1 and "broken.png" in r["unreadable"][0]
    d = r["duplicates"]
    assert d["duplicate_groups"] == 1 and d["cross_split"] == 1 and d["conflicting_labels"] == 0
    assert sorted(Path(p).name for p in d["groups"][0]) == ["5.png", "copy.png"]
    assert r["size_histogram"] == {"<32": 38, "256-511": 3}
    assert r["common_sizes"]["400x300"] == 3 and r["channels"] == 3
    assert r["suggested"]["img_size"] == 24  # median shorter side is 24 px, below every standard size
    text = format_check(r)
    assert "broken.png" in text and "imbalance ratio" in text and "across splits" in text


def test_suggested_mean_std_match_pixels(tmp_path):
    root = write_digit_folder(tmp_path / "d", per_class=10, classes=(0, 1, 2), size=24)
    r = check_data(DataConfig(source=str(root)))
    pixels = np.concatenate([np.asarray(Image.open(p), np.float64).ravel() / 255 for p in sorted(root.rglob("*.png"))])
    assert r["channels"] == 1
    assert r["suggested"]["mean"][0] == pytest.approx(pixels.mean(), abs=0.01)
    assert r["suggested"]["std"][0] == pytest.approx(pixels.std(), abs=0.01)


def test_suggest_size():
    assert suggest_size([500, 375, 640]) == 384
    assert suggest_size([28] * 5) == 28
    assert suggest_size([]) == 32


def test_preview_applies_augmentations(tmp_path, digit_folder):
    plain = preview_batch(DataConfig(source=str(digit_folder), img_size=24, augment=[]), n=8)
    flipped = preview_batch(DataConfig(source=str(digit_folder), img_size=24, augment=["flip"]), n=8)
    assert plain.shape == (8, 1, 24, 24)
    same = [bool((a == b).all()) for a, b in zip(plain, flipped)]
    mirrored = [bool((a.flip(-1) == b).all()) for a, b in zip(plain, flipped)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(mirrored) and any(same)
    out = write_preview(DataConfig(source=str(digit_folder), img_size=24, augment=["crop", "flip"]),
                        tmp_path / "p" / "grid.png", n=16)
    img = Image.open(out)
    assert img.size == (8 * 26 + 2, 2 * 26 + 2)  # 8 x 2 tiles of 24 px with 2 px padding


def test_cli_check_json_and_preview(tmp_path, digit_folder):
    proc = run_cli("check", str(digit_folder), "--json", "--preview", str(tmp_path / "prev.png"), cwd=tmp_path)
    r = json.loads(proc.stdout)
    assert r["class_counts"] == {"0": 30, "1": 30, "2": 30} and r["imbalance_ratio"] == 1.0
    assert (tmp_path / "prev.png").stat().st_size > 0


@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="shared MNIST files not present")
def test_check_mnist_normalization():
    r = check_data(DataConfig(source="mnist", data_dir=str(SHARED_DATA)))
    assert r["images"] == 70000 and r["splits"] == {"train": 60000, "test": 10000}
    assert r["suggested"]["mean"][0] == pytest.approx(0.1307, abs=1e-3)  # the well-known MNIST statistics
    assert r["suggested"]["std"][0] == pytest.approx(0.3081, abs=1e-3)
    assert r["suggested"]["img_size"] == 28
