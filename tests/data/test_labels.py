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
from foveal.data.labels import (Ref, confident_joint, confident_learning, issue_rows, read_refs, write_issue_csv,
                                 write_noise_csv)
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
    from foveal.tasks.labels import find_label_issues

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
    from foveal.tasks.labels import CrossValConfig, out_of_sample_probs

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
    from foveal.tasks.labels import holdout_splits

    assert holdout_splits("test", ["train"], None) == ["train"]  # a held-out split of a source with a train split
    assert holdout_splits("val", ["train", "test"], None) == ["train", "test"]
    assert holdout_splits("train", ["test"], None) == [] and holdout_splits("all", [], None) == []
    assert holdout_splits("test", ["train"], False) == [] and holdout_splits("train", ["test"], True) == ["test"]
    with pytest.raises(ValueError, match="split 'all' .* has none"):
        holdout_splits("all", [], True)


def test_test_split_is_judged_by_a_model_of_the_other_splits():
    """Every test label shifted by one class: a model trained on the train split predicts the true
    classes (so it never saw the test labels); K folds of the test split learn the shift instead."""
    from foveal.tasks.labels import find_label_issues

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
    from foveal.tasks.labels import find_label_issues

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

    from foveal.tasks.labels import find_label_issues, write_label_check

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
    5 / 10 / 14, so the tail of the ranking moves with small changes). On a 2-core AMD EPYC (2026-12-04):
    3 flagged, none of the 15, and 5 / 10 / 12 in the top 15 / 50 / 100: whether one of 3-4 flagged images is
    among the 15 confirmed is a coin toss of float order (the others flagged may be unconfirmed errors), so
    the check is on the ranking, whose floors leave a margin for other CPUs' float order and stay far above
    chance (0.15 of the 15 expected in a random top 100)."""
    from foveal.tasks.labels import find_label_issues

    bench = runpy.run_path(str(Path(__file__).resolve().parents[2] / "bench" / "bench_mnist_test_errors.py"))
    confirmed = bench["read_confirmed"]()
    check = find_label_issues("mnist", split="test", data_dir=str(SHARED_DATA), log=lambda m: None)
    assert check.method.startswith("held out: one lenet5_modern trained on train (60,000 images)")
    assert all(check.issues.given[c["index"]] == c["given"] for c in confirmed)  # the official t10k order
    r = bench["score"](check, confirmed)
    assert 1 <= r["flagged"] <= 100, r
    assert r["top"][15] >= 4 and r["top"][50] >= 7 and r["top"][100] >= 9, r


def test_label_check_normalization_sees_every_class_of_a_sorted_split():
    """A folder is listed class by class; the label check's mean/std sample spans the split, not its head."""
    from foveal.tasks.labels import _norm_stats

    x = torch.cat([torch.zeros(6000, 1, 4, 4, dtype=torch.uint8), torch.full((6000, 1, 4, 4), 255, dtype=torch.uint8)])
    (mean,), (std,) = _norm_stats(x)  # the first 4,096 alone would give mean 0, std 0.001
    assert mean == pytest.approx(0.5, abs=1e-3) and std == pytest.approx(0.5, abs=1e-3)


# ---- each step of confident learning against cleanlab's own functions, and the edge cases ------------------


def test_steps_equal_cleanlab_functions():
    pytest.importorskip("cleanlab")
    from cleanlab.count import compute_confident_joint, get_confident_thresholds
    from cleanlab.filter import _keep_at_least_n_per_class
    from cleanlab.rank import get_normalized_margin_for_each_label, get_self_confidence_for_each_label

    from foveal.data.labels import _prune_counts, class_thresholds, normalized_margin, self_confidence

    for seed, n, k, pairs in ((4, 50, 3, False), (5, 30, 4, True), (6, 300, 5, False)):
        y, given, p = synthetic(seed, n=n, k=k, pairs=pairs)
        np.testing.assert_allclose(class_thresholds(given, p), get_confident_thresholds(given, p), rtol=1e-12)
        np.testing.assert_array_equal(confident_joint(given, p, calibrate=False),
                                      compute_confident_joint(given, p, calibrate=False))
        cj = confident_joint(given, p)
        np.testing.assert_array_equal(cj, compute_confident_joint(given, p))
        assert cj.dtype == np.int64 and cj.sum() == n and (cj.sum(1) == np.bincount(given, minlength=k)).all()
        np.testing.assert_array_equal(_prune_counts(cj), _keep_at_least_n_per_class(cj.T, 1))
        np.testing.assert_array_equal(_prune_counts(cj, 3), _keep_at_least_n_per_class(cj.T, 3))
        np.testing.assert_allclose(self_confidence(given, p), get_self_confidence_for_each_label(given, p))
        np.testing.assert_allclose(normalized_margin(given, p), get_normalized_margin_for_each_label(given, p))


