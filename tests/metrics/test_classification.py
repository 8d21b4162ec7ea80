import math

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


def _meter_batches(seed: int, K: int, N: int = 300, G: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (N,), generator=g)
    logits = torch.randn(N, K, generator=g) + 1.5 * torch.nn.functional.one_hot(y, K)
    groups = torch.randint(0, G, (N,), generator=g) if G else None
    return logits, y, groups


def test_meter_state_shapes_dtypes_and_device():
    m = ConfusionMeter(4, device="meta")
    assert m.cm.device.type == m.sums.device.type == m.groups.device.type == "meta"
    m = ConfusionMeter(4)
    assert m.cm.shape == (4, 4) and m.cm.dtype == torch.int64
    assert m.sums.shape == (3,) and m.sums.dtype == torch.float64  # loss sums in float64: no drift over an epoch
    assert m.groups.shape == (0, 2) and len(m.state()) == 2 and "worst_group_accuracy" not in m.compute()
    m = ConfusionMeter(4, num_groups=3)
    assert m.groups.shape == (3, 2) and m.groups.dtype == torch.int64
    state = m.state()
    assert len(state) == 3 and state[0] is m.cm and state[1] is m.sums and state[2] is m.groups


@pytest.mark.parametrize("K,topk,key", [(5, 5, "top5"), (4, 5, None), (6, 3, "top3"), (3, 3, "top3")])
def test_topk_only_when_there_are_enough_classes(K, topk, key):
    logits, y, _ = _meter_batches(K, K)
    m = ConfusionMeter(K, topk=topk)
    m.update(logits, y)
    out = m.compute()
    assert [k for k in out if k.startswith("top")] == ([key] if key else [])
    if key:
        assert out[key] == pytest.approx(top_k_accuracy_score(y.numpy(), logits.numpy(), k=topk, labels=list(range(K))))


def test_loss_soft_targets_and_class_names():
    K = 4
    logits, y, _ = _meter_batches(1, K)
    m = ConfusionMeter(K)
    loss = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    for i in range(0, len(y), 100):
        soft = torch.nn.functional.one_hot(y[i:i + 100], K).float() * 0.7 + 0.075  # (B, K) argmax = y
        m.update(logits[i:i + 100], soft, loss_sum=loss[i:i + 100].sum())
    out = m.compute(["cat", "dog", "eel", "fox"])
    assert out["loss"] == pytest.approx(loss.double().mean().item(), rel=1e-6)
    assert out["classes"] == ["cat", "dog", "eel", "fox"] and list(out["per_class"]) == out["classes"]
    assert out["support"] == len(y)
    assert out["per_class"]["eel"]["support"] == int((y == 2).sum())
    assert out["accuracy"] == pytest.approx((logits.argmax(1) == y).double().mean().item())


def test_empty_meter_gives_nan_not_an_error():
    out = ConfusionMeter(5, num_groups=2).compute()
    for k in ("loss", "top5", "accuracy", "balanced_accuracy", "worst_group_accuracy"):
        assert math.isnan(out[k]), k
    for k in ("macro_precision", "macro_recall", "macro_f1", "weighted_precision", "weighted_recall", "weighted_f1"):
        assert out[k] == 0.0, k
    assert out["support"] == 0


def test_worst_group_accuracy_skips_empty_groups():
    K, G = 3, 4
    logits, y, groups = _meter_batches(2, K, G=G)
    groups[groups == 3] = 0  # group 3 has no image
    m = ConfusionMeter(K, num_groups=G)
    m.update(logits, y, groups=groups)
    hit = (logits.argmax(1) == y).double()
    acc = [hit[groups == k].mean().item() for k in range(3)]
    assert m.compute()["worst_group_accuracy"] == pytest.approx(min(acc))
    assert torch.equal(m.groups[:, 1], torch.bincount(groups, minlength=G))


def test_report_edge_cases_against_scikit_learn():
    from foveal.metrics.classification import report_from_confusion

    # one sample: accuracy is defined (1 or 0), and a class of support 1 counts in balanced accuracy
    for pred, acc in ((0, 1.0), (1, 0.0)):
        cm = torch.zeros(3, 3, dtype=torch.long)
        cm[0, pred] = 1
        r = report_from_confusion(cm)
        assert r["accuracy"] == acc and r["balanced_accuracy"] == acc and r["support"] == 1
        assert r["weighted_recall"] == acc
    y = np.array([0, 0, 0, 1, 2, 2])  # class 1 has support 1
    p = np.array([0, 1, 0, 1, 2, 0])
    r = report_from_confusion(torch.tensor(confusion_matrix(y, p)))
    assert r["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))
    assert r["weighted_f1"] == pytest.approx(classification_report(y, p, output_dict=True)["weighted avg"]["f1-score"])


def test_format_report_matches_scikit_learn_numbers_and_layout():
    from foveal.metrics.classification import format_report

    K = 3
    logits, y, _ = _meter_batches(3, K)
    m = ConfusionMeter(K, topk=2)
    m.update(logits, y, loss_sum=torch.tensor(123.0))
    names = ["a_rather_long_class_name", "b", "c"]
    out = m.compute(names)
    text = format_report(out)
    lines = text.split("\n")
    width = len(names[0]) + 2
    assert lines[0] == " " * width + " " + " ".join(f"{h:>9}" for h in ("precision", "recall", "f1", "support"))
    ref = classification_report(y.numpy(), logits.argmax(1).numpy(), target_names=names, digits=4, output_dict=True)
    for i, c in enumerate(names):
        r = ref[c]
        assert lines[1 + i] == (f"{c:>{width}} {r['precision']:9.4f} {r['recall']:9.4f} {r['f1-score']:9.4f} "
                                f"{int(r['support']):9d}")
    assert lines[1 + K] == ""
    for j, avg in enumerate(("macro", "weighted")):
        r = ref[f"{avg} avg"]
        assert lines[2 + K + j] == (f"{avg + ' avg':>{width}} {r['precision']:9.4f} {r['recall']:9.4f} "
                                    f"{r['f1-score']:9.4f} {len(y):9d}")
    assert lines[4 + K] == "" and len(lines) == 6 + K
    assert lines[-1] == (f"accuracy {ref['accuracy']:.4f}   balanced accuracy {out['balanced_accuracy']:.4f}"
                         f"   loss {123.0 / len(y):.4f}")
    # short names: the column is 12 wide; top-5 is printed when present
    out5 = ConfusionMeter(6).compute()
    out5.update({"accuracy": 0.5, "balanced_accuracy": 0.25, "top5": 0.75})
    text5 = format_report(out5).split("\n")
    assert text5[0].startswith(" " * 13 + "precision") and text5[1].startswith(" " * 11 + "0 ")
    assert text5[-1] == "accuracy 0.5000   balanced accuracy 0.2500   top-5 0.7500   loss nan"
    del out5["loss"], out5["top5"]
    assert format_report(out5).split("\n")[-1] == "accuracy 0.5000   balanced accuracy 0.2500"
