import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, classification_report, confusion_matrix, top_k_accuracy_score

from foveal.metrics import ConfusionMeter


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_scikit_learn(seed):
    g = torch.Generator().manual_seed(seed)
    K, N = 7, 500
    y = torch.randint(0, K, (N,), generator=g)
    y[y == 6] = 5  # class 6 never occurs: zero-support row, as in real data
    logits = torch.randn(N, K, generator=g) + 2.0 * torch.nn.functional.one_hot(y, K)
    meter = ConfusionMeter(K)
    for i in range(0, N, 64):  # batched accumulation, as in training
        meter.update(logits[i:i + 64], y[i:i + 64])
    m = meter.compute()
    pred = logits.argmax(1).numpy()
    ref = classification_report(y.numpy(), pred, labels=list(range(K)), output_dict=True, zero_division=0)
    assert np.array_equal(np.array(m["confusion_matrix"]), confusion_matrix(y.numpy(), pred, labels=list(range(K))))
    assert m["accuracy"] == pytest.approx(ref["accuracy"])
    for avg in ("macro", "weighted"):
        for k in ("precision", "recall", "f1"):
            assert m[f"{avg}_{k}"] == pytest.approx(ref[f"{avg} avg"][f"{k}-score" if k == "f1" else k])
    for c in range(K):
        for k in ("precision", "recall", "f1"):
            assert m["per_class"][str(c)][k] == pytest.approx(ref[str(c)][f"{k}-score" if k == "f1" else k])
        assert m["per_class"][str(c)]["support"] == ref[str(c)]["support"]
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y.numpy(), pred))
    assert m["top5"] == pytest.approx(top_k_accuracy_score(y.numpy(), logits.numpy(), k=5, labels=list(range(K))))