@pytest.mark.parametrize("seed,n,k,pairs", [(4, 50, 3, False), (5, 30, 4, True), (1, 2000, 6, False)])
def test_flags_and_both_rankings_equal_cleanlab(seed, n, k, pairs):
    pytest.importorskip("cleanlab")
    from cleanlab.filter import find_label_issues

    y, given, p = synthetic(seed, n=n, k=k, pairs=pairs)
    for rank_by in ("self_confidence", "normalized_margin"):
        ours = confident_learning(list(given), p.astype(np.float32), rank_by=rank_by)  # lists and float32 accepted
        assert ours.given.dtype == np.int64 and ours.probs.dtype == np.float64 and ours.rank_by == rank_by
        ref = find_label_issues(given, p.astype(np.float32).astype(np.float64), n_jobs=1,
                                return_indices_ranked_by=rank_by)
        np.testing.assert_array_equal(ours.ranked, ref)
        np.testing.assert_array_equal(ours.score[ours.ranked], np.sort(ours.score[ours.ranked]))


def test_round_rows_keeps_row_totals_like_cleanlab():
    pytest.importorskip("cleanlab")
    from cleanlab.internal.util import round_preserving_row_totals

    from foveal.data.labels import _round_rows

    m = np.array([[0.4, 0.45, 0.15],  # rounds to 0: one unit to the largest fraction
                  [0.6, 0.6, 0.8],  # rounds to 3 of 2: one unit off the smallest fraction
                  [2.3, 2.3, 2.4],  # 6 of 7: one unit to the largest fraction
                  [0.3, 0.3, 0.3],  # 0 of 1
                  [1.0, 2.0, 3.0]])
    got = _round_rows(m)
    np.testing.assert_array_equal(got, round_preserving_row_totals(m))
    np.testing.assert_array_equal(got, [[0, 1, 0], [0, 1, 1], [2, 2, 3], [0, 0, 1], [1, 2, 3]])
    assert got.dtype == np.int64
    rng = np.random.default_rng(0)
    for _ in range(20):
        r = rng.random((4, 6)) * 5
        np.testing.assert_array_equal(_round_rows(r), round_preserving_row_totals(r))


def test_thresholds_joint_and_noise_matrix_edge_cases():
    from foveal.data.labels import EPS, class_thresholds, noise_matrix

    # class 2 is never given: its threshold is unreachable (2), and the joint's row 2 stays at its diagonal 1
    given = np.array([0, 0, 1, 1, 0])
    p = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.5, 0.4], [0.1, 0.1, 0.8]])
    t = class_thresholds(given, p)
    np.testing.assert_allclose(t, [(0.9 + 0.6 + 0.1) / 3, 0.6, 2.0])
    # a threshold of 0 (every image of a class gives it probability 0) is raised to 2 * EPS
    z = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert class_thresholds(np.array([0, 1]), z)[1] == 2 * EPS
    cj = confident_joint(given, p, calibrate=False)
    # images 3 (0.5 < t1 = 0.6) and 4 (0.8 < 2) clear no threshold: not counted; the empty diagonal is raised to 1
    np.testing.assert_array_equal(cj, [[2, 0, 0], [0, 1, 0], [0, 0, 1]])
    # an image exactly at a threshold (within EPS) clears it; with two cleared, the argmax is its guess
    given = np.array([0, 0, 1, 1])
    p = np.array([[0.7, 0.3], [0.5, 0.5], [0.45, 0.55], [0.35, 0.65]])  # t0 = 0.6, t1 = 0.6
    t = class_thresholds(given, p)
    np.testing.assert_allclose(t, [0.6, 0.6])
    q = p.copy()  # image 2 (given 1) at p(0) = t0 - EPS / 2 clears class 0 by the slack; image 1 clears nothing
    q[2] = [t[0] - EPS / 2, 1 - t[0] + EPS / 2]
    np.testing.assert_array_equal(confident_joint(given, q, calibrate=False), [[1, 0], [1, 1]])
    q[2] = [t[0] - 2 * EPS, 1 - t[0] + 2 * EPS]  # beyond the slack: image 2 clears nothing
    np.testing.assert_array_equal(confident_joint(given, q, calibrate=False), [[1, 0], [0, 1]])
    # noise matrix: columns normalized; an empty column stays 0, not nan
    cj = np.array([[3, 0, 1], [1, 0, 1], [0, 0, 2]])
    np.testing.assert_allclose(noise_matrix(cj), [[0.75, 0, 0.25], [0.25, 0, 0.25], [0, 0, 0.5]])


