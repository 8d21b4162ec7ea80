"""The Python API on numpy arrays: fit(x, y) then predict / predict_proba / evaluate / embed on x.

The core check: for every accepted layout, dtype and channel count, the uint8 pixels the model
is trained on (after the run builder's `prepare_data`) are the very pixels `predict` feeds it for the
same array, so predicting on the fitted arrays is never a different input.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

import foveal
import foveal.training.build as build_mod
from foveal.data.arrays import to_images_u8
from foveal.data.datasets import from_arrays
from foveal.tasks.inference import Predictor

SETTINGS = dict(img_size=20, epochs=2, device="cpu", progress=False)  # 20: lenet5's smallest input
FLOOR = 0.5  # accuracy on the training arrays after 2 epochs (chance: 0.1); measured 0.85
FLOOR_1 = 0.4  # after 1 epoch, for the per-variant fits; measured 0.6-0.7
TINT = np.array([1.0, 0.8, 0.6])  # a colour cast, so RGB -> gray is not the identity


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as floats in [0, 1], the case the bug was reported on."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images / 16, d.target


@pytest.fixture(scope="module", autouse=True)
def no_report():
    """The HTML report takes half of each tiny fit and is tested on its own (tests/report)."""
    import foveal.tasks.reporting

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(foveal.tasks.reporting, "write_run_report", lambda result: None)
        yield


@pytest.fixture(scope="module")
def clf(digits, tmp_path_factory) -> foveal.Classifier:
    x, y = digits
    return foveal.Classifier("lenet5", out_dir=str(tmp_path_factory.mktemp("runs")), **SETTINGS).fit(x, y)


def accuracy(pred: list, y: np.ndarray) -> float:
    return float((np.array(pred) == y).mean())  # int labels predict ints (classes_ holds the label values)


def rows(x: torch.Tensor) -> Counter:
    """The images of a (N, C, H, W) tensor as a multiset of their bytes (splits reorder them)."""
    return Counter(bytes(img.contiguous().numpy()) for img in x)


VARIANTS = {  # name: (x in [0, 1], (N, 8, 8) -> the array given to fit and predict, extra settings)
    "float01 (N,H,W)": (lambda x: x, {}),
    "float01 (N,H,W,1)": (lambda x: x[..., None], {}),
    "float01 (N,1,H,W)": (lambda x: x[:, None], {}),
    "uint8 0..255": (lambda x: (x * 255).round().astype(np.uint8), {}),
    "float 0..255": (lambda x: x * 255, {}),
    "RGB into 1-channel model": (lambda x: x[..., None] * TINT, {"in_chans": 1}),
    "gray into 3-channel model": (lambda x: x, {"in_chans": 3}),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_fit_then_predict_sees_the_fitted_pixels(name, digits, tmp_path, monkeypatch):
    """fit(x, y) then predict(x): the model gets at predict time the uint8 images it was trained
    on (all splits together, as a multiset), and gets most of them right."""
    make, extra = VARIANTS[name]
    x, y = make(digits[0]), digits[1]
    prepared, fed = [], []
    real_prepare, real_probs = build_mod.prepare_data, Predictor.probabilities

    def spy_prepare(*args, **kw):  # what the trainer trains on: after match_channels and match_size
        prepared.append(real_prepare(*args, **kw))
        return prepared[-1]

    def spy_probs(self, images_u8, *args, **kw):  # what predict feeds the model
        fed.append(images_u8)
        return real_probs(self, images_u8, *args, **kw)

    monkeypatch.setattr(build_mod, "prepare_data", spy_prepare)
    monkeypatch.setattr(Predictor, "probabilities", spy_probs)
    clf = foveal.Classifier("lenet5", out_dir=str(tmp_path), **{**SETTINGS, "epochs": 1}, **extra).fit(x, y)
    pred = clf.predict(x)

    bundle, cfg = prepared[0]
    trained = torch.cat([s.images.load() for s in bundle.splits.values()])
    assert fed[0].dtype == torch.uint8 and fed[0].shape == (len(y), cfg.data.in_chans, 20, 20)
    assert cfg.data.in_chans == extra.get("in_chans", 1)
    assert rows(fed[0]) == rows(trained)  # the same uint8 images, fit time and predict time
    assert accuracy(pred, y) > FLOOR_1, f"{name}: accuracy {accuracy(pred, y):.3f} on the training arrays"


def test_every_layout_and_dtype_gives_one_input(clf, digits):
    """Predicting with any accepted form of the fitted images gives the fitted model's probabilities."""
    x = digits[0]
    ref = clf.predict_proba(x)
    for name, (make, extra) in VARIANTS.items():
        if not extra:  # same gray pixels; the channel-converting variants are checked just below
            assert np.array_equal(clf.predict_proba(make(x)), ref), name
    assert np.array_equal(clf.predict_proba(torch.from_numpy(x[:, None].astype(np.float32))), ref)
    gray_as_rgb = np.repeat(x[..., None], 3, axis=-1)  # luma of (v, v, v) is v
    assert np.array_equal(clf.predict_proba(gray_as_rgb), ref)
    rgba = np.concatenate([gray_as_rgb, np.ones_like(x[..., None])], axis=-1)  # alpha dropped
    assert np.array_equal(clf.predict_proba(rgba), ref)


