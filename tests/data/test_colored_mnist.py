"""Colored MNIST (issue 21): the dataset's definition on the real MNIST files, and a small version
of the benchmark's answer (ERM falls for the colour, group mitigation does not)."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from foveal.config import DataConfig
from foveal.data import load_source
from foveal.data.datasets import read_idx
from tests.conftest import SHARED_DATA

MNIST = SHARED_DATA / "mnist"
pytestmark = pytest.mark.skipif(not (MNIST / "train-labels-idx1-ubyte.gz").is_file(), reason="needs the MNIST files")
BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_colored_mnist.py"


def test_colored_mnist_follows_arjovsky_et_al():
    b = load_source(DataConfig(source="colored-mnist", data_dir=str(MNIST)), 14)
    digits = torch.from_numpy(read_idx(MNIST / "train-labels-idx1-ubyte.gz").astype(np.int64))
    gray = torch.from_numpy(read_idx(MNIST / "train-images-idx3-ubyte.gz")[:, ::2, ::2].copy())
    train, test = b.splits["train"], b.splits["test"]
    assert b.classes == ["0-4", "5-9"] and set(b.splits) == {"train", "test"}
    x = torch.cat([train.images.load(), test.images.load()])  # (60000, 2, 14, 14)
    y = torch.cat([train.labels, test.labels])
    groups = train.groups + test.groups
    assert x.shape == (60_000, 2, 14, 14) and len(train) == 50_000
    colour = torch.tensor([g.endswith("green") for g in groups]).long()
    assert torch.equal(x[torch.arange(60_000), colour], gray)  # the digit in the colour's channel
    assert not x[torch.arange(60_000), 1 - colour].any()  # nothing in the other
    assert all(g.startswith(f"label={b.classes[c]}|") for g, c in zip(groups, y.tolist()))
    noise = (y != (digits >= 5).long()).double().mean().item()
    assert abs(noise - 0.25) < 0.01  # label noise 25% (binomial sd 0.002)
    for (a, e), p in zip(((0, 25_000), (25_000, 50_000), (50_000, 60_000)), (0.2, 0.1, 0.9)):
        assert abs((colour[a:e] != y[a:e]).double().mean().item() - p) < 0.015  # colour flips per environment


@pytest.mark.slow
def test_colored_mnist_erm_fails_group_mitigation_does_not(tmp_path):
    """The benchmark's answer at a fifth of its size: 10k training images, 3 epochs, one seed."""
    bench = runpy.run_path(str(BENCH), run_name="bench_colored_mnist")
    out = {}
    for method in ("erm", "group_balanced", "group_dro", "jtt"):
        bench["METHODS"][method] = {**bench["METHODS"][method], "data.limit": 10_000}
        out[method] = bench["run_one"](method, 0, str(MNIST), str(tmp_path), 3)
    assert out["erm"]["test_env_accuracy"] < 0.3  # the colour shortcut: far below chance on the test environment
    for method in ("group_balanced", "group_dro"):
        assert out[method]["test_env_accuracy"] > 0.6 and out[method]["worst_group_accuracy"] > 0.55, out
    assert out["jtt"]["test_env_accuracy"] > 0.5, out  # no group labels in training: above chance, unlike ERM