def test_calibrated_joint_with_an_absent_class_and_a_class_that_clears_nothing():
    pytest.importorskip("cleanlab")
    from cleanlab.count import compute_confident_joint

    given = np.array([0, 0, 0, 1, 1, 1, 1])
    p = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.3, 0.6, 0.1],
                  [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    np.testing.assert_array_equal(confident_joint(given, p), compute_confident_joint(given, p))
    # an image clearing two thresholds counts for its argmax, not the first class it clears:
    # t = (0.4, 0.5); image 0 clears both (argmax 1), images 2, 3 clear both (tied: argmax 0)
    given = np.array([0, 0, 1, 1])
    p = np.array([[0.45, 0.55], [0.35, 0.65], [0.5, 0.5], [0.5, 0.5]])
    np.testing.assert_array_equal(confident_joint(given, p, calibrate=False), [[1, 2], [2, 1]])
    np.testing.assert_array_equal(confident_joint(given, p, calibrate=False),
                                  compute_confident_joint(given, p, calibrate=False))


def test_prune_by_noise_rate_small_cases():
    from foveal.data.labels import prune_by_noise_rate

    # class 1 has a single image: it is never flagged (nothing would be left); the others by margin
    given = np.array([0, 0, 0, 0, 1, 2, 2, 2])
    p = np.array([[0.9, 0.05, 0.05], [0.1, 0.1, 0.8], [0.2, 0.1, 0.7], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8],
                  [0.1, 0.1, 0.8], [0.05, 0.05, 0.9], [0.7, 0.2, 0.1]])
    cj = np.array([[2, 0, 2], [0, 1, 0], [1, 0, 2]])
    flagged = prune_by_noise_rate(given, p, cj)
    assert flagged.dtype == bool
    np.testing.assert_array_equal(np.flatnonzero(flagged), [1, 2, 7])
    # a flagged image whose given label is (within EPS) its argmax is unflagged
    p2 = p.copy()
    p2[2] = [0.45, 0.1, 0.45]
    np.testing.assert_array_equal(np.flatnonzero(prune_by_noise_rate(given, p2, cj)), [1, 7])
    # off-diagonal counts of 0 flag nothing
    assert not prune_by_noise_rate(given, p, np.diag([4, 1, 3])).any()
    # two images of a class can be flagged, one per unit of its off-diagonal count
    cj = np.array([[2, 0, 2], [0, 1, 0], [0, 0, 3]])
    np.testing.assert_array_equal(np.flatnonzero(prune_by_noise_rate(given, p, cj)), [1, 2])


def test_label_issues_properties_and_stable_ranking():
    # four identical rows given 0 but predicted 1: equal scores rank by position
    given = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    row_bad, row_ok0, row_ok1 = [0.2, 0.8], [0.9, 0.1], [0.3, 0.7]
    p = np.array([row_ok0, row_bad, row_ok0, row_bad, row_bad, row_ok0, row_ok1, row_ok1, row_ok1, row_ok1])
    issues = confident_learning(given, p)
    np.testing.assert_array_equal(issues.ranked, [1, 3, 4])
    np.testing.assert_array_equal(issues.mask, np.isin(np.arange(10), [1, 3, 4]))
    np.testing.assert_array_equal(issues.suggested, p.argmax(1))
    np.testing.assert_allclose(issues.score, p[np.arange(10), given])
    np.testing.assert_allclose(issues.thresholds, [0.55, 0.7])
    np.testing.assert_array_equal(issues.confident_joint, [[3, 3], [0, 4]])
    np.testing.assert_allclose(issues.noise_matrix, [[1, 3 / 7], [0, 4 / 7]])
    assert issues.noise_rate == pytest.approx(0.3)
    m = confident_learning(given, p, rank_by="normalized_margin")
    np.testing.assert_allclose(m.score, (p[np.arange(10), given] - p[np.arange(10), 1 - given] + 1) / 2)


