"""The Python API, mirroring the CLI: `Classifier(...).fit(data).evaluate().predict(images)`.

As in scikit-learn, the constructor only stores settings; `fit` returns self; what was
learned ends in an underscore (`model_`, `classes_`, `run_dir_`, `history_`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .config import ConfigError, RunConfig, field_paths, load_config


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


class Classifier:
    """Train, evaluate and use an image classifier.

    >>> clf = Classifier("lenet5", epochs=10).fit("digits")
    >>> clf.evaluate()["accuracy"] > 0.95
    >>> clf.predict(["img.png"])
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
        """Train on a dataset name, folder or CSV path, or on arrays `data` (N, H, W[, C]) with labels `y`."""
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

    def evaluate(self, data: Optional[str] = None, split: str = "test") -> dict[str, Any]:
        """Metrics on the run's own test split, or on every image of `data`."""
        from .engine.evaluate import evaluate
        from .data.stream import make_loader
        from .engine.inference import eval_data

        self._check_fitted()
        if data is None and split == "test" and hasattr(self, "test_metrics_"):
            return self.test_metrics_  # computed by fit on the same split with the same weights
        bundle = eval_data(self.meta_, data, split)
        (name, part), = bundle.splits.items()
        p = self.predictor_
        meter, _, _ = evaluate(p.model, make_loader(part, 256, p.device, p.meta["mean"], p.meta["std"]),
                               len(self.classes_), p.device, tta=p.tta)
        return {**meter.compute(self.classes_), "split": name}

    def predict_proba(self, images: Any) -> np.ndarray:
        """(N, K) probabilities for image paths/folders, or a uint8 array (N, C, H, W) already at input size."""
        self._check_fitted()
        if isinstance(images, (np.ndarray, torch.Tensor)):
            return self.predictor_.probabilities(torch.as_tensor(images)).numpy()
        from .engine.inference import list_images

        return self.predictor_.probabilities(self.predictor_.load_images(list_images(images))).numpy()

    def predict(self, images: Any, topk: int = 1) -> list[Any]:
        """Class names (topk=1) or top-k records for image paths/folders or arrays."""
        self._check_fitted()
        if topk > 1 and not isinstance(images, (np.ndarray, torch.Tensor)):
            return self.predictor_.predict(images, topk=topk)
        return [self.classes_[i] for i in self.predict_proba(images).argmax(1)]

    def embed(self, images: Any) -> np.ndarray:
        """(N, D) pre-logit features of image paths/folders, or of a uint8 array (N, C, H, W) at input size."""
        from .engine.embed import embed_split

        self._check_fitted()
        p = self.predictor_
        if not isinstance(images, (np.ndarray, torch.Tensor)):
            from .engine.inference import list_images

            images = p.load_images(list_images(images))
        return embed_split(p.model, torch.as_tensor(images), p.meta["mean"], p.meta["std"], p.device)

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
