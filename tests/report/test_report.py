"""The evaluation report: sections in a real browser, numbers equal to scikit-learn's, the
`foveal report` / `foveal eval` / `foveal explain` commands."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, classification_report, confusion_matrix

from tests.conftest import chromium_paths, headless_chrome
from foveal.card import ModelCard, Preprocessing
from foveal.cli.main import main
from foveal.report import SECTION_IDS, ReportInputs, build_html

ROBUSTNESS = {  # the schema foveal.robustness.measure writes, trimmed
    "n": 100, "split": "test", "clean_accuracy": 0.9,
    "corruptions": {"gaussian_noise": {"1": 0.85, "2": 0.7, "3": 0.6}, "blur": {"1": 0.88, "2": 0.8, "3": 0.75}},
    "mean_corruption_accuracy": 0.76,
    "corruption_error": {"reference": "runs/base", "per_corruption": {"gaussian_noise": 0.7, "blur": 0.9}, "mCE": 0.8},
    "noise": {"0": 0.9, "0.05": 0.85, "0.1": 0.7},
    "occlusion": {"fill": 0.5, "grid": 2, "accuracy": {"8": {"0,0": 0.8, "0,1": 0.9}}, "mean": {"8": 0.85}},
    "attacks": {"fgsm_linf": {"0.01": 0.8, "0.03": 0.5}, "pgd_linf": {"0.01": 0.7, "0.03": 0.3}},
    "attack_loss": {"fgsm_linf": {"0.01": 0.5, "0.03": 1.5}, "pgd_linf": {"0.01": 0.8, "0.03": 2.5}},
    "clean_loss": 0.3, "zero_grad_fraction": 0.0, "huge_eps": {"eps": 1.0, "accuracy": 0.0},
    "warnings": ["PGD weaker than FGSM at eps 0.01"], "suspect_gradient_masking": True,
}


class Tables(HTMLParser):
    """Cell texts of every <table id=...> in a page: {id: [[cell, ...], ...]}."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._id, self._row, self._cell = None, None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._id = dict(attrs).get("id")
            self.tables[self._id] = []
        elif tag == "tr" and self._id:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row:
                self.tables[self._id].append(self._row)
            self._row = None
        elif tag == "table":
            self._id = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def page_data(html: str) -> dict:
    blob = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(blob.replace("<\\/", "</"))


def section_ids(html: str) -> list[str]:
    return re.findall(r'<section id="([\w-]+)"', html)


def test_training_report_has_every_section(digits_run):
    html = (digits_run / "report.html").read_text()
    assert section_ids(html) == [s for s in SECTION_IDS if s != "robustness"]  # no robustness.json yet
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # self-contained
    assert html.count("data:image/png;base64,") >= 5  # curves, 2 heatmaps, reliability, gallery
    data = page_data(html)
    cal = data["metrics"]["calibration"]
    assert cal["temperature"] > 0 and 0 <= cal["after"]["ece"] <= 1 and 0 <= cal["before"]["ece"] <= 1
    # T was fitted on the validation split; the test split is held out, and scaling must help there too
    assert cal["after"]["ece"] < cal["before"]["ece"], cal
    assert len(data["history"]) == 2 and {"train_loss", "val_acc", "lr"} <= set(data["history"][0])
    assert html.count("<figure>") == min(12, sum(data["metrics"]["confusion_matrix"][i][j] for i in range(10)
                                                 for j in range(10) if i != j))


def test_report_metrics_equal_sklearn(digits_run):
    from foveal.tasks.inference import evaluate_model

    metrics, logits, bundle = evaluate_model(digits_run, None, "test", "cpu")  # same seed -> same test split
    y = bundle.splits["test"].labels.numpy()
    pred = logits.argmax(1).numpy()
    html = (digits_run / "report.html").read_text()
    m = page_data(html)["metrics"]
    classes = m["classes"]
    ref = classification_report(y, pred, labels=range(len(classes)), target_names=classes, output_dict=True,
                                zero_division=0)
    assert np.array_equal(np.array(m["confusion_matrix"]), confusion_matrix(y, pred, labels=range(len(classes))))
    assert m["accuracy"] == pytest.approx(ref["accuracy"], abs=1e-12)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)
    for avg in ("macro", "weighted"):
        for k, sk in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert m[f"{avg}_{k}"] == pytest.approx(ref[f"{avg} avg"][sk], abs=1e-12)
    top5 = (torch.topk(logits, 5, 1).indices == torch.as_tensor(y)[:, None]).any(1).double().mean().item()
    assert m["top5"] == pytest.approx(top5, abs=1e-12)
    # The numbers as printed in the page's tables (4 decimals).
    tables = Tables()
    tables.feed(html)
    per_class = {r[0]: r[1:] for r in tables.tables["per-class"]}
    for c in classes:
        p, r, f, s = per_class[c]
        assert float(p) == pytest.approx(ref[c]["precision"], abs=5e-5)
        assert float(r) == pytest.approx(ref[c]["recall"], abs=5e-5)
        assert float(f) == pytest.approx(ref[c]["f1-score"], abs=5e-5)
        assert int(s) == ref[c]["support"]
    overall = dict(tables.tables["overall-metrics"])
    assert float(overall["accuracy (top-1)"]) == pytest.approx(ref["accuracy"], abs=5e-5)
    assert float(overall["macro F1"]) == pytest.approx(ref["macro avg"]["f1-score"], abs=5e-5)
    assert float(overall["weighted recall"]) == pytest.approx(ref["weighted avg"]["recall"], abs=5e-5)
    pairs = tables.tables["confused-pairs"]
    cm = confusion_matrix(y, pred)
    np.fill_diagonal(cm, 0)
    assert int(pairs[0][2]) == cm.max() and cm[classes.index(pairs[0][0]), classes.index(pairs[0][1])] == cm.max()


