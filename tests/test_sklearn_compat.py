"""`foveal.Classifier` as a scikit-learn estimator on scikit-learn's digits arrays (N, 8, 8) floats:
get_params/set_params round trip, clone, cross_val_score(cv=3), GridSearchCV over two learning
rates on a Pipeline, and the estimator checks of `sklearn.utils.estimator_checks` that apply.

Which scikit-learn checks run, and why the others do not
--------------------------------------------------------
scikit-learn itself runs none of its checks on an estimator whose `input_tags.two_d_array` is
False (`check_estimator` warns "Can't test estimator ... which requires input of type ..." and
returns): nearly all of them fit on random 2-D tables (n_samples, n_features) such as (20, 3),
which an image classifier refuses (a 2-D array is one (H, W) image). `test_estimator_checks`
therefore lists every check scikit-learn would run on a tabular classifier and sorts each into
APPLIED (run here on the real Classifier, must pass) or SKIPPED (with the reason); a check in
neither list fails the test, so a new scikit-learn check gets a decision. The tabular checks that
test a property an image classifier must still have are redone on image arrays in
`test_image_versions_of_the_tabular_checks` (named there).
"""

from __future__ import annotations

import pickle
import time
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.validation import check_is_fitted

import foveal
from foveal.config import ConfigError

FAST = dict(epochs=2, batch_size=32, img_size=20, device="cpu", report=False, logger="none", verbose=False)
FLOOR = 0.25  # accuracy on held-out digits after 2 epochs on 210 images (chance 0.1); measured 0.5-0.6


