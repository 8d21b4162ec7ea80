"""What the server runs: a run folder through PyTorch, or an exported .onnx through ONNX Runtime.

Both read images with `foveal.data.decode.load_image` (the decoder used for training and
`Predictor`) and return temperature-scaled probabilities of the logits averaged over the run's
test-time views (the card's ``tta``), so the server answers exactly what `foveal predict` prints
for the same file, whichever backend runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..card import ModelCard


@dataclass
class Backend:
    """A loaded model: its model card, a decoder and a batch -> probabilities function."""

    name: str  # 'torch' or 'onnx'
    card: ModelCard
    probabilities: Callable[[np.ndarray], np.ndarray]  # (N, C, H, W) uint8 -> (N, K) float32

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    def read(self, path: str | Path, max_pixels: int) -> np.ndarray:
        """(C, H, W) uint8 of one image file; raises DecodeError naming the file."""
        from ..data.decode import read_for

        return read_for(self.card, path, max_pixels)

    def public_meta(self) -> dict[str, Any]:
        """What `GET /metadata` tells a client: the backend and the card's public fields."""
        return {"backend": self.name, **self.card.public()}


def load_backend(source: str | Path, backend: Optional[str] = None, threads: Optional[int] = None) -> Backend:
    """`source` is a run folder / weights file (torch) or an .onnx file (onnx); `backend` may force one."""
    is_onnx = str(source).endswith(".onnx")
    backend = backend or ("onnx" if is_onnx else "torch")
    if backend == "onnx":
        if not is_onnx:
            source = _exported(source)
        from ..export.runtime import OnnxPredictor

        pred = OnnxPredictor.load(source, threads)
        return Backend("onnx", pred.card, pred.probabilities)
    if is_onnx:
        raise ValueError(f"'{source}' is an ONNX file; serve it with --backend onnx (the default for .onnx)")
    return _torch_backend(source, threads)


def _exported(run: str | Path) -> Path:
    path = Path(run) / "export" / "model.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"'{run}' has no exported model at {path}; run `foveal export {run}` first "
                                "or pass an .onnx file")
    return path


def _torch_backend(source: str | Path, threads: Optional[int]) -> Backend:
    import torch

    from ..engine.inference import Predictor

    if threads:
        torch.set_num_threads(int(threads))
    pred = Predictor.load(source, "cpu")

    def probabilities(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return pred.probabilities(torch.from_numpy(batch)).numpy()

    return Backend("torch", pred.card, probabilities)
