"""One set of checks over every prediction backend (`foveal.backends.BACKENDS`), as timm's tests run
every model: a short trained run with test-time views and a fitted temperature (`tta_run`) and its
ONNX export, each loaded through `load_predictor`, the front door of predict, serve and the Python API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from foveal.backends import BACKENDS, load_predictor
from foveal.config import ParityLimits
from foveal.data.decode import list_images
from foveal.export.runtime import OnnxPredictor, softmax, tta_views
from foveal.predictor import ImagePredictor
from tests.conftest import write_digit_folder

# A predictor of the same model whose card says other things (test-time views): one builder per backend.
REBUILD = {"torch": lambda p, card: type(p)(p.model, card, p.device),
           "onnx": lambda p, card: OnnxPredictor(p.session, card)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three digit images per class as 20 px PNG files (the run trained at its own size: they get resized)."""
    return write_digit_folder(tmp_path_factory.mktemp("predictor_files"), per_class=3, classes=range(10), size=20)


@pytest.fixture(scope="module", params=BACKENDS)
def predictor(request: pytest.FixtureRequest, tta_run: Path) -> ImagePredictor:
    return load_predictor(tta_run, request.param, device="cpu")


def _images(pred: ImagePredictor, folder: Path) -> np.ndarray:
    return np.stack([pred.read(p) for p in list_images([folder])])  # (N, C, H, W) uint8


def test_every_backend_has_a_rebuild():
    assert set(REBUILD) == set(BACKENDS)


def test_the_front_door_gives_the_backend_asked_for(predictor: ImagePredictor, tta_run: Path):
    assert isinstance(predictor, ImagePredictor)
    assert predictor.public_meta()["backend"] == predictor.name
    assert predictor.classes == list(predictor.card.classes) == [str(i) for i in range(10)]
    assert predictor.card.tta == ("flip", "shift") and predictor.card.temperature != 1.0
    assert predictor.batch_size("auto") >= 1 and predictor.batch_size(None) >= 1 and predictor.batch_size(3) == 3
    if predictor.name == "onnx":  # an .onnx file is ONNX's by default; torch refuses it with a clear message
        assert load_predictor(tta_run / "export" / "model.onnx").name == "onnx"
        with pytest.raises(ValueError, match="ONNX file"):
            load_predictor(tta_run / "export" / "model.onnx", "torch")
    else:
        assert load_predictor(tta_run, device="cpu").name == "torch"


def test_probabilities_sum_to_one(predictor: ImagePredictor, folder: Path):
    x = _images(predictor, folder)
    p = predictor.predict_images(x)
    assert p.shape == (len(x), len(predictor.classes)) and p.dtype == np.float32
    assert (p >= 0).all()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    records = predictor.predict_files([folder], topk=3)
    for r, row in zip(records, p):
        assert [t["class"] for t in r["top"]][0] == r["class"] == predictor.classes[int(row.argmax())]
        probs = [t["prob"] for t in r["top"]]
        assert probs == sorted(probs, reverse=True) and len(probs) == 3


def test_backends_agree_on_the_same_files(tta_run: Path, folder: Path):
    """Top-1 of every backend against torch's on the same files, at least as often as export parity asks."""
    runs = {b: load_predictor(tta_run, b, device="cpu").predict_files([folder], topk=10) for b in BACKENDS}
    ref = runs["torch"]
    for name, records in runs.items():
        assert [r["path"] for r in records] == [r["path"] for r in ref]
        agree = np.mean([a["class"] == b["class"] for a, b in zip(records, ref)])
        assert agree >= ParityLimits().min_fp32_agreement, (name, agree)
        for a, b in zip(records, ref):
            got = {t["class"]: t["prob"] for t in a["top"]}
            np.testing.assert_allclose([got[t["class"]] for t in b["top"]], [t["prob"] for t in b["top"]],
                                       rtol=1e-4, atol=1e-5)