def test_confident_learning_error_messages():
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.1, got 0\.\.2"):
        confident_learning([0, 2], np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.1, got -1\.\.1"):
        confident_learning([-1, 1], np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match=r"for N = 3 labels, got shape \(2, 2\)"):
        confident_learning([0, 1, 1], np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match=r"got shape \(3,\)"):
        confident_learning([0, 1, 1], np.full(3, 0.5))
    with pytest.raises(ValueError, match="rank_by 'margin' is not one of self_confidence, normalized_margin"):
        confident_learning([0, 1], np.full((2, 2), 0.5), rank_by="margin")
    assert len(confident_learning([], np.zeros((0, 3))).ranked) == 0


def test_issue_rows_and_the_csv_files(tmp_path):
    given = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.9, 0.1], [0.3, 0.7], [0.25, 0.75], [0.9, 0.1]] + [[0.3, 0.7]] * 4)
    issues = confident_learning(given, p)
    classes = ["cat", "dog"]
    rows = issue_rows(issues, classes, "train", paths=[f"img{i}.png" for i in range(10)])
    assert [r["index"] for r in rows] == issues.ranked.tolist() == [1, 4, 3]
    assert rows[0] == {"rank": 1, "index": 1, "split": "train", "path": "img1.png", "given": "cat", "suggested": "dog",
                       "self_confidence": 0.2, "margin": pytest.approx(0.2), "p_suggested": 0.8, "accept": ""}
    assert [r["rank"] for r in rows] == [1, 2, 3] and rows[1]["margin"] == pytest.approx((0.25 - 0.75 + 1) / 2)
    assert issue_rows(issues, classes, "test")[0]["path"] == ""
    everything = issue_rows(issues, classes, "train", everything=True)
    assert [r["index"] for r in everything] == np.argsort(p[np.arange(10), given], kind="stable").tolist()
    assert [r["flagged"] for r in everything] == [int(i in (1, 3, 4)) for i in np.argsort(
        p[np.arange(10), given], kind="stable")]
    write_issue_csv(rows, tmp_path / "issues.csv")
    with open(tmp_path / "issues.csv") as f:
        back = list(csv.DictReader(f))
    assert list(back[0]) == ["rank", "index", "split", "path", "given", "suggested", "self_confidence", "margin",
                             "p_suggested", "accept"]
    assert back[0]["index"] == "1" and back[0]["suggested"] == "dog" and len(back) == 3
    write_issue_csv(everything, tmp_path / "quality.csv")
    with open(tmp_path / "quality.csv") as f:
        back = list(csv.DictReader(f))
    assert list(back[0])[-1] == "flagged" and len(back) == 10
    write_issue_csv([], tmp_path / "empty.csv")
    assert (tmp_path / "empty.csv").read_text().strip() == ",".join(list(back[0])[:-1])
    write_noise_csv(issues, classes, tmp_path / "noise.csv")
    lines = (tmp_path / "noise.csv").read_text().splitlines()
    nm = issues.noise_matrix
    assert lines == ["given\\true,cat,dog", f"cat,{nm[0, 0]:.6f},{nm[0, 1]:.6f}", f"dog,{nm[1, 0]:.6f},{nm[1, 1]:.6f}"]


