"""Quantization-aware fine-tuning before int8 export (export/qat.py): the fake quantization rounds
weights as ORT does, 'auto' runs only where PTQ misses the limits, parity.json records what ran,
and QAT trains on the run's training split alone. LeNet-5 trained briefly on digits (conftest)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from foveal.config import ExportConfig, ParityLimits, QuantConfig
from foveal.export.parity import ExportCheckError, export_run
from foveal.export.qat import WeightFakeQuant, insert_fake_quant, layer_order
from foveal.export.runtime import read_onnx_meta


def test_weight_rounding_is_ort_symmetric_int8():
    """Per channel: round(w / s) * s with s = max|w| / 127 per output channel (ORT's QInt8 weights)."""
    w = torch.randn(4, 3, 3, 3) * torch.tensor([0.01, 0.1, 1.0, 10.0]).view(-1, 1, 1, 1)
    got = WeightFakeQuant(True, 127)(w)
    s = w.abs().flatten(1).amax(1).view(-1, 1, 1, 1) / 127
    torch.testing.assert_close(got, torch.round(w / s) * s)
    assert got.requires_grad is False and len(torch.unique(got[0])) <= 255


def test_per_tensor_rounds_the_weight_with_batch_norm_folded():
    conv, bn = nn.Conv2d(2, 3, 1, bias=False), nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        bn.running_var.copy_(torch.tensor([1e-4, 1.0, 4.0]))
        bn.weight.copy_(torch.tensor([1.0, -2.0, 0.5]))
    model = nn.Sequential(conv, bn, nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    order = layer_order(model, torch.zeros(1, 2, 4, 4))
    assert order == [(conv, bn), (model[4], None)]
    remove = insert_fake_quant(model, QuantConfig(per_channel=False, float_ends=False), torch.zeros(1, 2, 4, 4))
    fold = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().view(-1, 1, 1, 1)
    folded = conv.weight.detach() * fold  # what ORT rounds: on one grid for the whole tensor
    step = folded.abs().max() / 127
    torch.testing.assert_close(folded / step, torch.round(folded / step), atol=1e-3, rtol=0)
    remove()
    assert not hasattr(conv, "parametrizations") and type(conv.weight) is nn.Parameter


def _export(run: Path, out: Path, **kw) -> dict:
    limits, eval_limit = kw.pop("limits", ParityLimits()), kw.pop("eval_limit", 120)
    try:
        export_run(run, ExportConfig(out_dir=str(out), calib_images=64, eval_limit=eval_limit, threads=1,
                                     quant=QuantConfig(calibration="minmax", **kw), limits=limits))
    except ExportCheckError:
        pass
    return json.loads((out / "parity.json").read_text())


def test_auto_does_nothing_when_ptq_passes(digits_run, tmp_path: Path):
    r = _export(digits_run("lenet5"), tmp_path, qat="auto")
    q = r["int8"]["qat"]
    assert r["passed"] and q["mode"] == "auto" and q["ran"] is False and "met the limits" in q["reason"]
    assert q["ptq_int8"]["top1_agreement"] == r["int8"]["top1_agreement"] and "int8_after_qat" not in q
    assert "qat_trained" not in read_onnx_meta(Path(r["files"]["int8"]))["quantization"]


def _pixel_set(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x.reshape(len(x), -1)}


def test_auto_runs_qat_where_ptq_misses_and_trains_on_the_training_split(digits_run, tmp_path: Path, monkeypatch):
    """A limit no int8 can meet (PTQ misses it): 'auto' fine-tunes, on training images only, and
    parity.json keeps PTQ's and QAT's int8 numbers against the original eager model."""
    import foveal.export.qat as qat
    from foveal.export.parity import _split_arrays
    from foveal.training.checkpoint import load_model

    seen = []
    real = qat.make_loader
    monkeypatch.setattr(qat, "make_loader", lambda split, *a, **k: seen.append(split) or real(split, *a, **k))
    run = digits_run("lenet5")
    r = _export(run, tmp_path, qat="auto", qat_epochs=1, limits=ParityLimits(max_int8_drop=-100.0))
    q = r["int8"]["qat"]
    assert q["ran"] and "failed the parity check" in q["reason"] and not r["passed"]
    assert (q["epochs"], q["lr"], len(q["loss_per_epoch"])) == (1, 1e-4, 1)
    for k in ("accuracy", "top1_agreement", "accuracy_drop_points"):
        assert k in q["ptq_int8"] and k in q["int8_after_qat"]
    assert q["int8_after_qat"]["top1_agreement"] == r["int8"]["top1_agreement"]  # the shipped file is QAT's
    assert read_onnx_meta(Path(r["files"]["int8"]))["quantization"]["qat_trained"] == {"epochs": 1, "lr": 1e-4}

    (split,) = seen
    _, card = load_model(run)
    x = split.images.load_readable(torch.arange(len(split)))[0].numpy()
    test, val, train = (_split_arrays(card, s)[0] for s in ("test", "val", "train"))
    assert len(x) == q["train_images"] == len(train) and _pixel_set(x) == _pixel_set(train)
    assert not _pixel_set(x) & (_pixel_set(test) | _pixel_set(val))


@pytest.mark.slow
def test_qat_on_a_failing_ptq_case_records_both(digits_run, tmp_path: Path):
    """ResNet-20 with 7-bit per-tensor weights and no float layers misses a zero-loss limit after PTQ
    (one flipped test image, measured); QAT runs and its int8 is no less accurate than PTQ's there."""
    r = _export(digits_run("resnet20"), tmp_path, qat="auto", per_channel=False, reduce_range=True,
                float_ends=False, max_float_nodes=0, eval_limit=None,
                limits=ParityLimits(max_int8_drop=0.0, min_int8_agreement=1.0))
    q = r["int8"]["qat"]
    assert q["ran"] and q["float_after_qat"]["accuracy"] > 0.8
    assert q["int8_after_qat"]["accuracy"] >= q["ptq_int8"]["accuracy"]
