"""Per-group metrics against Fairlearn's MetricFrame and fairness differences on the same predictions."""

import numpy as np
import pandas as pd
import pytest
import torch

from foveal.metrics.groups import group_report, parse_group

fairlearn = pytest.importorskip("fairlearn.metrics")
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score  # noqa: E402


def _predictions(seed: int, K: int, N: int = 600):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (N,), generator=g)
    sites = np.array(["A", "B", "C"])[torch.randint(0, 3, (N,), generator=g).numpy()]
    sexes = np.array(["F", "M"])[torch.randint(0, 2, (N,), generator=g).numpy()]
    boost = torch.tensor([{"A": 2.5, "B": 1.0, "C": 0.2}[s] for s in sites])  # the model is worse on site C
    logits = torch.randn(N, K, generator=g) + boost[:, None] * torch.nn.functional.one_hot(y, K)
    groups = [f"site={a}|sex={b}" for a, b in zip(sites, sexes)]
    return logits, y, groups, sites, sexes


def test_parse_group():
    assert parse_group("site=A|sex=F") == {"site": "A", "sex": "F"}
    assert parse_group("scanner-2") == {"group": "scanner-2"}
    assert parse_group("") == {}


@pytest.mark.parametrize("K", [2, 4])
def test_group_metrics_equal_fairlearn(K):
    logits, y, groups, sites, sexes = _predictions(K, K)
    classes = [f"c{i}" for i in range(K)]
    m = group_report(logits, y, groups, classes, train_groups=groups[:1])
    yt, yp = y.numpy(), logits.argmax(1).numpy()
    fns = {"accuracy": accuracy_score, "balanced_accuracy": balanced_accuracy_score,
           "macro_f1": lambda a, b: f1_score(a, b, average="macro", zero_division=0)}
    for name, feature in (("groups", pd.Series(groups, name="group")), ("site", pd.Series(sites, name="site")),
                          ("sex", pd.Series(sexes, name="sex"))):
        frame = fairlearn.MetricFrame(metrics=fns, y_true=yt, y_pred=yp, sensitive_features=feature)
        ours = m["groups"] if name == "groups" else m["attributes"][name]
        assert set(ours) == set(frame.by_group.index)
        for key, row in frame.by_group.iterrows():
            for metric in fns:
                assert ours[key][metric] == pytest.approx(row[metric]), (name, key, metric)
            assert ours[key]["n"] == int((feature == key).sum())
            sel = (feature == key).to_numpy()
            rec = recall_score(yt[sel], yp[sel], labels=list(range(K)), average=None, zero_division=0)
            for c in range(K):
                if (yt[sel] == c).any():
                    assert ours[key]["recall"][classes[c]] == pytest.approx(rec[c])
    acc = fairlearn.MetricFrame(metrics=accuracy_score, y_true=yt, y_pred=yp, sensitive_features=groups).by_group
    assert m["worst_group_accuracy"] == pytest.approx(acc.min())
    assert m["worst_group"] == acc.idxmin() and m["worst_group"].startswith("site=C")
    assert m["accuracy_gap"] == pytest.approx(acc.max() - acc.min())
    assert sum(not r["in_training"] for r in m["groups"].values()) == len(m["groups"]) - 1
    if K == 2:
        for name, feature in (("group", groups), ("site", sites), ("sex", sexes)):
            f = m["fairness"][name]
            assert f["demographic_parity_difference"] == pytest.approx(
                fairlearn.demographic_parity_difference(yt, yp, sensitive_features=feature))
            assert f["equalized_odds_difference"] == pytest.approx(
                fairlearn.equalized_odds_difference(yt, yp, sensitive_features=feature))
    else:
        assert "fairness" not in m


def test_parse_group_edge_cases():
    assert parse_group(" site = A | sex=F ") == {"site": "A", "sex": "F"}
    assert parse_group("a=b=c") == {"a": "b=c"}  # the first '=' splits key from value
    assert parse_group("x||y=1|") == {"group": "x", "y": "1"}


def test_subset_metrics_with_absent_and_predicted_only_classes():
    """Macro-F1 averages the classes present in the labels or the predictions, as scikit-learn's
    f1_score(average='macro') on the subset; per-class recall lists the classes in the labels."""
    from foveal.metrics.calibration import reliability
    from foveal.metrics.groups import subset_metrics

    classes = ["a", "b", "c", "d", "e"]
    y = torch.tensor([0, 0, 1, 1, 1, 0, 1])
    pred = torch.tensor([0, 2, 1, 1, 0, 0, 1])  # class 2 predicted, never given; classes 3, 4 nowhere
    logits = torch.nn.functional.one_hot(pred, 5).double() * 2.0 + 0.1 * torch.arange(7.0)[:, None] / 7
    m = subset_metrics(logits, y, classes)
    assert m["n"] == 7
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert abs(m["macro_f1"] - f1_score(y, pred, average="macro")) < 1e-12
    assert m["recall"] == pytest.approx({"a": 2 / 3, "b": 3 / 4})
    assert m["ece"] == reliability(logits, y)["ece"]
    # a subset holding only the first class: the confusion matrix is still K x K
    m = subset_metrics(logits[:1], y[:1], classes)
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0 and m["recall"] == {"a": 1.0}


