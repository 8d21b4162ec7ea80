"""`foveal explain` names the class and probability `foveal predict` prints (test-time views and
temperature included), while its heat map explains the model on the plain image."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.conftest import write_digit_folder

LINE = re.compile(r"^(?P<path>.+)\t(?P<method>\w+) for '(?P<target>[^']+)' \(p=(?P<p>[0-9.]+); "
                  r"predicted '(?P<pred>[^']+)'\)\t-> (?P<dest>.+)$")

PRINTED = 6e-4  # p is printed to 3 decimals (and a batch of another size may move the last float bit)


def _explain(run: Path, folder: Path, out: Path, capsys: pytest.CaptureFixture, *extra: str) -> dict[str, dict]:
    """`foveal explain` in this process; its printed lines parsed, keyed by image path."""
    from foveal.cli.main import main

    assert main(["explain", str(run), str(folder), "--out", str(out), "--device", "cpu", *extra]) == 0
    lines = [LINE.match(line) for line in capsys.readouterr().out.splitlines()]
    assert lines and all(lines), "unexpected explain output"
    return {m["path"]: m.groupdict() for m in lines}


def test_explain_reports_what_predict_prints(tta_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    from foveal.tasks.inference import Predictor

    folder = write_digit_folder(tmp_path / "imgs", per_class=3, classes=range(10), size=20)
    shown = _explain(tta_run, folder, tmp_path / "out", capsys)
    pred = Predictor.load(tta_run, "cpu")
    records = pred.predict_files([folder], topk=1)
    assert len(shown) == len(records)
    for r in records:
        line = shown[r["path"]]
        assert line["pred"] == line["target"] == r["class"]
        assert float(line["p"]) == pytest.approx(r["top"][0]["prob"], abs=PRINTED)
        assert Path(line["dest"]).is_file()
    # The data tells the two paths apart: plain logits would print other probabilities.
    x = pred.normalize(pred.load_images([Path(r["path"]) for r in records]))
    with torch.no_grad():
        plain = torch.softmax(pred.model(x) / pred.temperature, 1).max(1).values.tolist()
    assert any(abs(p - float(shown[r["path"]]["p"])) > 4 * PRINTED for p, r in zip(plain, records))


def test_explain_target_probability_is_predicts(tta_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    from foveal.tasks.inference import Predictor

    folder = write_digit_folder(tmp_path / "imgs", per_class=2, classes=(3, 5), size=20)
    shown = _explain(tta_run, folder, tmp_path / "out", capsys, "--target", "5", "--method", "saliency")
    pred = Predictor.load(tta_run, "cpu")
    for r in pred.predict_files([folder], topk=len(pred.classes)):
        line = shown[r["path"]]
        assert line["target"] == "5" and line["pred"] == r["class"]
        assert float(line["p"]) == pytest.approx(next(t["prob"] for t in r["top"] if t["class"] == "5"), abs=PRINTED)


def test_heat_map_is_of_the_plain_image(tta_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                        monkeypatch: pytest.MonkeyPatch):
    """The explainer sees the normalized plain batch once, not the test-time views."""
    import foveal.explain as explain_pkg
    from foveal.tasks.inference import Predictor, list_images

    seen, real = [], explain_pkg.explain
    monkeypatch.setattr(explain_pkg, "explain", lambda model, x, *a, **kw: seen.append(x) or real(model, x, *a, **kw))
    folder = write_digit_folder(tmp_path / "imgs", per_class=2, classes=(1, 7), size=20)
    _explain(tta_run, folder, tmp_path / "out", capsys)
    pred = Predictor.load(tta_run, "cpu")
    x = pred.normalize(pred.load_images(list_images([folder])))
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], x)
