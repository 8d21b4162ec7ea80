"""`foveal embed`: embeddings of a split saved with their labels, a 2-D map, and the map in the report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from foveal.config import RunConfig, apply_overrides
from foveal.training import Trainer
from foveal.tasks.embed import embed_run, map_2d, read_embedding_map

from tests.conftest import run_cli, write_digit_folder


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("embed_run")
    cfg = apply_overrides(RunConfig(), {"train.epochs": 3, "train.name": "d", "train.out_dir": str(root),
                                        "train.device": "cpu", "train.progress": False})
    return Trainer(cfg, log=lambda m: None).fit().run_dir


def test_embed_writes_features_labels_and_map_that_separates_classes(digits_run, tmp_path):
    from foveal.tasks.inference import Predictor, eval_data

    res = embed_run(digits_run, out=tmp_path, device="cpu")
    emb = np.load(tmp_path / "embeddings.npy")
    pred = Predictor.load(digits_run, "cpu")
    test = eval_data(pred.card, None, "test").splits["test"]
    assert emb.shape == (len(test), pred.model.num_features) and emb.dtype == np.float32
    # The saved features are the model's own pre-logits: its head applied to them gives its logits.
    x = (test.images.load()[:16].float() / 255 - pred.normalized.mean) / pred.normalized.std
    with torch.no_grad():
        logits = pred.model(x)
        from_emb = pred.model.get_classifier()(torch.from_numpy(emb[:16]))
    torch.testing.assert_close(from_emb, logits, rtol=1e-4, atol=1e-4)
    rows = list(csv.DictReader(open(tmp_path / "embeddings.csv")))
    assert [int(r["label"]) for r in rows] == test.labels.tolist()
    assert {r["class"] for r in rows} == set(pred.classes)
    info = read_embedding_map(tmp_path)
    assert info["method"] == "pca" and len(info["coords"]) == len(test) and info["dim"] == emb.shape[1]
    assert 0 < sum(info["explained_variance_ratio"]) <= 1
    # A trained model's features cluster by class: a nearest-centroid rule on them beats chance by far.
    y = test.labels.numpy()
    cent = np.stack([emb[y == k].mean(0) for k in range(10)])
    nc_acc = ((emb[:, None, :] - cent[None]) ** 2).sum(-1).argmin(1) == y
    assert nc_acc.mean() > 0.8, nc_acc.mean()
    assert (tmp_path / "embedding_map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res.coords.shape == (len(test), 2)


@pytest.mark.slow  # ~25 s; the conformance grid runs `foveal embed` then `foveal report` on every data path
def test_embed_cli_into_run_folder_then_report_draws_the_map(digits_run, tmp_path):
    run_cli("embed", str(digits_run), "--device", "cpu", cwd=tmp_path)
    assert (digits_run / "embedding_map.json").is_file()
    try:
        run_cli("report", str(digits_run), "--out", str(tmp_path / "r.html"), "--device", "cpu", cwd=tmp_path)
        html = (tmp_path / "r.html").read_text()
        assert '<section id="embedding">' in html and 'alt="embedding map"' in html
    finally:
        for f in ("embedding_map.json", "embedding_map.png", "embeddings.npy", "embeddings.csv"):
            (digits_run / f).unlink()


def test_embed_other_data_folder_and_tsne(digits_run, tmp_path):
    folder = write_digit_folder(tmp_path / "three", per_class=12, classes=(1, 4, 7), size=16)
    res = embed_run(digits_run, str(folder), out=tmp_path / "out", method="tsne", device="cpu")
    assert res.embeddings.shape[0] == 36 and res.coords.shape == (36, 2)
    info = json.loads((tmp_path / "out" / "embedding_map.json").read_text())
    assert info["split"] == "all" and info["method"] == "tsne"
    paths = [r["path"] for r in csv.DictReader(open(tmp_path / "out" / "embeddings.csv"))]
    assert all(Path(p).is_file() for p in paths) and len(paths) == 36


def test_embed_a_pretrained_backbone_keeps_the_data_classes(tmp_path):
    from foveal.tasks.pretrain import SSLConfig, pretrain

    cfg = apply_overrides(RunConfig(), {"model.name": "lenet5_modern", "train.epochs": 1, "train.batch_size": 128,
                                        "data.img_size": 32, "train.out_dir": str(tmp_path), "train.name": "ssl",
                                        "train.device": "cpu", "train.progress": False})
    run = pretrain(cfg, SSLConfig(), log=lambda m: None).run_dir
    res = embed_run(run, out=tmp_path / "e", device="cpu")
    assert res.classes == [str(i) for i in range(10)] and res.embeddings.shape[1] == 84


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="at least 3"):
        map_2d(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="not one of pca, tsne"):
        map_2d(np.random.rand(10, 4), "umap")
    (tmp_path / "embedding_map.json").write_text("{oops")
    with pytest.raises(ValueError, match="embedding_map.json"):
        read_embedding_map(tmp_path)