def test_read_refs_formats_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data\.exclude file '.*nope\.csv' does not exist"):
        read_refs(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match=r"data\.relabel file '.*nope\.csv' does not exist"):
        read_refs(tmp_path / "nope.csv", relabel=True)
    f = tmp_path / "refs.csv"
    f.write_text("index,suggested\n3,b\n,a\n")  # an empty index is None
    assert read_refs(f) == [Ref(None, 3, None, "b"), Ref(None, None, None, "a")]
    f.write_text("path,split\n img1.png ,test\n")  # a path column alone is enough
    assert read_refs(f) == [Ref("test", None, "img1.png", None)]
    with pytest.raises(ValueError, match=r"data\.relabel file '.*refs\.csv' needs the columns 'accept' and "
                                         r"'suggested' \(a label_issues\.csv with an accept column filled in"):
        read_refs(f, relabel=True)
    f.write_text("index,accept\n1,yes\n")
    with pytest.raises(ValueError, match="needs the columns"):
        read_refs(f, relabel=True)
    f.write_text("index,suggested\n1,a\n")
    with pytest.raises(ValueError, match="needs the columns"):
        read_refs(f, relabel=True)
    f.write_text("index,suggested,accept\n")
    with pytest.raises(ValueError, match="needs the columns"):
        read_refs(f, relabel=True)
    f.write_text("index,split,suggested,accept\n1,train,a,Yes\n2,,b, x \n3,train,a,no\n4,train,a,\n")
    assert read_refs(f, relabel=True) == [Ref("train", 1, None, "a"), Ref(None, 2, None, "b")]
    f.write_text("index,split,suggested,accept\n1,train,,1\n")
    assert read_refs(f, relabel=True) == [Ref("train", 1, None, None)]
    f.write_text("index,split,path\n,train,\n")
    assert read_refs(f) == [Ref("train", None, None, None)]
    t = tmp_path / "list.txt"
    t.write_text("7\n")
    with pytest.raises(ValueError, match=r"data\.relabel file '.*list\.txt' is not a CSV with a header "
                                         r"\(index/path, suggested, accept\)"):
        read_refs(t, relabel=True)
    t.write_text("")
    assert read_refs(t) == []
    t.write_text("a/b:c.png\nval:12  # a comment\n\n  # only a comment\nx-y:3\n")
    assert read_refs(t) == [Ref(path="a/b:c.png"), Ref("val", 12), Ref(path="x-y:3")]


def test_apply_label_files_errors_and_notes(tmp_path):
    from foveal.data.labels import apply_label_files

    b = tiny_bundle(with_paths=True)
    assert apply_label_files(b, None, None) is b
    lst = tmp_path / "drop.txt"
    for line, msg in (("nope:1", r"data\.exclude '.*drop\.txt': split 'nope' is not one of train, test, val"),
                      ("0\n-1", None), ("20", r"index 20 is outside split 'train' \(20 images\); was the file written "
                                                r"for other data\?"),
                      ("val:4", r"index 4 is outside split 'val' \(4 images\)"),
                      ("other.png", r"data\.exclude '.*drop\.txt': 'other\.png' is neither an index nor the path of "
                                    r"an image of tiny")):
        lst.write_text(line + "\n")
        if msg is None:  # '-1' is no index: read as a path, which names no image
            with pytest.raises(ValueError, match="'-1' is neither"):
                apply_label_files(b, str(lst), None)
            continue
        with pytest.raises(ValueError, match=msg):
            apply_label_files(b, str(lst), None)
    lst.write_text("0\nval:3\nimg105.png\n")
    out = apply_label_files(b, str(lst), None)
    assert ids(out.splits["train"]) == list(range(1, 20)) and ids(out.splits["val"]) == [200, 201, 202]
    assert ids(out.splits["test"]) == [100 + i for i in range(10) if i != 5]
    assert out.splits["train"].paths == [f"img{i}.png" for i in range(1, 20)] and out.name == "tiny"
    assert out.problems == [f"data.exclude: 1 images of split '{k}' left out by '{lst}'" for k in ("train", "val", "test")]
    assert out.splits["train"].labels.dtype == torch.int64
    # relabel: by class name or class index; repeated rows count; unknown classes refused with the choices
    rel = tmp_path / "rel.csv"
    write_issues(rel, [{"rank": 1, "index": 0, "split": "train", "path": "", "given": "a", "suggested": "b", "accept": 1},
                       {"rank": 2, "index": 2, "split": "", "path": "", "given": "a", "suggested": "1", "accept": 1},
                       {"rank": 3, "index": 1, "split": "val", "path": "img201.png", "given": "b", "suggested": "0",
                        "accept": 1}])
    out = apply_label_files(b, None, str(rel))
    assert out.splits["train"].labels[:4].tolist() == [1, 1, 1, 1] and out.splits["val"].labels.tolist() == [0, 0, 0, 1]
    assert b.splits["train"].labels[:4].tolist() == [0, 1, 0, 1]  # the source's split is not modified
    assert out.splits["train"].paths == b.splits["train"].paths and out.splits["train"].images is b.splits[
        "train"].images
    assert out.problems == [f"data.relabel: 2 labels of split 'train' changed by '{rel}'",
                            f"data.relabel: 1 labels of split 'val' changed by '{rel}'"]
    for bad in ("2", "c", "-1"):
        write_issues(rel, [{"rank": 1, "index": 0, "split": "", "path": "", "given": "a", "suggested": bad,
                            "accept": 1}])
        with pytest.raises(ValueError, match=rf"data\.relabel '.*rel\.csv': suggested class '{bad}' is not one of a, b"):
            apply_label_files(b, None, str(rel))
    write_issues(rel, [{"rank": 1, "index": 3, "split": "", "path": "img4.png", "given": "a", "suggested": "a",
                        "accept": 1}])
    with pytest.raises(ValueError, match=r"data\.relabel '.*rel\.csv': row index 3 names 'img4\.png' but position 3 of "
                                         r"split 'train' is 'img3\.png'; check the file against this data"):
        apply_label_files(b, None, str(rel))
    # without a train split, indices without a split refer to the first split; groups travel along
    x = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    only = DataBundle("one", ["a", "b"], {"all": Split(x, torch.tensor([0, 0, 1]), ["p0", "p1", "p2"],
                                                       ["g0", "g1", "g2"])})
    write_issues(rel, [{"rank": 1, "index": 1, "split": "", "path": "", "given": "a", "suggested": "b", "accept": 1}])
    lst.write_text("2\n")
    out = apply_label_files(only, str(lst), str(rel))
    assert out.splits["all"].labels.tolist() == [0, 1] and out.splits["all"].groups == ["g0", "g1"]
    assert out.splits["all"].paths == ["p0", "p1"]