def test_a_batch_of_one_and_a_batch_of_n_agree(predictor: ImagePredictor, folder: Path):
    x = _images(predictor, folder)
    whole = predictor.predict_images(x, batch_size=len(x))
    np.testing.assert_allclose(predictor.predict_images(x, batch_size=1), whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predictor.predict_images(x, batch_size=7), whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predictor.predict_images(x[3:4]), whole[3:4], rtol=1e-5, atol=1e-6)


def test_an_unreadable_file_gets_an_error_naming_it(predictor: ImagePredictor, folder: Path, tmp_path: Path):
    good = sorted((folder / "4").glob("*.png"))[0]
    (tmp_path / "notes.png").write_text("plain text, not a picture\n")
    (tmp_path / "empty.png").write_bytes(b"")
    cut = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(cut[: len(cut) // 2])
    inputs = [good, tmp_path / "notes.png", tmp_path / "empty.png", tmp_path / "cut.png"]
    records = predictor.predict_files(inputs, topk=2)
    assert [r["path"] for r in records] == [str(p) for p in inputs]
    assert "error" not in records[0] and records[0]["class"] == records[0]["top"][0]["class"]
    for r in records[1:]:
        assert set(r) == {"path", "error"} and r["path"] in r["error"], r
    assert "not an image" in records[1]["error"] and "empty" in records[2]["error"]
    with pytest.raises(FileNotFoundError, match="missing.png"):
        predictor.predict_files([tmp_path / "missing.png"])


@pytest.mark.parametrize("views", [(), ("flip",), ("shift",), ("flip", "shift")])
def test_test_time_views_follow_the_card(predictor: ImagePredictor, folder: Path, views: tuple[str, ...]):
    """With the card's views, the probabilities are the softmax of the weighted mean of the views' logits
    over the temperature; the plain model's log-probabilities of each view are those logits over the
    temperature less a per-row constant, which the softmax drops."""
    x = _images(predictor, folder)[:12]
    plain = REBUILD[predictor.name](predictor, predictor.card.replace(tta=()))
    got = REBUILD[predictor.name](predictor, predictor.card.replace(tta=views)).predict_images(x)
    imgs, weights = tta_views(x, views)
    logp = sum(w * np.log(np.maximum(plain.predict_images(np.ascontiguousarray(v)), 1e-38).astype(np.float64))
               for v, w in zip(imgs, weights))
    np.testing.assert_allclose(got, softmax(logp), rtol=1e-4, atol=1e-5)
    if views:  # the views change the answer: the check above is not vacuous
        assert not np.allclose(got, plain.predict_images(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "LA", "L;transparent"])
def test_grayscale_colour_alpha_and_palette_files(predictor: ImagePredictor, folder: Path, tmp_path: Path,
                                                  mode: str):
    """The same pixels in another PIL mode give the same probabilities; transparency (composited over
    white by the decoder) gives a valid answer."""
    gray = Image.open(sorted((folder / "7").glob("*.png"))[0]).convert("L")
    if mode == "P":  # a palette whose index i is gray level i
        img = Image.fromarray(np.asarray(gray), "P")
        img.putpalette([v for i in range(256) for v in (i, i, i)])
    elif mode == "L;transparent":  # dark pixels see-through
        img = gray.convert("LA")
        img.putalpha(Image.fromarray((np.asarray(gray) > 64).astype(np.uint8) * 255))
    else:
        img = gray.convert(mode)
    ref_path, path = tmp_path / "gray.png", tmp_path / f"{mode.replace(';', '_')}.png"
    gray.save(ref_path)
    img.save(path)
    assert Image.open(path).mode == img.mode
    want, got = predictor.predict_files([ref_path, path], topk=10)
    assert "error" not in got and len(got["top"]) == 10
    assert sum(t["prob"] for t in got["top"]) == pytest.approx(1.0, abs=1e-5)
    if mode != "L;transparent":
        assert got["class"] == want["class"]
        np.testing.assert_allclose([t["prob"] for t in got["top"]], [t["prob"] for t in want["top"]], atol=1e-6)
