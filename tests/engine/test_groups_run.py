"""A CSV manifest with a `group` column through train, eval, the report and both loader paths
(issue 21), including a group that appears in the test split only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from foveal.card import ModelCard, Preprocessing
from foveal.cli.main import main
from tests.conftest import write_digit_folder


def write_group_manifest(root: Path) -> Path:
    """Digits 0 and 1 as PNGs; site A/B in every split, site C in the test split only."""
    write_digit_folder(root, per_class=60, classes=(0, 1), size=16)
    rows = ["path,label,split,group"]
    for c in (0, 1):
        for i in range(60):
            split = "train" if i < 36 else "val" if i < 44 else "test"
            site = "C" if i >= 54 else "AB"[i % 2]
            rows.append(f"{c}/{i}.png,{c},{split},site={site}|sex={'FM'[(i // 2) % 2]}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


def test_csv_groups_travel_with_splits(tmp_path):
    from foveal.config import DataConfig
    from foveal.data import load_source, make_splits

    manifest = write_group_manifest(tmp_path / "d")
    for in_memory in (True, False):
        cfg = DataConfig(source=str(manifest), in_memory=in_memory)
        bundle = make_splits(load_source(cfg, 16), cfg, seed=0)
        for name, split in bundle.splits.items():
            assert split.groups is not None and len(split.groups) == len(split)
            for p, g in zip(split.paths, split.groups):  # each group still belongs to its own file
                i = int(Path(p).stem)
                assert g.startswith(f"site={'C' if i >= 54 else 'AB'[i % 2]}|")
        assert not any("site=C" in g for g in bundle.splits["train"].groups)
        sub = bundle.splits["test"].subset(__import__("torch").tensor([0, 2]))
        assert sub.groups == [bundle.splits["test"].groups[0], bundle.splits["test"].groups[2]]


@pytest.mark.parametrize("in_memory", [True, False], ids=["in_memory", "streamed"])
def test_group_manifest_train_eval_report(tmp_path, in_memory):
    from foveal.config import RunConfig, apply_overrides
    from foveal import fit

    manifest = write_group_manifest(tmp_path / "d")
    cfg = apply_overrides(RunConfig(), {
        "data.source": str(manifest), "data.in_memory": in_memory, "train.epochs": 2, "train.name": "g",
        "train.out_dir": str(tmp_path / "runs"), "train.device": "cpu", "train.progress": False})
    run = fit(cfg, log=lambda m: None).run_dir
    test = json.loads((run / "test.json").read_text())
    assert set(test["groups"]) == {f"site={s}|sex={x}" for s in "ABC" for x in "FM"}
    assert sum(r["n"] for r in test["groups"].values()) == test["support"] == 32
    assert test["worst_group_accuracy"] == min(r["accuracy"] for r in test["groups"].values())
    unseen = {g for g, r in test["groups"].items() if not r["in_training"]}
    assert unseen == {"site=C|sex=F", "site=C|sex=M"}  # reported, not a crash
    assert set(test["attributes"]) == {"site", "sex"} and set(test["attributes"]["site"]) == {"A", "B", "C"}
    assert {"group", "site", "sex"} == set(test["fairness"])  # two classes: parity and equalized odds
    html = (run / "report.html").read_text()
    assert '<section id="groups">' in html and "not in training" in html and 'id="groups-site"' in html

    assert main(["eval", str(run), "--device", "cpu", "--out", str(tmp_path / "ev")]) == 0
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert ev["groups"].keys() == test["groups"].keys()
    assert ev["worst_group_accuracy"] == pytest.approx(test["worst_group_accuracy"], abs=1e-6)
    assert '<section id="groups">' in (tmp_path / "ev" / "report.html").read_text()


def test_no_groups_no_section():
    """The report has a Groups section (and its link) when the evaluated split had groups, and none
    when it had not: the same metrics, before and after add_group_metrics."""
    import torch

    from foveal.metrics import ConfusionMeter
    from foveal.metrics.groups import add_group_metrics
    from foveal.report.html import build_html
    from foveal.report.inputs import ReportInputs

    card = ModelCard("lenet5", ["0", "1"], 1, Preprocessing([0.5], [0.5], 32))
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(40, 2, generator=g), torch.randint(0, 2, (40,), generator=g)
    meter = ConfusionMeter(2)
    meter.update(logits, labels)
    m = meter.compute(["0", "1"])
    page = build_html(ReportInputs("no groups", card, m))
    assert '<section id="groups">' not in page and 'href="#groups"' not in page and "Groups" not in page
    assert '<section id="metrics">' in page  # the page itself was built
    add_group_metrics(m, logits, labels, ["site=A", "site=B"] * 20, ["0", "1"])
    page = build_html(ReportInputs("groups", card, m))
    assert '<section id="groups">' in page and 'href="#groups"' in page and "site=B" in page


def test_groups_section_in_headless_chromium(tmp_path):
    from tests.conftest import chromium_paths, headless_chrome

    if chromium_paths() is None:
        pytest.skip("needs Debian's chromium and chromium-driver")
    pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By

    from foveal.config import RunConfig, apply_overrides
    from foveal import fit

    manifest = write_group_manifest(tmp_path / "d")
    cfg = apply_overrides(RunConfig(), {"data.source": str(manifest), "train.epochs": 1, "train.name": "g",
                                        "train.out_dir": str(tmp_path / "runs"), "train.device": "cpu",
                                        "train.progress": False})
    run = fit(cfg, log=lambda m: None).run_dir
    drv = headless_chrome()
    try:
        drv.get((run / "report.html").as_uri())
        el = drv.find_element(By.ID, "groups")
        assert el.is_displayed() and el.find_element(By.TAG_NAME, "h2").text == "Groups"
        rows = drv.find_elements(By.CSS_SELECTOR, "#groups-table tbody tr")
        assert len(rows) == 6 and any("not in training" in r.text for r in rows)
        assert drv.find_element(By.ID, "fairness-table").is_displayed()
    finally:
        drv.quit()