def test_report_command_adds_robustness_section(digits_run, tmp_path):
    (digits_run / "robustness.json").write_text(json.dumps(ROBUSTNESS))
    try:
        out = tmp_path / "again.html"
        assert main(["report", str(digits_run), "--out", str(out), "--device", "cpu"]) == 0
    finally:
        (digits_run / "robustness.json").unlink()
    html = out.read_text()
    assert section_ids(html) == list(SECTION_IDS)
    tables = Tables()
    tables.feed(html)
    attacks = {r[0]: r[1:] for r in tables.tables["robustness-attacks"]}
    assert attacks["pgd_linf"] == ["0.7000", "0.3000"]
    assert {"robustness-corruptions", "robustness-noise", "robustness-per_corruption"} <= set(tables.tables)
    assert "Suspected gradient masking" in html and "PGD weaker than FGSM" in html
    # the rebuilt page reports the same metrics as the one written at the end of training
    before = page_data((digits_run / "report.html").read_text())["metrics"]
    after = page_data(html)["metrics"]
    assert after["confusion_matrix"] == before["confusion_matrix"]
    assert after["calibration"]["temperature"] == pytest.approx(before["calibration"]["temperature"])


def test_bad_robustness_json_is_named(digits_run, tmp_path):
    (digits_run / "robustness.json").write_text("{not json")
    try:
        with pytest.raises(ValueError, match="robustness.json"):
            from foveal.tasks.reporting import report_from_run

            report_from_run(digits_run, tmp_path / "x.html", device="cpu")
    finally:
        (digits_run / "robustness.json").unlink()


def test_eval_writes_a_report(digits_run, tmp_path):
    assert main(["eval", str(digits_run), "--out", str(tmp_path), "--device", "cpu", "--json"]) == 0
    html = (tmp_path / "report.html").read_text()
    assert section_ids(html) == [s for s in SECTION_IDS if s != "robustness"]
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert page_data(html)["metrics"]["confusion_matrix"] == ev["confusion_matrix"]


def test_report_without_model_or_history_still_renders():
    cm = [[5, 1], [2, 4]]
    from foveal.metrics import report_from_confusion

    m = report_from_confusion(torch.tensor(cm), ["a", "b"])
    html = build_html(ReportInputs("t", ModelCard("m", ["a", "b"], 1, Preprocessing([0.5], [0.5], 8)), m,
                                   robustness={"noise": {"0.1": 0.5, "0.2": 0.25}}))
    assert section_ids(html) == list(SECTION_IDS)
    assert "no training history" in html and "no images or model" in html


def test_explain_command_writes_overlays(digits_run, tmp_path):
    from sklearn.datasets import load_digits

    (tmp_path / "in").mkdir()
    for i, img in enumerate(load_digits().images[:3]):
        Image.fromarray((img * 255 / 16).astype(np.uint8)).resize((32, 32)).save(tmp_path / "in" / f"d{i}.png")
    for method in ("gradcam", "occlusion"):
        assert main(["explain", str(digits_run), str(tmp_path / "in"), "--method", method, "--out", str(tmp_path / "o"),
                     "--device", "cpu"]) == 0
    outs = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert outs == sorted(f"d{i}_{m}.png" for i in range(3) for m in ("gradcam", "occlusion"))
    img = np.asarray(Image.open(tmp_path / "o" / "d0_gradcam.png"))
    assert img.ndim == 3 and img.shape[2] == 3 and img.shape[0] >= 160 and img.std() > 5
    bad_target = ["explain", str(digits_run), str(tmp_path / "in"), "--target", "cat", "--out", str(tmp_path / "o")]
    assert main(bad_target) == 2  # an unknown class is a clear CLI error, not a traceback


@pytest.mark.skipif(chromium_paths() is None, reason="needs Debian's chromium and chromium-driver")
def test_report_in_headless_chromium(digits_run, tmp_path):
    pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By

    page = tmp_path / "report.html"
    (digits_run / "robustness.json").write_text(json.dumps(ROBUSTNESS))
    try:
        assert main(["report", str(digits_run), "--out", str(page), "--device", "cpu"]) == 0
    finally:
        (digits_run / "robustness.json").unlink()
    drv = headless_chrome(4000, console_log=True)
    try:
        drv.get(page.as_uri())
        for sid in SECTION_IDS:
            el = drv.find_element(By.ID, sid)
            assert el.is_displayed() and el.find_element(By.TAG_NAME, "h2").text
        broken = drv.execute_script("return [...document.images].filter(i => !i.complete || !i.naturalWidth).length")
        assert broken == 0
        severe = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
        shot = tmp_path / "report.png"
        assert drv.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        drv.quit()