@pytest.fixture(scope="module")
def digits():
    """450 of scikit-learn's digits, (N, 8, 8) float64 in [0, 16], as scikit-learn gives them."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images[:450], d.target[:450]


def test_get_params_round_trip_and_set_params():
    clf = foveal.Classifier("resnet20", epochs=3, lr=0.01, weight_decay=0.0, **{"optim.momentum": 0.8})
    params = clf.get_params()
    assert params["model"] == "resnet20" and params["epochs"] == 3 and params["lr"] == 0.01
    assert params["optim.momentum"] == 0.8 and params["batch_size"] is None  # None: the config's default
    again = foveal.Classifier(**params)
    assert again.get_params() == params
    cfg = again.config()
    assert (cfg.model.name, cfg.train.epochs, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == \
        ("resnet20", 3, 0.01, 0.8, 0.0)
    assert cfg.train.batch_size == foveal.RunConfig().train.batch_size
    assert clf.set_params(lr=0.1, **{"optim.momentum": 0.5}) is clf
    assert clf.get_params()["lr"] == 0.1 and clf.config().optim.momentum == 0.5
    clf.set_params(bogus=1)  # scikit-learn: set_params stores, fit checks
    with pytest.raises(ConfigError, match="unknown setting 'bogus'"):
        clf.config()
    with pytest.raises(ConfigError, match="optim.lr given twice"):
        foveal.Classifier(lr=0.1, **{"optim.lr": 0.2}).config()
    assert repr(foveal.Classifier("lenet5", epochs=2, **{"optim.momentum": 0.8})) == \
        "Classifier('lenet5', epochs=2, **{'optim.momentum': 0.8})"


def test_clone_of_the_issue_example():
    clf = foveal.Classifier("lenet5", epochs=2, **{"data.rotate": 5.0})
    copy = clone(clf)
    assert copy is not clf and copy.get_params() == clf.get_params()
    with pytest.raises(NotFittedError):
        copy.predict(np.zeros((2, 8, 8)))


def test_cross_val_score_grid_search_and_pipeline_on_digits(digits, tmp_path):
    """3 + 5 fits of 2 epochs on 300 images, no report per fold: 60 s on 2 CPU cores running three
    other jobs (load average 7), so about 20 s on 2 idle ones."""
    x, y = digits
    t0 = time.perf_counter()
    scores = cross_val_score(foveal.Classifier("lenet5", out_dir=str(tmp_path), **FAST), x, y, cv=3)
    assert scores.shape == (3,) and scores.min() > FLOOR, scores
    pipe = Pipeline([("scale", FunctionTransformer(lambda a: a / 16.0)),  # [0, 16] -> [0, 1]
                     ("clf", foveal.Classifier("lenet5", out_dir=str(tmp_path), **FAST))])
    search = GridSearchCV(pipe, {"clf__lr": [1e-3, 1e-2]}, cv=2).fit(x, y)
    assert sorted(search.cv_results_["param_clf__lr"].tolist()) == [1e-3, 1e-2]
    assert search.best_params_["clf__lr"] in (1e-3, 1e-2)
    best = search.best_estimator_.named_steps["clf"]
    assert best.lr == search.best_params_["clf__lr"] and best.classes_ == list(range(10))
    pred = search.predict(x[:20])
    assert all(isinstance(p, int) for p in pred) and set(pred) <= set(range(10))  # int labels predict ints
    assert search.score(x, y) > FLOOR
    assert not list(tmp_path.rglob("report.html"))  # report=False: no report per fold
    print(f"8 fits in {time.perf_counter() - t0:.0f} s")  # no wall-clock assert: CI machines are shared


@pytest.fixture(scope="module")
def fitted(digits, tmp_path_factory):
    x, y = digits
    labels = np.array([3, 5, 7])[y % 3]  # non-contiguous int labels
    return foveal.Classifier("lenet5", out_dir=str(tmp_path_factory.mktemp("runs")), **FAST).fit(x, labels), x, labels


def test_image_versions_of_the_tabular_checks(fitted):
    """What check_classifiers_classes, check_fit_check_is_fitted, check_estimators_overwrite_params,
    check_estimators_pickle, check_methods_sample_order_invariance and
    check_methods_subset_invariance test, on image arrays."""
    clf, x, labels = fitted
    check_is_fitted(clf)
    assert clf.classes_ == [3, 5, 7]  # classes_: the label values, sorted
    assert set(clf.predict(x)) <= {3, 5, 7} and clf.score(x, labels) > 0.4  # chance 1/3
    assert clf.evaluate(x, labels)["accuracy"] == pytest.approx(clf.score(x, labels))
    assert clf.get_params() == clone(clf).get_params()  # fit left the parameters alone
    proba = clf.predict_proba(x[:40])
    assert proba.shape == (40, 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    order = np.random.default_rng(0).permutation(40)
    assert np.allclose(clf.predict_proba(x[:40][order]), proba[order], atol=1e-5)  # sample order
    assert np.allclose(clf.predict_proba(x[:10]), proba[:10], atol=1e-5)  # subsets
    again = pickle.loads(pickle.dumps(clf))
    assert np.allclose(again.predict_proba(x[:40]), proba, atol=1e-6) and again.classes_ == clf.classes_
    with pytest.raises(ValueError, match="Unknown label type"):  # check_classifiers_regression_target
        clone(clf).fit(x[:30], np.linspace(0, 1, 30))


# Run on the real Classifier and must pass.
APPLIED = [
    "check_estimator_cloneable", "check_estimator_tags_renamed", "check_valid_tag_types", "check_estimator_repr",
    "check_no_attributes_set_in_init", "check_mixin_order", "check_parameters_default_constructible",
    "check_get_params_invariance", "check_set_params", "check_do_not_raise_errors_in_init_or_set_params",
    "check_estimators_unfitted",  # NotFittedError before the input is even read
    "check_fit1d",  # a 1-D X is refused with a ValueError, for images as for tables
    "check_supervised_y_no_nan",  # NaN / inf labels: ValueError (check_classification_targets)
    # no-ops for this estimator (no sample_weight, partial_fit, max_iter or decision_function), run anyway
    "check_classifiers_one_label_sample_weights", "check_estimators_partial_fit_n_features",
    "check_non_transformer_estimators_n_iter", "check_decision_proba_consistency",
    "check_n_features_in_after_fitting",  # returns at once for an estimator without 2-D input
]
TABULAR = "fits on a random 2-D table (n_samples, n_features), which an image classifier refuses"
SKIPPED = {
    **dict.fromkeys([
        "check_fit_score_takes_y", "check_dont_overwrite_parameters", "check_estimators_fit_returns_self",
        "check_readonly_memmap_input", "check_estimators_dtypes", "check_dtype_object", "check_pipeline_consistency",
        "check_f_contiguous_array_estimator", "check_classifier_data_not_an_array", "check_classifiers_train",
        "check_supervised_y_2d", "check_dict_unchanged", "check_fit_idempotent", "check_n_features_in",
        "check_fit2d_predict1d", "check_requires_y_none", "check_positive_only_tag_during_fit",
        "check_classifiers_one_label"], TABULAR),
    **dict.fromkeys(["check_estimators_overwrite_params", "check_fit_check_is_fitted", "check_classifiers_classes",
                     "check_estimators_pickle", "check_methods_sample_order_invariance",
                     "check_methods_subset_invariance", "check_classifiers_regression_target"],
                    TABULAR + "; redone on image arrays in test_image_versions_of_the_tabular_checks"),
    **dict.fromkeys(["check_complex_data", "check_estimators_empty_data_messages", "check_fit2d_1sample",
                     "check_fit2d_1feature", "check_estimators_nan_inf"],
                    "expects scikit-learn's wording for a bad table; the image conversion refuses the same "
                    "inputs with its own message (tests/test_api_arrays.py)"),
    **dict.fromkeys(["check_estimator_sparse_tag", "check_estimator_sparse_array", "check_estimator_sparse_matrix"],
                    "sparse matrices: images are dense arrays"),
    "check_array_api_input": "array API dispatch (SCIPY_ARRAY_API): the model runs in torch, whatever the input",
}


def _all_check_names() -> list[str]:
    """Every check scikit-learn would run on this classifier if it took 2-D tables."""
    from sklearn.utils.estimator_checks import _yield_all_checks

    class Tabular(foveal.Classifier):  # only to list the checks; never fitted
        def __sklearn_tags__(self):
            tags = super().__sklearn_tags__()
            tags.input_tags.two_d_array = True
            return tags

    return list(dict.fromkeys(getattr(c, "func", c).__name__ for c in _yield_all_checks(Tabular(), legacy=True)))


def test_estimator_checks():
    from sklearn.utils import estimator_checks

    names = _all_check_names() + ["check_estimator_cloneable"]  # run first by check_estimator itself
    undecided = [n for n in names if n not in APPLIED and n not in SKIPPED]
    assert not undecided, f"scikit-learn checks neither applied nor skipped here: {undecided}"
    clf = foveal.Classifier("lenet5", **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in APPLIED:
            if hasattr(estimator_checks, name):  # checks of this scikit-learn version
                getattr(estimator_checks, name)("Classifier", clf)
