"""Label errors: confident learning against cleanlab, injected flips through the K-fold pipeline,
`data.exclude` / `data.relabel`, `foveal check --labels`, and the issues page in a browser."""

from __future__ import annotations

import csv
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import SHARED_DATA, chromium_paths, headless_chrome
from foveal.config import DataConfig
from foveal.data.bundle import DataBundle, Split
from foveal.data.labels import confident_joint, confident_learning, read_refs
from foveal.data.sources import load_digits
from foveal.data.splits import make_splits


def synthetic(seed: int, n: int = 2000, k: int = 6, noise: float = 0.15, pairs: bool = False):
    """(true, given, probs): probabilities that favour the true class by a random margin, with
    `noise` of the labels flipped uniformly (or, with `pairs`, each class to the next)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    given = y.copy()
    flip = rng.random(n) < noise
    given[flip] = (y[flip] + 1) % k if pairs else (y[flip] + rng.integers(1, k, flip.sum())) % k
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += rng.uniform(0.3, 4, n)
    p = np.exp(logits)
    return y, given, p / p.sum(1, keepdims=True)


def f1(flagged: np.ndarray, truth: np.ndarray) -> float:
    tp = (flagged & truth).sum()
    return 2 * tp / max(flagged.sum() + truth.sum(), 1)


@pytest.mark.parametrize("seed,pairs", [(0, False), (1, False), (2, True), (3, True)])
def test_confident_learning_matches_cleanlab(seed, pairs):
    cleanlab = pytest.importorskip("cleanlab")
    from cleanlab.count import compute_confident_joint
    from cleanlab.filter import find_label_issues

    y, given, p = synthetic(seed, pairs=pairs)
    ours = confident_learning(given, p)
    ref = find_label_issues(given, p, n_jobs=1)
    np.testing.assert_array_equal(confident_joint(given, p), compute_confident_joint(given, p))
    truth = given != y
    assert (ours.mask == ref).all() or f1(ours.mask, truth) >= f1(ref, truth), cleanlab.__version__
    ranked = find_label_issues(given, p, n_jobs=1, return_indices_ranked_by="self_confidence")
    np.testing.assert_array_equal(ours.ranked, ranked)
    assert ours.noise_matrix.sum(0) == pytest.approx(np.ones(p.shape[1]))


def test_confident_learning_refuses_bad_input():
    with pytest.raises(ValueError, match="labels must lie"):
        confident_learning([0, 3], np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        confident_learning([0, 1, 1], np.full((2, 2), 0.5))


def test_injected_flips_on_digits_through_kfold():
    """10% uniform flips of scikit-learn's digits; 4 folds of LeNet-5 (modern), 10 epochs.
    Measured: 175 flagged, precision 0.93, recall 0.91 (seed 0); floors leave a margin."""
    from foveal.engine.labels import find_label_issues

    s = load_digits(DataConfig(), 20).splits["all"]
    y = s.labels.numpy()
    rng = np.random.default_rng(0)
    noisy = y.copy()
    idx = rng.choice(len(y), len(y) // 10, replace=False)
    noisy[idx] = (y[idx] + rng.integers(1, 10, len(idx))) % 10
    res = find_label_issues(s.images.load(), noisy, epochs=10, log=lambda m: None)
    flagged, truth = res.issues.mask, noisy != y
    tp = (flagged & truth).sum()
    assert tp / flagged.sum() >= 0.8 and tp / truth.sum() >= 0.8, (flagged.sum(), tp, truth.sum())
    assert (res.issues.suggested[res.issues.ranked] != noisy[res.issues.ranked]).all()


def test_out_of_sample_probs_are_seeded():
    """Folds train in threads; the same seed gives the same probabilities, and rows sum to 1."""
    from foveal.engine.labels import CrossValConfig, out_of_sample_probs

    s = load_digits(DataConfig(), 20).splits["all"]
    cfg = CrossValConfig(folds=2, epochs=1)
    a, b = (out_of_sample_probs(s.images.load(), s.labels, 10, cfg, log=lambda m: None) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (len(s), 10) and np.allclose(a.sum(1), 1, atol=1e-5)


def digits_train_test(test_labels: str, seed: int = 0) -> tuple[DataBundle, np.ndarray, np.ndarray]:
    """scikit-learn's digits at 20 px as a 1,300-image train split and a 497-image test split whose
    labels are 10% flipped ('flip10') or all shifted by one class ('shift'); (bundle, true, given) of test."""
    s = load_digits(DataConfig(), 20).splits["all"]
    rng = np.random.default_rng(seed)
    order = torch.from_numpy(rng.permutation(len(s)))
    tr, te = order[:1300], order[1300:]
    y = s.labels[te].numpy()
    given = (y + 1) % 10 if test_labels == "shift" else y.copy()
    if test_labels == "flip10":
        idx = rng.choice(len(y), len(y) // 10, replace=False)
        given[idx] = (y[idx] + rng.integers(1, 10, len(idx))) % 10
    x = s.images.load()
    b = DataBundle("digits", [str(c) for c in range(10)],
                   {"train": Split(x[tr], s.labels[tr]), "test": Split(x[te], torch.from_numpy(given))})
    return b, y, given


def test_holdout_splits_default_and_refusal():
    from foveal.engine.labels import holdout_splits

    assert holdout_splits("test", ["train"], None) == ["train"]  # a held-out split of a source with a train split
    assert holdout_splits("val", ["train", "test"], None) == ["train", "test"]
    assert holdout_splits("train", ["test"], None) == [] and holdout_splits("all", [], None) == []
    assert holdout_splits("test", ["train"], False) == [] and holdout_splits("train", ["test"], True) == ["test"]
    with pytest.raises(ValueError, match="split 'all' .* has none"):
        holdout_splits("all", [], True)


def test_test_split_is_judged_by_a_model_of_the_other_splits():
    """Every test label shifted by one class: a model trained on the train split predicts the true
    classes (so it never saw the test labels); K folds of the test split learn the shift instead."""
    from foveal.engine.labels import find_label_issues

    b, y, given = digits_train_test("shift")
    held = find_label_issues(b, split="test", epochs=6, log=lambda m: None)
    assert held.method.startswith("held out: one lenet5_modern trained on train (1,300 images)")
    assert (held.issues.probs.argmax(1) == y).mean() > 0.85  # measured 0.954
    kfold = find_label_issues(b, split="test", holdout=False, epochs=12, log=lambda m: None)
    assert kfold.method.startswith("4-fold cross-validation on test")
    assert (kfold.issues.probs.argmax(1) == given).mean() > 0.6  # measured 0.791


def test_injected_flips_in_a_held_out_split():
    """10% uniform flips in the test split, judged by one model trained on the 1,300 train images
    (20 epochs by the size default). Measured: 49 flagged, precision 0.98, recall 0.98 (seed 0; seed 1:
    0.98 / 0.96); the floors leave a margin."""
    from foveal.engine.labels import find_label_issues

    b, y, given = digits_train_test("flip10")
    res = find_label_issues(b, split="test", log=lambda m: None)
    flagged, truth = res.issues.mask, given != y
    tp = (flagged & truth).sum()
    assert tp / flagged.sum() >= 0.8 and tp / truth.sum() >= 0.8, (flagged.sum(), tp, truth.sum())


def tiny_bundle(with_paths: bool) -> DataBundle:
    """20 train + 10 test + 4 val images whose pixel value is their position (+100 test, +200 val),
    labels position % 2; every split given, so make_splits carves nothing."""
    def split(n: int, off: int) -> Split:
        x = (torch.arange(n) + off).to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
        return Split(x, torch.arange(n) % 2, [f"img{off + i}.png" for i in range(n)] if with_paths else None)

    return DataBundle("tiny", ["a", "b"], {"train": split(20, 0), "test": split(10, 100), "val": split(4, 200)})


def write_issues(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["rank", "index", "split", "path", "given", "suggested", "accept"])
        w.writeheader()
        w.writerows(rows)


def ids(split: Split) -> list[int]:
    return split.images.load()[:, 0, 0, 0].tolist()


@pytest.mark.parametrize("with_paths", [False, True])
def test_exclude_and_relabel_change_the_training_split(tmp_path, with_paths):
    b = tiny_bundle(with_paths)
    issues = tmp_path / "label_issues.csv"
    rows = [{"rank": 1, "index": 3, "split": "train", "path": "img3.png" if with_paths else "", "given": "b",
             "suggested": "a", "accept": "yes"},
            {"rank": 2, "index": 4, "split": "train", "path": "img4.png" if with_paths else "", "given": "a",
             "suggested": "b", "accept": ""},
            {"rank": 3, "index": 2, "split": "test", "path": "img102.png" if with_paths else "", "given": "a",
             "suggested": "b", "accept": "1"}]
    write_issues(issues, rows)
    out = make_splits(b, DataConfig(exclude=str(issues)), seed=0)
    assert sorted(ids(out.splits["train"])) == [i for i in range(20) if i not in (3, 4)]
    assert sorted(ids(out.splits["test"])) == [100 + i for i in range(10) if i != 2]
    out = make_splits(b, DataConfig(relabel=str(issues)), seed=0)
    lab = dict(zip(ids(out.splits["train"]), out.splits["train"].labels.tolist()))
    assert lab[3] == 0 and lab[4] == 0 and sum(lab[i] != i % 2 for i in range(20)) == 1  # only the accepted row
    tlab = dict(zip(ids(out.splits["test"]), out.splits["test"].labels.tolist()))
    assert tlab[102] == 1
    assert any("data.relabel" in p for p in out.problems)


def test_exclude_text_list_and_errors(tmp_path):
    b = tiny_bundle(with_paths=True)
    lst = tmp_path / "drop.txt"
    lst.write_text("# dropped by hand\n5\ntest:1\nimg7.png\n")
    out = make_splits(b, DataConfig(exclude=str(lst)), seed=0)
    assert sorted(ids(out.splits["train"])) == [i for i in range(20) if i not in (5, 7)]
    assert 101 not in ids(out.splits["test"])
    assert [r.index for r in read_refs(lst)] == [5, 1, None]
    lst.write_text("25\n")
    with pytest.raises(ValueError, match="index 25 is outside split 'train'"):
        make_splits(b, DataConfig(exclude=str(lst)), seed=0)
    bad = tmp_path / "bad.csv"
    write_issues(bad, [{"rank": 1, "index": 3, "split": "train", "path": "img9.png", "given": "b", "suggested": "a",
                        "accept": "1"}])
    with pytest.raises(ValueError, match="names 'img9.png'"):
        make_splits(b, DataConfig(relabel=str(bad)), seed=0)


def test_check_labels_command_and_python_api(tmp_path):
    import foveal
    from foveal.cli.main import main

    out = tmp_path / "chk"
    assert main(["check", "digits", "--labels", "--folds", "2", "--epochs", "2", "--out", str(out)]) == 0
    with open(out / "label_issues.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and {"index", "path", "given", "suggested", "self_confidence", "margin", "rank"} <= set(rows[0])
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    sc = [float(r["self_confidence"]) for r in rows]
    assert sc == sorted(sc) and all(r["given"] != r["suggested"] for r in rows)
    with open(out / "label_quality.csv") as f:  # every image, ranked by the same score, flagged marked
        everything = list(csv.DictReader(f))
    assert len(everything) == 1797 and [int(r["rank"]) for r in everything] == list(range(1, 1798))
    sc_all = [float(r["self_confidence"]) for r in everything]
    assert sc_all == sorted(sc_all) and sum(int(r["flagged"]) for r in everything) == len(rows)
    assert {r["index"] for r in everything if r["flagged"] == "1"} == {r["index"] for r in rows}
    assert (out / "noise_matrix.csv").read_text().startswith("given\\true,0,1")
    # digits has one split: nothing to hold out, so K folds of it
    assert json.loads((out / "check.json").read_text())["labels"]["probabilities"].startswith("2-fold cross-validation")
    page = (out / "label_issues.html").read_text()
    assert page.count('<figure class="issue"') == min(60, len(rows)) and "data:image/png;base64," in page
    # the same through Python, from given probabilities (no training): the csv's first row is flagged again
    res = foveal.find_label_issues("digits", probs=np.eye(10)[np.r_[1, np.zeros(1796, int)]] * 0.9 + 0.01)
    assert res.split == "all" and len(res.issues.given) == 1797 and len(res.issues.ranked) > 0


@pytest.mark.skipif(chromium_paths() is None, reason="needs Debian's chromium and chromium-driver")
def test_label_issues_page_in_headless_chromium(tmp_path):
    pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By

    from foveal.engine.labels import find_label_issues, write_label_check

    s = load_digits(DataConfig(), 20).splits["all"]
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10) * 0.3, len(s))
    write_label_check(find_label_issues(s, probs=probs, log=lambda m: None), tmp_path, top=24)
    drv = headless_chrome(3000, console_log=True)
    try:
        drv.get((tmp_path / "label_issues.html").as_uri())
        for sid in ("summary", "issues", "noise"):
            assert drv.find_element(By.ID, sid).is_displayed()
        figs = drv.find_elements(By.CSS_SELECTOR, "figure.issue")
        assert len(figs) == 24 and "given" in figs[0].text and "suggested" in figs[0].text
        shown = drv.execute_script("return [...document.querySelectorAll('figure.issue img')]"
                                   ".filter(i => i.complete && i.naturalWidth >= 60).length")
        assert shown == 24
        assert not [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        drv.quit()


# ~65 s on an idle 2-core CPU: in `make test` (acceptance 3 of the label-errors issue), skipped without the files
@pytest.mark.skipif(not (SHARED_DATA / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file(), reason="needs the MNIST files")
def test_mnist_test_split_ranks_human_confirmed_errors_first():
    """The call `foveal check mnist --split test --labels` makes (held out: one LeNet-5 trained on the
    60,000 training images) against the 15 test-label errors human raters confirmed
    (bench/mnist_test_label_errors.csv). Measured (2026-12-02, seed 0, normalization from 4,096 images
    spread over the training split): 4 flagged, 1 of them confirmed; of the 15, 6 in the 15 least
    self-confident test images, 9 in the top 50, 11 in the top 100 (normalization from the first 4,096:
    5 / 10 / 14, so the tail of the ranking moves with small changes). The floors leave a margin for other
    CPUs' float order and stay far above chance (0.15 of the 15 expected in a random top 100)."""
    from foveal.engine.labels import find_label_issues

    bench = runpy.run_path(str(Path(__file__).resolve().parents[2] / "bench" / "bench_mnist_test_errors.py"))
    confirmed = bench["read_confirmed"]()
    check = find_label_issues("mnist", split="test", data_dir=str(SHARED_DATA), log=lambda m: None)
    assert check.method.startswith("held out: one lenet5_modern trained on train (60,000 images)")
    assert all(check.issues.given[c["index"]] == c["given"] for c in confirmed)  # the official t10k order
    r = bench["score"](check, confirmed)
    assert r["confirmed_flagged"] >= 1 and r["flagged"] <= 100, r
    assert r["top"][50] >= 7 and r["top"][100] >= 9, r


def test_label_check_normalization_sees_every_class_of_a_sorted_split():
    """A folder is listed class by class; the label check's mean/std sample spans the split, not its head."""
    from foveal.engine.labels import _norm_stats

    x = torch.cat([torch.zeros(6000, 1, 4, 4, dtype=torch.uint8), torch.full((6000, 1, 4, 4), 255, dtype=torch.uint8)])
    (mean,), (std,) = _norm_stats(x)  # the first 4,096 alone would give mean 0, std 0.001
    assert mean == pytest.approx(0.5, abs=1e-3) and std == pytest.approx(0.5, abs=1e-3)
