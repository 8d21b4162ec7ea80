"""The one interface of a trained model that predicts, whichever engine runs it.

PyTorch (`foveal.tasks.inference.Predictor`) and ONNX Runtime (`foveal.export.runtime.OnnxPredictor`)
implement `ImagePredictor`; `foveal.backends.load_predictor` chooses one, and `foveal predict`,
`Classifier.predict_proba` and `serve` use what it returns without asking which. Both read files with
the training decoder as the model card says (size, channels, resize rule, crop fraction), average
the logits of the card's test-time views and divide them by its temperature, so a file gets the same
probabilities (to float rounding) from either; tests/test_predictors.py runs one set of checks over
every backend.

Torch-free: the inference install (ONNX Runtime, no torch) imports it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .card import ModelCard
from .config import DataConfig


class ImagePredictor(ABC):
    """A trained model and its card: uint8 images or image files in, class probabilities out."""

    name: str  # the backend: 'torch' or 'onnx'
    card: ModelCard

    @property
    def classes(self) -> list[str]:
        """Output index -> class name (empty for a backbone without a classifier)."""
        return list(self.card.classes)

    @abstractmethod
    def batch_size(self, batch_size: int | str | None = "auto") -> int:
        """Images per forward pass: `batch_size`, or for 'auto' (or None) the backend's own choice."""

    @abstractmethod
    def predict_images(self, images_u8: Any, batch_size: int | str | None = "auto") -> np.ndarray:
        """(N, C, H, W) uint8 at the card's size and channels -> (N, K) float32 probabilities:
        the softmax of the logits averaged over the card's test-time views, over its temperature."""

    def read(self, path: str | Path, max_pixels: int = DataConfig.max_pixels) -> np.ndarray:
        """(C, H, W) uint8 of one image file as the card says; raises DecodeError naming the file."""
        from .data.decode import read_for

        return read_for(self.card, path, max_pixels)

    def predict_files(self, inputs: Sequence[str | Path], topk: int = 5,
                      batch_size: int | str | None = "auto") -> list[dict[str, Any]]:
        """One record per image of `inputs` (files or folders): its path, 'class' and 'top' (k pairs of
        class and probability, most likely first); a file that cannot be decoded gets an 'error' instead."""
        from .data.decode import DecodeError, list_images

        records: list[dict[str, Any]] = []
        good, arrays = [], []
        for p in list_images(inputs):
            try:
                arrays.append(self.read(p))
                good.append(len(records))
                records.append({"path": str(p)})
            except DecodeError as e:
                records.append({"path": str(p), "error": str(e)})
        if arrays:
            probs = self.predict_images(np.stack(arrays), batch_size)
            for r, rec in zip(good, topk_records(probs, self.classes, topk)):
                records[r]["top"], records[r]["class"] = rec["top"], rec["class"]  # the order `predict --json` prints
        return records

    def public_meta(self) -> dict[str, Any]:
        """What `GET /metadata` of the server tells a client: the backend and the card's public fields."""
        return {"backend": self.name, **self.card.public()}


def topk_records(probs: np.ndarray, classes: list[str], k: int) -> list[dict[str, Any]]:
    """Per row: {'class': best, 'top': [{'class', 'prob'}...]} in decreasing probability (ties: lower index first)."""
    k = min(k, len(classes))
    idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    out = []
    for row, ids in zip(probs, idx):
        top = [{"class": classes[i], "prob": float(row[i])} for i in ids]
        out.append({"class": top[0]["class"], "top": top})
    return out
