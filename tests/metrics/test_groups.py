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