def test_prune_counts_with_small_diagonals_equal_cleanlab():
    """Raising a diagonal to min_per_class takes the difference evenly from the column's nonzero noise counts."""
    pytest.importorskip("cleanlab")
    from cleanlab.filter import _keep_at_least_n_per_class

    from foveal.data.labels import _prune_counts

    for cj in (np.array([[0, 3, 1], [2, 5, 0], [1, 0, 4]]), np.diag([0, 3]) + 1):
        for n in (1, 2, 3):
            got = _prune_counts(cj, n) if n != 1 else _prune_counts(cj)
            np.testing.assert_array_equal(got, _keep_at_least_n_per_class(cj.T, n), err_msg=f"{cj} {n}")
    np.testing.assert_array_equal(_prune_counts(np.array([[0, 3], [2, 5]])), [[1, 2], [2, 5]])
    # an uneven share leaves fractions: cleanlab 2.9 truncates them (astype(int)); here each row is rounded
    # keeping its total, so the result is within 1 of the real-valued matrix everywhere
    cj = np.array([[1, 4, 4, 0], [0, 0, 6, 2], [3, 1, 2, 0], [0, 5, 0, 0]])
    np.testing.assert_array_equal(_prune_counts(cj), _keep_at_least_n_per_class(cj.T, 1))
    for n in (2, 3):
        m = cj.T.astype(float)
        d = np.maximum(m.diagonal(), n) - m.diagonal()
        raw = np.clip(m - d / np.maximum(np.count_nonzero(m, axis=0) - 1.0, 1.0), 0, None)
        np.fill_diagonal(raw, np.maximum(cj.diagonal(), n))
        got = _prune_counts(cj, n)
        assert (np.abs(got - raw) < 1).all() and (got.sum(1) == raw.sum(1).round()).all(), (n, got, raw)
    np.testing.assert_array_equal(_prune_counts(cj, 2), [[2, 0, 3, 0], [4, 2, 1, 3], [4, 4, 2, 0], [0, 0, 0, 2]])


