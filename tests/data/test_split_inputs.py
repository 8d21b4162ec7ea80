"""What goes into the splits: data.exclude fed the label check's own output (label_quality.csv leaves out only its
flagged rows; a list that would empty a split is refused), and byte-identical copies kept in one split."""

from __future__ import annotations

import csv

import pytest
import torch

from foveal.config import DataConfig
from foveal.data import DataBundle, Split
from foveal.data.splits import make_splits


def _bundle() -> DataBundle:
    def split(n: int, off: int) -> Split:
        x = (torch.arange(n) + off).to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
        return Split(x, torch.arange(n) % 2, [f"img{off + i}.png" for i in range(n)])

    return DataBundle("tiny", ["a", "b"], {"train": split(12, 0), "test": split(6, 100), "val": split(4, 200)})


def _write(path, rows, flagged=True):
    cols = ["rank", "index", "split", "path", "given", "suggested", "accept"] + (["flagged"] if flagged else [])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def _rows(flag: set[int]) -> list[dict]:
    return [{"rank": r + 1, "index": i, "split": "train", "path": f"img{i}.png", "given": "a", "suggested": "b",
             "accept": "", "flagged": int(i in flag)} for r, i in enumerate(range(12))]


def test_label_quality_csv_excludes_only_its_flagged_rows(tmp_path):
    quality = tmp_path / "label_quality.csv"
    _write(quality, _rows({2, 9}))
    out = make_splits(_bundle(), DataConfig(exclude=str(quality)), seed=0)
    kept = sorted(out.splits["train"].images.load()[:, 0, 0, 0].tolist())
    assert kept == [i for i in range(12) if i not in (2, 9)]
    assert any("2 images of split 'train'" in p for p in out.problems)


def test_an_exclude_list_that_empties_a_split_names_the_cause(tmp_path):
    every = tmp_path / "everything.csv"
    _write(every, [{k: v for k, v in r.items() if k != "flagged"} for r in _rows(set())], flagged=False)
    with pytest.raises(ValueError, match="everything.csv' names every one of the 12 images of split 'train'"):
        make_splits(_bundle(), DataConfig(exclude=str(every)), seed=0)


def test_carved_splits_keep_byte_identical_copies_together(tmp_path):
    """A folder with copies (the same bytes under other names) carved into train/val/test: every copy of an image
    lands in one split; without copies the split is exactly what it was."""
    from PIL import Image

    from foveal.data.sources import load_folder
    import numpy as np

    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(30):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / c / f"{i:02d}.png")
        for i in range(8):  # 8 images of each class copied twice, byte for byte
            data = (root / c / f"{i:02d}.png").read_bytes()
            for k in (1, 2):
                (root / c / f"copy{k}_{i:02d}.png").write_bytes(data)
    cfg = DataConfig(source=str(root), img_size=12, val_fraction=0.2, test_fraction=0.2)
    out = make_splits(load_folder(root, cfg, 12), cfg, seed=3)
    where = {}
    for name, s in out.splits.items():
        for p in s.paths:
            stem = p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1].split("_")[-1]  # class/NN.png
            where.setdefault(stem, set()).add(name)
    assert all(len(v) == 1 for v in where.values()), {k: v for k, v in where.items() if len(v) > 1}
    assert sum(len(s) for s in out.splits.values()) == 2 * (30 + 16)
    assert min(len(s) for s in out.splits.values()) > 5
    b = _bundle()  # no copies (distinct pixels): the carve is the plain stratified one
    from foveal.data.splits import keep_copies_together, stratified_indices

    parts = stratified_indices(torch.arange(12) % 2, [0.25, 0.25], 0)
    assert all(torch.equal(a, c) for a, c in zip(keep_copies_together(parts, [None] * 12), parts))
    assert len(b.splits["train"]) == 12


def test_given_splits_that_share_copies_say_so(tmp_path):
    b = _bundle()
    test = b.splits["test"]
    x = test.images.load().clone()
    x[:2] = b.splits["train"].images.load()[:2]  # two test images are copies of training images
    b.splits["test"] = Split(x, test.labels, None)
    b.splits["train"] = Split(b.splits["train"].images.load(), b.splits["train"].labels, None)
    out = make_splits(b, DataConfig(), seed=0)
    assert any("2 images of split 'test' have byte-identical copies in 'train'" in p for p in out.problems)


def test_given_file_splits_that_share_a_copy_say_so(tmp_path):
    """Files are keyed across the splits together: a test file whose only twin is in train (its size unique
    within test) is still found."""
    b = _bundle()
    for name, s in b.splits.items():
        paths = []
        for i in range(len(s)):
            p = tmp_path / f"{name}{i}.bin"
            p.write_bytes(bytes([i % 251]) * (100 + i + (0 if name == "train" else 1000 * (1 + len(name)))))
            paths.append(str(p))
        b.splits[name] = Split(s.images.load(), s.labels, paths)
    (tmp_path / "test3.bin").write_bytes((tmp_path / "train5.bin").read_bytes())  # one copy across splits
    out = make_splits(b, DataConfig(), seed=0)
    assert [p for p in out.problems if "byte-identical" in p] == [
        "1 images of split 'test' have byte-identical copies in 'train': its score is inflated by them "
        "(foveal check lists the copies)"]
