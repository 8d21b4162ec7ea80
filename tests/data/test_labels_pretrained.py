"""`foveal check --labels --pretrained WEIGHTS`: linear heads on a frozen backbone's features find flipped labels.

No published weights can be fetched here, so the backbone is our own: a LeNet-5 trained for 4 epochs at 64 px on
300 of scikit-learn's digits (60 of them carved off as its test split: 0.70 accuracy there), saved as a run
folder and passed like any `--pretrained` weights. The checks run on the other 1,497 digits, which it never saw.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from foveal.config import DataConfig, RunConfig, apply_overrides
from foveal.data.bundle import DataBundle, Split
from foveal.data.sources import load_digits
from tests.data.test_labels import digits_train_test

SIDE = 64  # the backbone's input size: the check loads the images at it, not at the digits' own 8 px
SEEN = 300  # digits the backbone trained on (a seeded permutation's head); the checks look at the rest


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """The run folder of a LeNet-5 trained on SEEN digits at SIDE px (about 3 s on one core)."""
    from foveal.tasks.fit import fit

    s = load_digits(DataConfig(), 8).splits["all"]
    seen = torch.from_numpy(np.random.default_rng(0).permutation(len(s)))[:SEEN]
    data = DataBundle("digits", [str(c) for c in range(10)], {"all": Split(s.images.load()[seen], s.labels[seen])})
    out = tmp_path_factory.mktemp("backbone")
    cfg = apply_overrides(RunConfig(), {"model.name": "lenet5", "data.img_size": SIDE, "train.epochs": 4,
                                        "train.out_dir": str(out), "train.name": "lenet5-digits",
                                        "train.progress": False, "train.report": False, "train.logger": "none"})
    result = fit(cfg, data=data, log=lambda m: None)
    assert result.test_metrics["accuracy"] < 0.9  # partly wrong: a weak backbone, not an oracle (measured 0.70)
    return out / "lenet5-digits"


def flipped_unseen(seed: int = 0):
    """(images, true labels, given labels): the digits the backbone never saw, 10% of the labels flipped at random."""
    s = load_digits(DataConfig(), 8).splits["all"]
    rest = torch.from_numpy(np.random.default_rng(0).permutation(len(s)))[SEEN:]
    y = s.labels[rest].numpy()
    rng = np.random.default_rng(seed)
    given = y.copy()
    idx = rng.choice(len(y), len(y) // 10, replace=False)
    given[idx] = (y[idx] + rng.integers(1, 10, len(idx))) % 10
    return s.images.load()[rest], y, given


def precision_recall(flagged: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    tp = (flagged & truth).sum()
    return tp / max(flagged.sum(), 1), tp / truth.sum()


def test_pretrained_features_find_flipped_labels(backbone):
    """4 folds of linear heads on the backbone's features of 1,497 unseen digits, 149 labels flipped. Measured
    (seed 0): 147 flagged, precision 0.871, recall 0.859, out-of-fold accuracy against the true labels 0.937
    (flip seeds 1, 2: 0.868 / 0.879, 0.842 / 0.859); about 4 s on one core. The floors leave a margin."""
    from foveal.tasks.labels import find_label_issues

    x, y, given = flipped_unseen()
    check = find_label_issues(x, given, pretrained=str(backbone), device="cpu", log=lambda m: None)
    p, r = precision_recall(check.issues.mask, given != y)
    assert p >= 0.75 and r >= 0.75, (check.issues.mask.sum(), p, r)
    accuracy = (check.issues.probs.argmax(1) == y).mean()
    assert 0.85 <= accuracy < 0.99, accuracy  # the heads get some digits wrong too
    assert check.images.shape == (len(y), 1, SIDE, SIDE)  # loaded once at the weights' size, for the page
    assert check.method == f"4-fold cross-validation on all: a linear head per fold on the frozen features of lenet5 " \
                           f"({backbone})"
    assert check.model["pretrained"] == str(backbone) and check.model["model"] == "lenet5"
    assert check.model["img_size"] == SIDE and check.model["features"] == 84  # LeNet-5's pre-logit width
    again = find_label_issues(x, given, pretrained=str(backbone), device="cpu", log=lambda m: None)
    np.testing.assert_array_equal(again.issues.probs, check.issues.probs)  # seeded folds, convex heads


def test_pretrained_features_judge_a_held_out_split(backbone):
    """A test split (497 digits at 20 px, 10% flipped) judged by one linear head on the train split's features
    (1,300 images): the images are resized to the weights' 64 px. Measured: 54 flagged, precision 0.852,
    recall 0.939 (some of the train split's digits are among those the backbone saw: a margin, not a measure)."""
    from foveal.tasks.labels import find_label_issues

    b, y, given = digits_train_test("flip10")
    check = find_label_issues(b, split="test", pretrained=str(backbone), device="cpu", log=lambda m: None)
    assert check.method.startswith("held out: one linear head trained on train (1,300 images) on the frozen "
                                   "features of lenet5")
    p, r = precision_recall(check.issues.mask, given != y)
    assert p >= 0.7 and r >= 0.8, (check.issues.mask.sum(), p, r)
    assert check.images.shape == (len(y), 1, SIDE, SIDE)


def test_check_command_with_pretrained_weights(backbone, tmp_path, capsys):
    """`foveal check digits --labels --pretrained RUN`: the same files as without it, check.json names the
    weights, and the page's thumbnails are the images at the weights' 64 px (the from-scratch check loads
    digits at 8 px and enlarges them to 96)."""
    from foveal.cli.main import main

    out = tmp_path / "chk"
    assert main(["check", "digits", "--labels", "--pretrained", str(backbone), "--folds", "2", "--device", "cpu",
                 "--out", str(out)]) == 0
    labels = json.loads((out / "check.json").read_text())["labels"]
    assert labels["probabilities"].startswith("2-fold cross-validation on all: a linear head per fold on the frozen "
                                              f"features of lenet5 ({backbone})")
    assert labels["model"]["pretrained"] == str(backbone) and labels["model"]["origin"] == "foveal weights of lenet5"
    assert labels["model"]["img_size"] == SIDE and len(labels["model"]["mean"]) == 1
    with open(out / "label_quality.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1797 and sum(int(r["flagged"]) for r in rows) == labels["flagged"]
    assert (out / "noise_matrix.csv").is_file() and (out / "label_issues.csv").is_file()
    page = (out / "label_issues.html").read_text()
    thumbs = re.findall(r'<figure class="issue".*?src="data:image/png;base64,([^"]+)"', page)
    assert len(thumbs) == min(60, labels["flagged"]) > 0
    assert {Image.open(io.BytesIO(base64.b64decode(t))).size for t in thumbs} == {(SIDE, SIDE)}
    assert "label check of split 'all'" in capsys.readouterr().out


@pytest.mark.parametrize("weights,says", [
    ("{tmp}/missing.safetensors", "no such weights file or run folder"),
    ("{tmp}/notes.safetensors", "is not a valid safetensors file"),
    ("{tmp}", "has no best.safetensors or last.safetensors"),
    ("imagenet", "names published weights; say which architecture they are for with --model"),
])
def test_bad_pretrained_value_is_a_clear_error(weights, says, tmp_path, capsys):
    from foveal.cli.main import main

    (tmp_path / "notes.safetensors").write_text("not weights")
    weights = weights.format(tmp=tmp_path)
    assert main(["check", "digits", "--labels", "--pretrained", weights, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"foveal check: error: --pretrained '{weights}'" in err and says in err, err
    assert not (tmp_path / "o").exists()  # refused before any image is loaded or file written


def test_from_scratch_check_names_its_model_and_no_weights():
    """Without --pretrained the check is what it was (bench/bench_labels.py and tests/data/test_labels.py hold its
    numbers); check.json now also names the model that was trained."""
    from foveal.tasks.labels import find_label_issues

    s = load_digits(DataConfig(), 8).splits["all"]
    check = find_label_issues(s.images.load()[:400], s.labels[:400], folds=2, epochs=1, log=lambda m: None)
    assert check.model == {"model": "lenet5_modern", "pretrained": None, "trained": "from scratch, one per fold"}
    assert check.images.shape[-1] == 8 and check.method.startswith("2-fold cross-validation on all: lenet5_modern")
