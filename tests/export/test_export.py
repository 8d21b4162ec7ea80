"""Export parity: float32 ONNX agrees with eager on every evaluation image, a failed check raises,
metadata travels inside the file, and `predict` on the .onnx answers like the run. The parity of
every registered model (float32) and of a trained run per family (int8): test_export_zoo.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from foveal.config import ExportConfig, ParityLimits
from foveal.card import ModelCard, Preprocessing
from foveal.data.preprocess import Normalized
from foveal.export.onnx_export import export_onnx, read_onnx_meta
from foveal.export.parity import ExportCheckError, export_run
from foveal.export.runtime import OnnxPredictor

ARCHS = [("lenet5", 28, 1), ("resnet18", 16, 1), ("mobilenetv3_small", 32, 1), ("vit_tiny", 32, 1), ("vit_tiny", 16, 1)]


@pytest.mark.parametrize("name,size,chans", ARCHS)
def test_random_weights_round_trip(name: str, size: int, chans: int, tmp_path: Path):
    """Graph correctness on its own: dynamic batch (export used 2, run 3), logits match eager."""
    from foveal.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=chans, img_size=size).eval()
    card = ModelCard(name, list("abcdefg"), chans, Preprocessing([0.2] * chans, [0.3] * chans, size), temperature=1.5)
    path = export_onnx(model, card, tmp_path / "m.onnx")
    x = np.random.default_rng(0).integers(0, 256, (3, chans, size, size), dtype=np.uint8)
    with torch.inference_mode():
        ref = Normalized(model, [0.2] * chans, [0.3] * chans)(torch.from_numpy(x)).numpy()
    got = OnnxPredictor.load(path).logits(x)
    assert got.shape == (3, 7)
    np.testing.assert_allclose(got, ref, atol=1e-4 * max(1.0, np.abs(ref).max()))
    stored = read_onnx_meta(path)
    assert stored["classes"] == list("abcdefg") and stored["img_size"] == size and stored["temperature"] == 1.5
    assert json.loads((tmp_path / "m.onnx.json").read_text())["input"]["dtype"] == "uint8"


def test_failed_check_raises_and_is_recorded(digits_run, tmp_path: Path):
    """A threshold no int8 model can meet: the export must fail loudly and say why in parity.json."""
    with pytest.raises(ExportCheckError, match="int8 loses"):
        export_run(digits_run("lenet5"), ExportConfig(out_dir=str(tmp_path), calib_images=64,
                                                       limits=ParityLimits(max_int8_drop=-100.0)))
    report = json.loads((tmp_path / "parity.json").read_text())
    assert not report["passed"] and "int8 loses" in report["failures"][0]


def test_cli_export_then_predict_onnx(digits_run, tmp_path: Path):
    from PIL import Image

    from tests.conftest import digits_arrays, run_cli

    run = digits_run("lenet5")
    out = tmp_path / "exp"
    proc = run_cli("export", str(run), "--format", "onnx", "--out", str(out), cwd=tmp_path)
    assert "parity check: passed" in proc.stdout and (out / "model.onnx").is_file()
    x, y = digits_arrays()
    for i in range(4):
        Image.fromarray(x[i]).resize((28, 28)).save(tmp_path / f"d{i}.png")
    (tmp_path / "junk.png").write_text("not an image")
    imgs = [str(tmp_path / f"d{i}.png") for i in range(4)] + [str(tmp_path / "junk.png")]
    onnx_out = json.loads(run_cli("predict", str(out / "model.onnx"), *imgs, "--json", cwd=tmp_path).stdout)
    torch_out = json.loads(run_cli("predict", str(run), *imgs, "--json", "--device", "cpu", cwd=tmp_path).stdout)
    assert [r.get("class") for r in onnx_out] == [r.get("class") for r in torch_out]
    assert "error" in onnx_out[-1] and "junk.png" in onnx_out[-1]["error"]
    for a, b in zip(onnx_out[:4], torch_out[:4]):
        np.testing.assert_allclose([t["prob"] for t in a["top"]], [t["prob"] for t in b["top"]], atol=1e-4)


def test_bench_infer_times_every_engine_in_its_own_process(tmp_path: Path):
    from tests.conftest import run_cli

    out = tmp_path / "infer.json"
    run_cli("bench", "infer", "--model", "lenet5", "--img-size", "32", "--rounds", "3", "--warmup", "1",
            "--variants", "qdq", "--out", str(out), cwd=tmp_path)
    res = json.loads(out.read_text())
    (r,) = res["results"]
    assert r["model"] == "lenet5" and set(r["median_ms"]) == {"eager", "onnx_fp32", "int8_qdq"}
    assert all(v > 0 for v in r["median_ms"].values()) and r["ratio_vs_eager"]["eager"] == 1.0
    assert res["settings"]["rounds"] == 3 and "onnxruntime" in res["versions"]
