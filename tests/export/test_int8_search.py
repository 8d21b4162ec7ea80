"""int8's choices on held-out images (export/search.py): the calibration method that scores best is
kept, a layer whose int8 costs accuracy stays float, the held-out images never come from the test
split, and parity.json records every choice. Tiny hand-built models on generated flat-colour
images, labels one in five wrong, so the float model is partly wrong and quantization errors show."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from foveal.card import ModelCard, Preprocessing
from foveal.config import ExportConfig, ParityLimits, QuantConfig
from foveal.export.onnx_export import export_onnx
from foveal.export.search import Holdout, graph_logits, rank_key, search_int8

C3 = "/model/model.4/Conv"  # the third conv of `_tiny`, named by its place in the Sequential


def _tiny(outlier_weights: bool) -> nn.Module:
    """Three colour channels through two 1x1 mixing convs to 3 logits (argmax: the dominant colour).

    Channel 3 of the first conv is a sharp Laplacian: 0 on flat images, huge on a one-pixel spike.
    With `outlier_weights`, the third conv reads that always-zero channel with weight 50, which
    leaves the float model unchanged but sets every output channel's int8 weight step to 50/127,
    rounding its real weights (about 1 +- 0.2) coarsely: quantizing that layer costs accuracy.
    """
    g = torch.Generator().manual_seed(0)
    c1, c2, c3, fc = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1), nn.Linear(4, 3)
    with torch.no_grad():
        for m in (c1, c2, c3, fc):
            m.weight.zero_()
            m.bias.zero_()
        for k in range(3):
            c1.weight[k, k, 1, 1], c1.bias[k] = 1.0, 2.0  # channel k: input channel k, made positive
        c1.weight[3, 0], c1.weight[3, 0, 1, 1] = -100.0, 800.0
        c2.weight[:, :, 0, 0] = torch.eye(4)
        c2.weight[:3, :3, 0, 0] += 0.05 * torch.randn(3, 3, generator=g)
        c3.weight[:, :, 0, 0] = torch.eye(4) + 0.2 * torch.randn(4, 4, generator=g)
        if outlier_weights:
            c3.weight[:3, 3] = 50.0
        fc.weight[:, :3] = 4 * torch.eye(3)
    return nn.Sequential(c1, nn.ReLU(), c2, nn.ReLU(), c3, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc).eval()


def _flat(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    colour = rng.integers(40, 216, (n, 3))  # (N, 3): one random colour per image
    return np.broadcast_to(colour[:, :, None, None], (n, 3, size, size)).astype(np.uint8).copy()


def _search(tmp_path: Path, outlier_weights: bool, size: int, n_calib: int, spike: bool, **quant) -> dict:
    card = ModelCard("tiny", list("abc"), 3, Preprocessing([0.5] * 3, [0.25] * 3, size))
    fp32 = export_onnx(_tiny(outlier_weights), card, tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    calib, hold = _flat(n_calib, size, rng), _flat(120, size, rng)
    if spike:  # one pixel of one calibration image: MinMax stretches the range to it, Percentile clips it
        calib[0, 0, 5, 5], calib[0, 0, 5, 6] = 255, 0
    labels = graph_logits(fp32, hold).argmax(1)
    labels[::5] = (labels[::5] + 1) % 3  # the float model gets these wrong
    return search_int8(fp32, tmp_path / "q.onnx", calib, Holdout(hold, labels, "generated"),
                       QuantConfig(**quant), ParityLimits())


def test_method_choice_keeps_the_most_accurate_on_holdout(tmp_path: Path):
    r = _search(tmp_path, False, 32, 256, spike=True, max_float_nodes=0)
    tried, chosen = r["calibration"]["tried"], r["calibration"]["chosen"]
    assert set(tried) == {"minmax", "percentile", "entropy"}
    assert chosen == max(tried, key=lambda m: rank_key(tried[m])) == "percentile"
    assert tried["minmax"]["accuracy"] <= tried[chosen]["accuracy"] - 0.1, tried  # measured 0.375 vs 0.59
    assert r["holdout_int8"] == tried[chosen] and r["sensitivity"] is None


def test_sensitive_layer_stays_float(tmp_path: Path):
    plain = _search(tmp_path, True, 12, 64, spike=False, calibration="minmax", max_float_nodes=0)
    r = _search(tmp_path, True, 12, 64, spike=False, calibration="minmax")
    alone = r["sensitivity"]["alone"]
    base = r["holdout"]["float32"]["accuracy"]
    assert alone[C3]["accuracy"] < base - 0.05, alone  # measured 0.69 vs 0.80
    assert r["sensitivity"]["ranked"][0] == C3 and r["float_nodes"]["sensitive"] == [C3]
    assert plain["holdout_int8"]["accuracy"] < base - 0.05 <= r["holdout_int8"]["accuracy"] - 0.05
    assert r["sensitivity"]["meets_limits_on_holdout"]


def _pixel_set(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x.reshape(len(x), -1)}


def test_holdout_never_holds_test_images(digits_run):
    """The held-out images are the validation split; calibration images come from the training split."""
    from foveal.training.checkpoint import load_model
    from foveal.export.parity import _split_arrays, int8_images

    _, card = load_model(digits_run("lenet5"))
    calib, hold = int8_images(card, 100)
    test, _ = _split_arrays(card, "test")
    val, train = _split_arrays(card, "val")[0], _split_arrays(card, "train")[0]
    assert hold.source == "val split" and _pixel_set(hold.images) == _pixel_set(val)
    assert not _pixel_set(hold.images) & _pixel_set(test)
    assert 95 <= len(calib) <= 105 and _pixel_set(calib) <= _pixel_set(train)
    assert not _pixel_set(calib) & (_pixel_set(test) | _pixel_set(val))
    assert len(np.unique(hold.labels)) == 10  # spread over the classes


def test_parity_json_records_choices_and_names_the_faster_passing_graph(digits_run, tmp_path: Path):
    from foveal.export.parity import ExportCheckError, export_run, format_parity
    from foveal.export.runtime import read_onnx_meta

    with pytest.raises(ExportCheckError, match="int8 loses"):  # int8 cannot pass: only float32 is named
        export_run(digits_run("lenet5"), ExportConfig(out_dir=str(tmp_path), calib_images=64, eval_limit=100,
                                                      limits=ParityLimits(max_int8_drop=-100.0)))
    r = json.loads((tmp_path / "parity.json").read_text())
    c = r["int8"]["choices"]
    assert c["holdout"]["source"] == "val split" and 60 <= c["calibration"]["images"] <= 68
    assert c["calibration"]["chosen"] in c["calibration"]["tried"] and len(c["calibration"]["tried"]) == 3
    assert c["float_nodes"]["ends"] and set(c["sensitivity"]["alone"]) == set(c["sensitivity"]["ranked"])
    assert r["fastest_passing"] == {"b1": "onnx", "b32": "onnx"}
    assert all(r[k]["latency_ms_b32"] > 0 for k in ("onnx", "int8"))
    q = read_onnx_meta(Path(r["files"]["int8"]))["quantization"]
    assert q["calibration"] == c["calibration"]["chosen"]
    assert q["float_nodes"] == c["float_nodes"]["ends"] + c["float_nodes"]["sensitive"]
    assert "calibration " + c["calibration"]["chosen"] in format_parity(r)


def test_calibration_prints_nothing(tmp_path: Path, capfd):
    """`foveal export --json` writes only the report to stdout: ORT's calibrators' progress is dropped."""
    _search(tmp_path, False, 12, 32, spike=False, max_float_nodes=0)
    assert capfd.readouterr().out == ""