def test_predict_proba_embed_and_topk(clf, digits):
    x = digits[0][:50]
    proba = clf.predict_proba(x)
    assert proba.shape == (50, 10) and np.allclose(proba.sum(1), 1, atol=1e-5)
    emb = clf.embed(x)
    assert emb.ndim == 2 and emb.shape[0] == 50 and emb.shape[1] > 0 and np.isfinite(emb).all()
    top = clf.predict(x, topk=3)
    assert [r["class"] for r in top] == clf.predict(x) and all(len(r["top"]) == 3 for r in top)


def test_evaluate_arrays_matches_predict_and_named_dataset(clf, digits):
    x, y = digits
    metrics = clf.evaluate(x, y)
    assert metrics["accuracy"] > FLOOR
    assert metrics["accuracy"] == pytest.approx(accuracy(clf.predict(x), y))
    assert metrics["support"] == len(y) and metrics["split"] == "arrays"
    assert clf.evaluate(x, y.astype(str))["accuracy"] == metrics["accuracy"]  # labels by class name
    named = clf.evaluate("digits")  # the same images, loaded by the dataset loader
    assert set(named) == set(metrics) and named["accuracy"] == pytest.approx(metrics["accuracy"])


def test_string_labels_round_trip(digits, tmp_path):
    x, y = digits[0][:600], digits[1][:600]
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])[y]
    clf = foveal.Classifier("lenet5", out_dir=str(tmp_path), **SETTINGS).fit(x, names)
    assert clf.classes_ == sorted(set(names))
    assert clf.evaluate(x, names)["accuracy"] == pytest.approx(float((np.array(clf.predict(x)) == names).mean()))


X = np.random.default_rng(0).random((4, 8, 8))
BAD = [
    ("negative floats", X - 0.5, r"found range \[-0\.\d+, 0\.\d+\]"),
    ("floats above 255", X * 300, r"within \[0, 1\] or \[0, 255\], found range"),
    ("NaN", np.where(X > 0.5, np.nan, X), r"finite.*\d+ NaN"),
    ("ints above 255", (X * 300).astype(np.int64), r"0\.\.255, found range \[0, \d+\]"),
    ("a single (H, W) image", X[0], r"shape \(8, 8\) is a single \(H, W\) image; pass a batch"),
    ("a single (H, W, C) image", np.zeros((8, 8, 3)), r"shape \(8, 8, 3\) looks like a single \(H, W, C\) image"),
    ("5-D array", X[:, None, ..., None], r"5-D array of shape \(4, 1, 8, 8, 1\)"),
    ("2 channels", np.zeros((4, 8, 8, 2)), r"shape \(4, 8, 8, 2\) has no channel axis of size 1, 3 or 4"),
    ("non-square", np.zeros((4, 8, 6)), r"must be square, got 8x6"),
    ("no square reading", np.zeros((4, 3, 8, 3)), r"shape \(4, 3, 8, 3\) gives non-square images"),
    ("empty batch", np.zeros((0, 8, 8)), r"no images"),
    ("strings", np.full((4, 8, 8), "a"), r"unsupported dtype"),
    ("a list of arrays", [X[0], X[1]], r"np\.stack"),
]


