"""data.exclude fed the label check's own output: label_quality.csv (every image) leaves out only its flagged
rows, and a list that would empty a split is refused with the cause named."""

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
