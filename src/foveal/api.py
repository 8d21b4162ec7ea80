"""The Python API, mirroring the CLI: `Classifier(...).fit(data).evaluate().predict(images)`.

As in scikit-learn, the constructor only stores settings; `fit` returns self; what was
learned ends in an underscore (`model_`, `classes_`, `run_dir_`, `history_`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from .config import ConfigError, RunConfig, field_paths, load_config

if TYPE_CHECKING:
    from .data import DataBundle


def _resolve_keys(settings: dict[str, Any]) -> dict[str, Any]:
    """Map keyword names to config paths: 'optim.lr', a short CLI name ('lr', 'batch_size'),
    or any field name that is unique across sections ('weight_decay')."""
    from .cli.config_args import SHORT_FLAGS

    paths = field_paths(RunConfig)
    leaves: dict[str, list[str]] = {}
    for p in paths:
        leaves.setdefault(p.rsplit(".", 1)[1], []).append(p)
    out = {}
    for key, value in settings.items():
        short = SHORT_FLAGS.get(key.replace("_", "-"))
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


class Classifier:
    """Train, evaluate and use an image classifier.

    >>> clf = Classifier("lenet5", epochs=10).fit("digits")
    >>> clf.evaluate()["accuracy"] > 0.95
    >>> clf.predict(["img.png"])
    >>> Classifier("lenet5", img_size=32).fit(x, y).predict(x)  # arrays: (N, H, W[, C]) or (N, C, H, W)
    """

    def __init__(self, model: str = "lenet5", recipe: Optional[str] = None, **settings: Any):
        self.model = model
        self.recipe = recipe
        self.settings = settings

    def config(self, data: Optional[str] = None) -> RunConfig:
        overrides = _resolve_keys({"model.name": self.model, **self.settings})
        if data is not None:
            overrides["data.source"] = data
        return load_config(self.recipe, overrides)

    def fit(self, data: Any = "digits", y: Optional[np.ndarray] = None, classes: Optional[list[str]] = None) -> "Classifier":
        """Train on a dataset name, folder or CSV path, or on an image array `data` with labels `y`.

        Arrays: (N, H, W), (N, H, W, C) or (N, C, H, W); uint8, bool, or floats in [0, 1] or
        [0, 255] (see `foveal.data.arrays`). Labels: class indices, or class names.
        """
        from .engine import Trainer

        bundle = None
        if y is not None or not isinstance(data, (str, Path)):
            from .data.datasets import from_arrays

            bundle = from_arrays(data, y, classes=classes)
            data = "arrays"
        result = Trainer(self.config(str(data)), data=bundle).fit()
        self._set_learned(result.model, result.meta)
        self.run_dir_: Optional[Path] = result.run_dir
        self.history_ = result.history
        self.test_metrics_ = result.test_metrics
        return self

    def _set_learned(self, model: torch.nn.Module, meta: dict[str, Any]) -> None:
        from .engine.inference import Predictor

        self.model_ = model
        self.meta_ = meta
        self.classes_ = meta["classes"]
        self.predictor_ = Predictor(model, meta, next(model.parameters()).device)

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("this Classifier is not fitted yet: call fit() or Classifier.load() first")

    def evaluate(self, data: Any = None, y: Any = None, split: str = "test") -> dict[str, Any]:
        """Metrics on the run's own test split, on every image of `data` (a dataset name, folder or
        CSV), or on image arrays `data` with labels `y`; the same metrics dict in each case.

        Array labels follow `fit`'s rule: integers are indices into `classes_`, other labels are
        class names looked up in `classes_`.
        """
        from .data.stream import make_loader
        from .engine.evaluate import evaluate
        from .engine.inference import eval_data

        self._check_fitted()
        if y is not None or _is_array(data):
            bundle = self._array_bundle(data, y)
        elif data is None and split == "test" and hasattr(self, "test_metrics_"):
            return self.test_metrics_  # computed by fit on the same split with the same weights
        else:
            bundle = eval_data(self.meta_, data, split)
        (name, part), = bundle.splits.items()
        p = self.predictor_
        meter, _, _ = evaluate(p.model, make_loader(part, 256, p.device, p.meta["mean"], p.meta["std"]),
                               len(self.classes_), p.device, tta=p.tta)
        return {**meter.compute(self.classes_), "split": name}

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
        _, labels = encode_labels(y, len(images), self.classes_)
        return DataBundle("arrays", list(self.classes_), {"arrays": Split(images, torch.from_numpy(labels))})

    def _model_images(self, images: Any) -> torch.Tensor:
        """(N, C, H, W) uint8 at the model's input size and channels. Arrays go through the rule
        `fit` applied to its arrays (`to_images_u8`: same layouts, ranges, channel and size
        conversion), so predicting on the fitted arrays sees the fitted pixels; paths and folders
        through the decoder with the resize rule saved in the weights."""
        from .data.arrays import to_images_u8
        from .engine.inference import list_images

        p = self.predictor_
        if _is_array(images):
            return to_images_u8(images, p.meta["img_size"], p.meta["in_chans"])
        return p.load_images(list_images(_paths(images)))

    def predict_proba(self, images: Any) -> np.ndarray:
        """(N, K) class probabilities for image paths/folders or an image array (any layout `fit` takes)."""
        self._check_fitted()
        return self.predictor_.probabilities(self._model_images(images)).numpy()

    def predict(self, images: Any, topk: int = 1) -> list[Any]:
        """Class names (topk=1), or top-k records per image, for image paths/folders or an image array."""
        self._check_fitted()
        if topk > 1 and not _is_array(images):
            return self.predictor_.predict(_paths(images), topk=topk)
        probs = self.predict_proba(images)
        if topk == 1:
            return [self.classes_[i] for i in probs.argmax(1)]
        top = torch.from_numpy(probs).topk(min(topk, len(self.classes_)), dim=1)
        return [{"index": n, "class": self.classes_[idx[0]],
                 "top": [{"class": self.classes_[i], "prob": v} for i, v in zip(idx, vals)]}
                for n, (vals, idx) in enumerate(zip(top.values.tolist(), top.indices.tolist()))]

    def embed(self, images: Any) -> np.ndarray:
        """(N, D) pre-logit features of image paths/folders or an image array (any layout `fit` takes)."""
        from .engine.embed import embed_split

        self._check_fitted()
        p = self.predictor_
        return embed_split(p.model, self._model_images(images), p.meta["mean"], p.meta["std"], p.device)

    def save(self, path: str | Path) -> Path:
        """Write weights and metadata to one safetensors file."""
        from .engine.checkpoint import save_weights

        self._check_fitted()
        save_weights(path, self.model_, self.meta_)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> "Classifier":
        """A fitted Classifier from a weights file or run folder."""
        from .engine.inference import Predictor

        p = Predictor.load(path, device)
        clf = cls(p.meta["model"])
        clf._set_learned(p.model, p.meta)
        return clf

    def __repr__(self) -> str:
        args = ", ".join([repr(self.model)] + [f"{k}={v!r}" for k, v in self.settings.items()])
        return f"Classifier({args})"


__all__ = ["Classifier"]