def test_binary_gaps_with_groups_lacking_positives_or_negatives():
    from foveal.metrics.groups import _binary_gaps

    y = np.array([0, 0, 0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1])
    p = np.array([1, 0, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0])
    g = np.array(["a"] * 3 + ["b"] * 5 + ["c"] * 4 + ["d"] * 2)  # a: no positives; d: no negatives
    got = _binary_gaps(torch.tensor(p), torch.tensor(y), list(g))
    assert got["demographic_parity_difference"] == pytest.approx(
        fairlearn.demographic_parity_difference(y, p, sensitive_features=g))
    assert got["equalized_odds_difference"] == pytest.approx(
        fairlearn.equalized_odds_difference(y, p, sensitive_features=g))
    none = _binary_gaps(torch.tensor(p), torch.tensor(y), [None] * len(y))  # nobody has the attribute
    assert all(np.isnan(v) for v in none.values())
    # images without the attribute are left out, not counted as a group of their own
    keys = list(g[:12]) + [None, None]
    part = _binary_gaps(torch.tensor(p), torch.tensor(y), keys)
    assert part["equalized_odds_difference"] == pytest.approx(
        fairlearn.equalized_odds_difference(y[:12], p[:12], sensitive_features=g[:12]))


def test_group_report_refuses_mismatched_groups_and_formats_a_table():
    from foveal.metrics.groups import add_group_metrics, format_groups

    logits, y, groups, _, _ = _predictions(5, 3, N=60)
    with pytest.raises(ValueError, match="group_report: 59 groups for 60 predictions"):
        group_report(logits, y, groups[:-1], ["a", "b", "c"])
    m = group_report(logits, y, groups, ["a", "b", "c"])  # without train_groups: no in_training marks
    assert all("in_training" not in r for r in m["groups"].values())
    metrics = {"accuracy": 0.5}
    assert add_group_metrics(metrics, logits, y, None, ["a", "b", "c"]) is None and metrics == {"accuracy": 0.5}
    assert add_group_metrics(metrics, logits[:58], y[:58], groups, ["a", "b", "c"]) is None
    assert metrics == {"accuracy": 0.5, "groups_skipped": "2 images could not be decoded"}
    metrics = {"accuracy": 0.5}
    text = add_group_metrics(metrics, logits, y, groups, ["a", "b", "c"], train_groups=groups[:1])
    assert metrics["accuracy"] == 0.5 and metrics["groups"] == group_report(
        logits, y, groups, ["a", "b", "c"], groups[:1])["groups"]
    assert text == format_groups(metrics)
    lines = text.split("\n")
    w = max(len(g) for g in metrics["groups"]) + 2
    assert lines[0] == f"{'group':<{w}} {'n':>7} {'acc':>7} {'bal_acc':>7} {'f1':>7} {'ece':>7}"
    for line, (g, r) in zip(lines[1:], metrics["groups"].items()):
        mark = "" if g == groups[0] else "  (not in training)"
        assert line == (f"{g:<{w}} {r['n']:7d} {r['accuracy']:7.4f} {r['balanced_accuracy']:7.4f} "
                        f"{r['macro_f1']:7.4f} {r['ece']:7.4f}{mark}")
    assert lines[-1] == (f"worst group {metrics['worst_group']} accuracy {metrics['worst_group_accuracy']:.4f}; "
                         f"largest gap {metrics['accuracy_gap']:.4f}")
    assert len(lines) == len(metrics["groups"]) + 2
    short = format_groups({"groups": {"A": metrics["groups"][groups[0]]}, "worst_group": "A",
                           "worst_group_accuracy": 0.5, "accuracy_gap": 0.0})
    assert short.split("\n")[0].startswith("group" + " " * 7 + " " * 7 + "n ")  # the column is at least 12 wide
    assert short.split("\n")[1].startswith("A" + " " * 11 + " ") and "(not" not in short
    # without train_groups no row carries the in_training flag, and none is marked
    assert "(not in training)" not in format_groups(group_report(logits, y, groups, ["a", "b", "c"]))
