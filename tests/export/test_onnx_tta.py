"""Test-time views on the ONNX path: the numpy views equal the torch ones, and an exported run's
probabilities (predict on an .onnx, serve --backend onnx) equal `Predictor`'s when the run uses TTA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from foveal.card import ModelCard
from foveal.training.tta import TTA_VIEWS, tta_logits
from foveal.export import runtime
from foveal.export.runtime import OnnxPredictor, make_session, read_onnx_meta, softmax, tta_views

VIEW_SETS = [[], ["flip"], ["shift"], ["flip", "shift"]]


class Recorder(torch.nn.Module):
    """Records every view it is given; its logits are a fixed linear map of the pixels."""

    def __init__(self, pixels: int, k: int = 4):
        super().__init__()
        self.w = torch.randn(pixels, k, generator=torch.Generator().manual_seed(0))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return x.flatten(1) @ self.w


@pytest.mark.parametrize("views", VIEW_SETS)
def test_numpy_views_equal_torch_views(views: list[str]):
    """Same views in the same order on the same uint8 batch, and the same weights in the average."""
    x = np.random.default_rng(0).integers(0, 256, (3, 2, 7, 9), dtype=np.uint8)  # not square: H, W kept apart
    model = Recorder(2 * 7 * 9)
    ref = tta_logits(model, torch.from_numpy(x).float(), views)
    got, weights = tta_views(x, views)
    assert len(got) == len(model.seen) and sum(weights) == pytest.approx(1.0)
    for mine, theirs in zip(got, model.seen):
        np.testing.assert_array_equal(mine.astype(np.float32), theirs.numpy())
    by_weights = sum(w * (torch.from_numpy(v.astype(np.float32)).flatten(1) @ model.w) for w, v in zip(weights, got))
    torch.testing.assert_close(by_weights, ref)


def test_view_names_are_shared_and_unknown_ones_refused():
    assert runtime.TTA_VIEWS == TTA_VIEWS
    with pytest.raises(ValueError, match="'rotate' is not one of flip, shift"):
        tta_views(np.zeros((1, 1, 4, 4), np.uint8), ["flip", "rotate"])


def _images(run: Path, folder: Path) -> np.ndarray:
    """(N, C, H, W) uint8 of digit image files, decoded for the run as `predict` decodes them."""
    from foveal.tasks.inference import Predictor, list_images
    from tests.conftest import write_digit_folder

    write_digit_folder(folder, per_class=4, classes=range(10), size=20)
    return Predictor.load(run, "cpu").load_images(list_images([folder])).numpy()


def test_onnx_probabilities_equal_predictor_with_tta(tta_run: Path, tmp_path: Path):
    """The runtime, given the run's metadata, averages the views the temperature was fitted on."""
    from foveal.tasks.inference import Predictor

    torch_pred = Predictor.load(tta_run, "cpu")
    path = tta_run / "export" / "model.onnx"
    onnx = OnnxPredictor(make_session(path), ModelCard.from_dict({**read_onnx_meta(path), "tta": torch_pred.tta}))
    x = _images(tta_run, tmp_path)
    want = torch_pred.probabilities(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(onnx.predict_images(x), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(onnx.tta_logits(x, batch_size=7), onnx.tta_logits(x), rtol=1e-5, atol=1e-5)  # chunks
    plain = softmax(onnx.logits(x), onnx.temperature)  # what the runtime used to return
    assert not np.allclose(plain, want, rtol=1e-4, atol=1e-5)


def test_plain_logits_stay_those_of_the_graph(tta_run: Path, tmp_path: Path):
    """`logits` (what the export parity check compares with eager) is the plain model, views or not."""
    from foveal.training.checkpoint import load_model
    from foveal.data.preprocess import Normalized

    model, card = load_model(tta_run, "cpu")
    path = tta_run / "export" / "model.onnx"
    onnx = OnnxPredictor(make_session(path), card)
    x = _images(tta_run, tmp_path)
    with torch.inference_mode():
        eager = Normalized(model, card.preprocessing.mean, card.preprocessing.std)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(onnx.logits(x), eager, rtol=1e-4, atol=1e-4)


def test_exported_file_serves_what_predict_prints(tta_run: Path, tmp_path: Path):
    """End to end: `predict` on the .onnx and `serve --backend onnx` answer as the torch Predictor."""
    from foveal.tasks.inference import Predictor
    from foveal.backends import load_predictor

    path = tta_run / "export" / "model.onnx"
    assert read_onnx_meta(path).get("tta") == ["flip", "shift"]
    x = _images(tta_run, tmp_path)
    want = Predictor.load(tta_run, "cpu").probabilities(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(OnnxPredictor.load(path).predict_images(x), want, rtol=1e-4, atol=1e-5)
    served = load_predictor(tta_run, "onnx")
    assert served.public_meta()["tta"] == ["flip", "shift"]
    np.testing.assert_allclose(served.predict_images(x), want, rtol=1e-4, atol=1e-5)