@pytest.mark.parametrize("name,x,match", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_are_refused_with_the_reason(clf, name, x, match):
    with pytest.raises(ValueError, match=match):
        clf.predict(x)
    if isinstance(x, np.ndarray):  # fit reads arrays by the same rule
        with pytest.raises(ValueError, match=match):
            from_arrays(x, np.zeros(len(x) if x.ndim else 1, np.int64))


def test_evaluate_refuses_what_it_cannot_score(clf, digits):
    x, y = digits
    with pytest.raises(ValueError, match=r"need their labels: call evaluate\(x, y\)"):
        clf.evaluate(x)
    with pytest.raises(ValueError, match="x must be an image array"):
        clf.evaluate("digits", y)
    with pytest.raises(ValueError, match=r"labels \['cat'\] are not in classes"):
        clf.evaluate(x[:2], ["cat", "1"])
    with pytest.raises(ValueError, match=r"expected shape \(2,\)"):
        clf.evaluate(x[:2], y[:3])


def test_to_images_u8_reads_layouts_and_ranges():
    base = (X * 255).round().astype(np.uint8)[:, None]  # (4, 1, 8, 8)
    t = torch.from_numpy(base)
    for a in (X, X[..., None], X[:, None], X * 255, base, base[:, 0], torch.from_numpy(X[:, None]).float()):
        assert torch.equal(to_images_u8(a), t)
    assert to_images_u8(torch.rand(2, 3, 8, 8, dtype=torch.bfloat16)).dtype == torch.uint8  # numpy has no bf16
    assert to_images_u8(np.zeros((2, 3, 3, 3))).shape == (2, 3, 3, 3)  # tie: channels-first
    assert to_images_u8(np.zeros((2, 4, 4, 3))).shape == (2, 3, 4, 4)  # 4 is no channels-first count
    assert to_images_u8(np.eye(8, dtype=bool)[None]).max() == 255
    assert to_images_u8(np.full((1, 8, 8), 7, np.int32)).max() == 7  # integers are 0..255 values, not [0, 1]
    rgb = to_images_u8(np.zeros((2, 8, 8, 3)) + TINT, img_size=16, in_chans=1)
    assert rgb.shape == (2, 1, 16, 16) and int(rgb[0, 0, 0, 0]) == round(255 * float(TINT @ [0.299, 0.587, 0.114]))
    with pytest.raises(ValueError, match="in_chans must be 1 or 3, got 2"):
        to_images_u8(X, in_chans=2)


def test_foveal_fit_is_the_front_door_for_training(tmp_path) -> None:
    """`foveal.fit(cfg)` trains what the config says and returns the run; the CLI and Classifier enter there."""
    import foveal
    from foveal.config import load_config

    cfg = load_config(overrides={"data.source": "digits", "model.name": "lenet5_modern", "data.img_size": 20,
                                 "train.epochs": 1, "train.progress": False, "train.report": False,
                                 "train.out_dir": str(tmp_path), "train.name": "front", "train.device": "cpu"})
    result = foveal.fit(cfg, log=lambda m: None)
    assert result.run_dir == tmp_path / "front" and (tmp_path / "front" / "best.safetensors").is_file()
    assert 0.3 < result.test_metrics["accuracy"] < 1.0  # one epoch: above chance (0.1), not perfect
