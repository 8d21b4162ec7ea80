"""The Python API, mirroring the CLI: `Classifier(...).fit(data).evaluate().predict(images)`.

As in scikit-learn, the constructor only stores settings; `fit` returns self; what was
learned ends in an underscore (`model_`, `classes_`, `run_dir_`, `history_`). `Classifier` is a
scikit-learn estimator (as skorch's `NeuralNetClassifier` is): `clone`, `cross_val_score`,
`GridSearchCV` and `Pipeline` take it, with image arrays as X.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError

from .config import SHORT_NAMES, ConfigError, RunConfig, field_paths

if TYPE_CHECKING:
    from .card import ModelCard
    from .data import DataBundle


def _resolve_keys(settings: dict[str, Any]) -> dict[str, Any]:
    """Map keyword names to config paths: 'optim.lr', a short CLI name ('lr', 'batch_size'),
    or any field name that is unique across sections ('weight_decay')."""
    paths = field_paths(RunConfig)
    leaves: dict[str, list[str]] = {}
    for p in paths:
        leaves.setdefault(p.rsplit(".", 1)[1], []).append(p)
    out = {}
    for key, value in settings.items():
        short = SHORT_NAMES.get(key.replace("_", "-"))
        if key in paths:
            out[key] = value
        elif short:
            out[short] = value
        elif len(leaves.get(key, [])) == 1:
            out[leaves[key][0]] = value
        elif key in leaves:
            raise ConfigError(f"'{key}' is ambiguous; use one of {', '.join(leaves[key])}")
        else:
            raise ConfigError(f"unknown setting '{key}'; use a config path such as 'optim.lr' (see `foveal train -h`)")
    return out


def _is_array(images: Any) -> bool:
    """Arrays take the array path (`to_images_u8`); anything else is image paths or folders."""
    return isinstance(images, (np.ndarray, torch.Tensor))


def _paths(images: Any) -> list[Any]:
    """Image paths and folders as a list; one path alone is accepted, a list of arrays is not."""
    if isinstance(images, (str, Path)):
        return [images]
    if not isinstance(images, (list, tuple)):
        raise TypeError(f"images: expected image paths/folders or an image array, got {type(images).__name__}")
    if any(_is_array(i) for i in images):
        raise ValueError(f"images: got a {type(images).__name__} of arrays; stack them into one batch first, "
                         "e.g. np.stack(images)")
    return list(images)


# The constructor's named settings (scikit-learn parameters) -> the config fields they set.
# Classifier's named keywords: the CLI's short names (config.SHORT_NAMES, the one table), spelled with '_'
NAMED_SETTINGS = {name: SHORT_NAMES[name.replace("_", "-")] for name in (
    "epochs", "lr", "batch_size", "img_size", "seed", "device", "pretrained", "augment", "optimizer", "weight_decay",
    "out_dir", "name", "progress", "report", "logger")}


class Classifier(ClassifierMixin, BaseEstimator):
    """Train, evaluate and use an image classifier.

    >>> clf = Classifier("lenet5", epochs=10).fit("digits")
    >>> clf.evaluate()["accuracy"] > 0.95
    >>> clf.predict(["img.png"])
    >>> Classifier("lenet5", img_size=32).fit(x, y).predict(x)  # arrays: (N, H, W[, C]) or (N, C, H, W)
    >>> cross_val_score(Classifier(epochs=2, report=False), x, y, cv=3)  # a scikit-learn estimator

    Named settings (`epochs`, `lr`, ... see NAMED_SETTINGS) default to None: the recipe's value,
    else the config default. Any other config field is a keyword too: `weight_decay=...`,
    `**{"optim.momentum": 0.8}` or a short CLI name. `get_params` returns the named settings and
    these extra ones under the key they were given with; `set_params` takes both (keys and values
    are checked by `fit`), so `clone` and `GridSearchCV(param_grid={"lr": [...]})` work. Fitted
    on arrays, `classes_` holds the label values (ints for int labels) and `predict` returns them;
    fitted on a dataset or folder (or loaded), `classes_` holds the class names.
    `verbose=False` silences the per-epoch lines and the progress bar.
    """

    def __init__(self, model: str = "lenet5", recipe: Optional[str] = None, *, epochs: Optional[int] = None,
                 lr: Optional[float] = None, batch_size: Optional[int] = None, img_size: Optional[int] = None,
                 seed: Optional[int] = None, device: Optional[str] = None, pretrained: Optional[str] = None,
                 augment: Optional[list[str]] = None, optimizer: Optional[str] = None,
                 weight_decay: Optional[float] = None, out_dir: Optional[str] = None, name: Optional[str] = None,
                 progress: Optional[bool] = None, report: Optional[bool] = None, logger: Optional[str] = None,
                 verbose: Optional[bool] = None, **settings: Any):
        self.model = model
        self.recipe = recipe
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.img_size = img_size
        self.seed = seed
        self.device = device
        self.pretrained = pretrained
        self.augment = augment
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.out_dir = out_dir
        self.name = name
        self.progress = progress
        self.report = report
        self.logger = logger
        self.verbose = verbose
        self._settings = settings  # private: scikit-learn's checks allow only parameters as public attributes

    @property
    def settings(self) -> dict[str, Any]:
        """The extra config settings given as keywords (not the named ones)."""
        return self._settings

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's arguments: named settings, then the extra `**settings` as given."""
        return {**super().get_params(deep=deep), **self._settings}

    def set_params(self, **params: Any) -> "Classifier":
        """Set named settings and extra config settings; as in scikit-learn, values and keys are
        checked when `fit` builds the config (an unknown key then raises ConfigError)."""
        named = set(self._get_param_names())
        extra = {k: v for k, v in params.items() if k not in named}
        self._settings = {**self._settings, **extra}
        return super().set_params(**{k: v for k, v in params.items() if k in named})

    def config(self, data: Optional[str] = None) -> RunConfig:
        named = {NAMED_SETTINGS[k]: v for k, v in super().get_params(deep=False).items()
                 if k in NAMED_SETTINGS and v is not None}
        if self.verbose is False and self.progress is None:
            named["train.progress"] = False
        extra = _resolve_keys(self._settings)
        both = sorted(set(named) & set(extra))
        if both:
            raise ConfigError(f"{', '.join(both)} given twice: as a named setting and in **settings; keep one")
        overrides = {"model.name": self.model, **named, **extra}
        if data is not None:
            overrides["data.source"] = data
        from .training.runs import load_run_config  # resume=True: the run's saved config, as `foveal train --resume`

        return load_run_config(self.recipe, overrides)

    def fit(self, data: Any = "digits", y: Optional[np.ndarray] = None, classes: Optional[list[str]] = None) -> "Classifier":
        """Train on a dataset name, folder or CSV path, or on an image array `data` with labels `y`.

        Arrays: (N, H, W), (N, H, W, C) or (N, C, H, W); uint8, bool, or floats in [0, 1] or
        [0, 255] (see `foveal.data.arrays`). Labels: any values (ints, names); `classes_` then holds
        the sorted distinct values and `predict` returns them. With `classes`, int labels are
        indices into those names, and `classes_` holds the names.
        """
        bundle, values = None, None
        if y is not None or not isinstance(data, (str, Path)):
            from .data.datasets import from_arrays

            if y is not None:  # refuse continuous and multi-label targets, as scikit-learn classifiers do
                from sklearn.utils.multiclass import check_classification_targets

                check_classification_targets(y)
            if classes is None and y is not None:  # learn the label values, as scikit-learn does
                values, y = _label_values(y)
                classes = [str(v) for v in values] if values is not None else None
            bundle = from_arrays(data, y, classes=classes)
            data = "arrays"
        log = (lambda msg: None) if self.verbose is False else print
        from .tasks.fit import fit

        result = fit(self.config(str(data)), data=bundle, log=log)
        self._set_learned(result.model, result.card)
        if values is not None:  # predict returns these values (ints for int labels), not the names
            self.classes_ = values
            self.label_index_ = {v: i for i, v in enumerate(values)}
        self.run_dir_: Optional[Path] = result.run_dir
        self.history_ = result.history
        self.test_metrics_ = result.test_metrics
        return self

    def _set_learned(self, model: torch.nn.Module, card: "ModelCard") -> None:
        from .tasks.inference import Predictor

        self.model_ = model
        self.card_ = card
        self.classes_ = list(card.classes)
        self.label_index_: Optional[dict[Any, int]] = None  # original label value -> class index (array fits)
        self.predictor_ = Predictor(model, card, next(model.parameters()).device)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # X is a batch of images (N, H, W[, C]) or (N, C, H, W), not a table
        tags.input_tags.three_d_array = True
        return tags

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("this Classifier is not fitted yet: call fit() or Classifier.load() first")

    def evaluate(self, data: Any = None, y: Any = None, split: str = "test") -> dict[str, Any]:
        """Metrics on the run's own test split, on every image of `data` (a dataset name, folder or
        CSV), or on image arrays `data` with labels `y`; the same metrics dict in each case.

        Array labels follow `fit`'s rule: integers are indices into `classes_`, other labels are
        class names looked up in `classes_`.
        """
        from .tasks.inference import eval_data, evaluate_bundle

        self._check_fitted()
        if y is not None or _is_array(data):
            bundle = self._array_bundle(data, y)
        elif data is None and split == "test" and hasattr(self, "test_metrics_"):
            return self.test_metrics_  # computed by fit on the same split with the same weights
        else:
            bundle = eval_data(self.card_, data, split)
        return evaluate_bundle(self.predictor_, bundle, classes=self.classes_)[0]

    def _array_bundle(self, x: Any, y: Any) -> "DataBundle":
        """Arrays and labels as a one-split DataBundle in the model's input format and class order."""
        from .data import DataBundle, Split
        from .data.arrays import LAYOUTS
        from .data.datasets import encode_labels

        if not _is_array(x):
            raise ValueError(f"evaluate(x, y): x must be an image array {LAYOUTS} when labels y are given, got "
                             f"{type(x).__name__}; a dataset name, folder or CSV carries its labels: evaluate(path)"
                             + (f", and evaluate(path, split={y!r}) chooses its split" if isinstance(y, str) else ""))
        if y is None:
            raise ValueError("evaluate(x): image arrays need their labels: call evaluate(x, y)")
        images = self._model_images(x)
        if self.label_index_ is not None:  # fitted on arrays: y holds the fitted label values, or
            arr = np.asarray(y)  # (strings that are no label value) the class names, as in `fit`'s rule
            named = arr.dtype.kind in "USO" and not all(v in self.label_index_ for v in arr.ravel().tolist())
            if not named:
                y = _label_indices(y, self.label_index_)
        _, labels = encode_labels(y, len(images), list(self.card_.classes))
        return DataBundle("arrays", list(self.classes_), {"arrays": Split(images, torch.from_numpy(labels))})

    def _model_images(self, images: Any) -> torch.Tensor:
        """(N, C, H, W) uint8 at the model's input size and channels. Arrays go through the rule
        `fit` applied to its arrays (`to_images_u8`: same layouts, ranges, channel and size
        conversion), so predicting on the fitted arrays sees the fitted pixels; paths and folders
        through the decoder with the resize rule saved in the weights."""
        from .data.arrays import to_images_u8
        from .tasks.inference import list_images

        p = self.predictor_
        if _is_array(images):
            return to_images_u8(images, p.card.preprocessing.img_size, p.card.in_chans)
        return p.load_images(list_images(_paths(images)))

    def predict_proba(self, images: Any) -> np.ndarray:
        """(N, K) class probabilities for image paths/folders or an image array (any layout `fit` takes)."""
        self._check_fitted()
        return self.predictor_.predict_images(self._model_images(images))

    def predict(self, images: Any, topk: int = 1) -> list[Any]:
        """Class names (topk=1), or top-k records per image, for image paths/folders or an image array."""
        self._check_fitted()
        if topk > 1 and not _is_array(images):
            return self.predictor_.predict_files(_paths(images), topk=topk)
        probs = self.predict_proba(images)
        if topk == 1:
            return [self.classes_[i] for i in probs.argmax(1)]
        top = torch.from_numpy(probs).topk(min(topk, len(self.classes_)), dim=1)
        return [{"index": n, "class": self.classes_[idx[0]],
                 "top": [{"class": self.classes_[i], "prob": v} for i, v in zip(idx, vals)]}
                for n, (vals, idx) in enumerate(zip(top.values.tolist(), top.indices.tolist()))]

    def embed(self, images: Any) -> np.ndarray:
        """(N, D) pre-logit features of image paths/folders or an image array (any layout `fit` takes)."""
        from .tasks.embed import embed_split

        self._check_fitted()
        p = self.predictor_
        pre = p.card.preprocessing
        return embed_split(p.model, self._model_images(images), pre.mean, pre.std, p.device)

    def save(self, path: str | Path) -> Path:
        """Write weights and metadata to one safetensors file."""
        from .training.checkpoint import save_weights

        self._check_fitted()
        save_weights(path, self.model_, self.card_)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> "Classifier":
        """A fitted Classifier from a weights file or run folder."""
        from .backends import load_predictor

        p = load_predictor(path, "torch", device)  # embed, evaluate and save need the torch model
        clf = cls(p.card.model)
        clf._set_learned(p.model, p.card)
        return clf

    def __repr__(self, N_CHAR_MAX: int = 700) -> str:  # BaseEstimator's signature
        named = [f"{k}={v!r}" for k, v in super().get_params(deep=False).items()
                 if k not in ("model", "recipe") and v is not None]
        extra = [f"{k}={v!r}" for k, v in self._settings.items() if k.isidentifier()]
        dotted = {k: v for k, v in self._settings.items() if not k.isidentifier()}
        args = [repr(self.model)] + ([f"recipe={self.recipe!r}"] if self.recipe else []) + named + extra
        return f"Classifier({', '.join(args + ([f'**{dotted!r}'] if dotted else []))})"


def _label_values(y: Any) -> tuple[list[Any], Any]:
    """(sorted distinct label values, each label's index among them) of labels `y`; labels that
    are not one-dimensional are left for `encode_labels` to refuse with its message."""
    arr = np.asarray(y)
    if arr.ndim != 1 or len(arr) == 0:
        return None, y
    values, index = np.unique(arr, return_inverse=True)
    values = values.tolist()  # numpy scalars -> Python ints / strs, as predict returns them
    if len({str(v) for v in values}) != len(values):
        raise ValueError(f"labels: distinct values {values[:10]} print alike; use class indices or distinct names")
    return values, index.astype(np.int64)


def _label_indices(y: Any, index: dict[Any, int]) -> np.ndarray:
    """Label values -> the class indices of a model fitted on those values."""
    values = np.asarray(y).tolist() if np.ndim(y) == 1 else y
    if not isinstance(values, list):
        raise ValueError(f"labels: expected a 1-D array of labels, got shape {np.shape(y)}")
    unknown = sorted({str(v) for v in values if v not in index})
    if unknown:
        raise ValueError(f"labels {unknown[:5]} were not among the fitted labels {list(index)[:20]}")
    return np.array([index[v] for v in values], dtype=np.int64)


__all__ = ["Classifier"]