def test_prune_skips_single_image_classes_only_and_flags_pairs():
    from foveal.data.labels import prune_by_noise_rate

    given = np.array([0, 0, 0, 0, 1, 2, 2, 2, 3, 3])
    p = np.array([[0.9, 0.05, 0.05, 0], [0.1, 0.1, 0.8, 0], [0.2, 0.1, 0.7, 0], [0.8, 0.1, 0.1, 0],
                  [0.1, 0.1, 0.8, 0], [0.1, 0.1, 0.8, 0], [0.05, 0.05, 0.9, 0], [0.7, 0.2, 0.1, 0],
                  [0.8, 0, 0, 0.2], [0.1, 0, 0, 0.9]])
    cj = np.array([[2, 0, 2, 0], [0, 1, 1, 0], [1, 0, 2, 0], [1, 0, 0, 1]])
    # class 1's single image (argmax 2) stays unflagged; class 3's two images: the one closer to class 0 is flagged
    np.testing.assert_array_equal(np.flatnonzero(prune_by_noise_rate(given, p, cj)), [1, 2, 7, 8])


def test_confident_joint_counts_are_integers_and_the_threshold_slack_is_inclusive():
    from foveal.data.labels import EPS, class_thresholds

    given = np.array([0, 0, 1, 1])
    p = np.array([[0.7, 0.3], [0.5, 0.5], [0.45, 0.55], [0.35, 0.65]])
    assert confident_joint(given, p, calibrate=False).dtype == np.int64
    t0 = class_thresholds(given, p)[0]
    q = p.copy()
    q[2] = [t0 - EPS, 1 - (t0 - EPS)]  # exactly at the slack's edge: still clears
    assert confident_joint(given, q, calibrate=False)[1, 0] == 1


def test_ties_rank_by_position_beyond_insertion_sort_sizes():
    given = np.array([0] * 40 + [1] * 10)
    p = np.array([[0.2, 0.8] if i % 2 else [0.9, 0.1] for i in range(40)] + [[0.3, 0.7]] * 10)
    issues = confident_learning(given, p)
    np.testing.assert_array_equal(issues.ranked, np.arange(1, 40, 2))  # 20 equal scores, in index order
    rows = issue_rows(issues, ["a", "b"], "train", everything=True)
    assert [r["index"] for r in rows[:20]] == list(range(1, 40, 2))


def test_issue_rows_round_to_six_decimals_and_a_single_row_csv(tmp_path):
    given = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([[0.9, 0.1], [0.1234567, 0.8765433], [0.9, 0.1], [0.3, 0.7], [0.3, 0.7], [0.3, 0.7]])
    issues = confident_learning(given, p)
    row = issue_rows(issues, ["a", "b"], "train")[0]
    assert row["index"] == 1 and row["self_confidence"] == 0.123457 and row["p_suggested"] == 0.876543
    assert row["margin"] == round((0.1234567 - 0.8765433 + 1) / 2, 6)
    single = issue_rows(issues, ["a", "b"], "train", everything=True)[:1]
    write_issue_csv(single, tmp_path / "one.csv")
    assert (tmp_path / "one.csv").read_text().splitlines()[0].endswith(",flagged")


def test_apply_label_files_default_split_and_both_files(tmp_path):
    from foveal.data.labels import apply_label_files

    b = tiny_bundle(with_paths=False)
    b = DataBundle("tiny", ["a", "b"], {"test": b.splits["test"], "val": b.splits["val"], "train": b.splits["train"]})
    lst = tmp_path / "drop.txt"
    lst.write_text("1\nval:0\nval:1\nval:2\n")  # a bare index is a position in 'train', wherever it is listed
    rel = tmp_path / "rel.csv"
    write_issues(rel, [{"rank": 1, "index": 0, "split": "", "path": "", "given": "a", "suggested": "b", "accept": 1}])
    out = apply_label_files(b, str(lst), str(rel))
    assert out.classes == ["a", "b"] and list(out.splits) == ["test", "val", "train"]
    assert ids(out.splits["train"]) == [0] + list(range(2, 20)) and out.splits["train"].labels[0] == 1
    assert ids(out.splits["val"]) == [203] and ids(out.splits["test"]) == list(range(100, 110))
    assert out.splits["val"].labels.dtype == torch.int64
    assert out.problems == [f"data.relabel: 1 labels of split 'train' changed by '{rel}'",
                            f"data.exclude: 1 images of split 'train' left out by '{lst}'",
                            f"data.exclude: 3 images of split 'val' left out by '{lst}'"]
    lst.write_text("val:0\nval:1\nval:2\nval:3\n")
    with pytest.raises(ValueError, match=r"names every one of the 4 images of split 'val'"):
        apply_label_files(b, str(lst), None)
