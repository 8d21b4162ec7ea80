"""The front door to a trained model: `load_predictor` decides whether PyTorch or ONNX Runtime runs it.

`foveal predict`, `foveal serve` and `Classifier.load` call it and hold the `ImagePredictor` it
returns; no other place chooses a backend. Importing this module imports neither torch nor
onnxruntime, so the inference install (ONNX Runtime, no torch) loads exported models through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .predictor import ImagePredictor

BACKENDS = ("torch", "onnx")  # every one passes tests/test_predictors.py


def load_predictor(source: str | Path, backend: Optional[str] = None, device: str = "auto",
                   threads: Optional[int] = None) -> ImagePredictor:
    """The predictor of `source`: a run folder or weights file (backend 'torch' by default; 'onnx' runs
    the folder's export/model.onnx) or an .onnx file (backend 'onnx'). `device` places a torch model
    (ONNX Runtime runs on the CPU); `threads` sets the backend's intra-op threads (None: its default)."""
    is_onnx = str(source).endswith(".onnx")
    backend = backend or ("onnx" if is_onnx else "torch")
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "onnx":
        from .export.runtime import OnnxPredictor

        return OnnxPredictor.load(source if is_onnx else _exported(source), threads)
    if is_onnx:
        raise ValueError(f"'{source}' is an ONNX file: it runs with backend 'onnx' (the default for .onnx files)")
    import torch

    from .tasks.inference import Predictor

    if threads:
        torch.set_num_threads(int(threads))
    return Predictor.load(source, device)


def _exported(run: str | Path) -> Path:
    path = Path(run) / "export" / "model.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"'{run}' has no exported model at {path}; run `foveal export {run}` first "
                                "or pass an .onnx file")
    return path
