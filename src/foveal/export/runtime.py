"""Running an exported model with ONNX Runtime: the `ImagePredictor` of the 'onnx' backend.

Nothing here imports torch (the inference install has none); images are read by
`foveal.data.decode.read_for` (`ImagePredictor.read`), the decoder behind training and `Predictor` too, so an
exported model sees exactly the pixels the eager one did. The graph holds the plain model;
the run's test-time views (the card's ``tta``) are made here, in numpy, so the calibrated
temperature meets the averaged logits it was fitted on, as in `Predictor`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from ..card import ModelCard
from ..config import BatchSizing
from ..predictor import ImagePredictor

ONNX_META_KEY = "foveal"  # key of our JSON metadata in the ONNX metadata_props
INPUT_NAME, OUTPUT_NAME = "images", "logits"
TTA_VIEWS = ("flip", "shift")  # as foveal.training.tta.TTA_VIEWS (a test checks they agree)


def read_onnx_meta(path: str | Path) -> dict[str, Any]:
    """The metadata JSON of an exported model as stored (`ModelCard.from_dict` reads it), through
    onnxruntime (no torch, no onnx package)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return _meta_from_session(sess, path)


def _meta_from_session(sess: Any, path: str | Path) -> dict[str, Any]:
    raw = sess.get_modelmeta().custom_metadata_map.get(ONNX_META_KEY)
    if raw is None:
        raise ValueError(f"'{path}' has no foveal metadata (export it with `foveal export RUN`)")
    return json.loads(raw)


def make_session(path: str | Path, threads: int | None = None, optimize: bool = True) -> Any:
    """An ORT CPU session with full graph optimizations and `threads` intra-op threads (None: ORT's default)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model '{path}' does not exist")
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def check_views(views: Sequence[str]) -> list[str]:
    """The TTA view names of a model's metadata; one this runtime does not know is an error, since
    skipping it would silently change the probabilities the temperature was calibrated for."""
    bad = [v for v in views if v not in TTA_VIEWS]
    if bad:
        raise ValueError(f"test-time augmentation {', '.join(map(repr, bad))} is not one of {', '.join(TTA_VIEWS)}; "
                         "update foveal to run this model")
    return list(views)


def tta_views(images_u8: np.ndarray, views: Sequence[str]) -> tuple[list[np.ndarray], list[float]]:
    """The test-time views of `images_u8` (N, C, H, W) and their weights in the logit average (sum 1).

    The numpy twin of `foveal.training.tta.tta_logits`, view for view and weight for weight (the image
    and its mirror; then, shifted one pixel up-left and down-right with reflect padding, weighted as
    much together as the centred ones). Written again rather than shared because this module must
    import without torch (the `infer` install); tests/export/test_onnx_tta.py holds the two equal.
    Views of the uint8 pixels equal views of the normalized ones: normalization is per channel and
    the views only move pixels, so the graph may normalize after.
    """
    flip = "flip" in check_views(views)
    centred = [images_u8] + ([images_u8[..., ::-1]] if flip else [])
    if "shift" not in views:
        return centred, [1.0 / len(centred)] * len(centred)
    H, W = images_u8.shape[-2:]
    padded = np.pad(images_u8, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")  # torch's 'reflect'
    shifted = [padded[..., :H, :W], padded[..., 2:, 2:]]
    shifted += [s[..., ::-1] for s in shifted] if flip else []
    return centred + shifted, [0.5 / len(centred)] * len(centred) + [0.5 / len(shifted)] * len(shifted)


class OnnxPredictor(ImagePredictor):
    """An exported model and its model card, run by ONNX Runtime on the CPU."""

    name = "onnx"

    def __init__(self, session: Any, card: ModelCard):
        self.session, self.card = session, card
        self.temperature = card.temperature
        self.tta: list[str] = check_views(card.tta)  # test-time views the temperature was fitted with

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> "OnnxPredictor":
        sess = make_session(path, threads)
        return cls(sess, ModelCard.from_dict(_meta_from_session(sess, path)))

    def batch_size(self, batch_size: int | str | None = "auto") -> int:
        """`batch_size`, or for 'auto' (or None) BatchSizing.onnx_batch."""
        return BatchSizing().onnx_batch if batch_size in ("auto", None) else int(batch_size)

    def logits(self, images_u8: np.ndarray, batch_size: Optional[int] = None) -> np.ndarray:
        """(N, C, H, W) uint8 -> (N, K) float32 logits of the plain graph (no test-time views), run in
        chunks of `batch_size` (None: BatchSizing.onnx_batch): what the export parity check compares
        with the eager model."""
        batch_size = self.batch_size(batch_size)
        images_u8 = np.ascontiguousarray(images_u8, dtype=np.uint8)
        outs = [self.session.run(None, {INPUT_NAME: images_u8[i:i + batch_size]})[0]
                for i in range(0, len(images_u8), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, len(self.classes)), np.float32)

    def tta_logits(self, images_u8: np.ndarray, batch_size: Optional[int] = None) -> np.ndarray:
        """(N, C, H, W) uint8 -> (N, K) float32 logits averaged over the run's test-time views, as
        `Predictor` computes them; each chunk of `batch_size` images goes through the session once,
        all its views stacked (V * B images)."""
        if not self.tta:
            return self.logits(images_u8, batch_size)
        batch_size = self.batch_size(batch_size)
        images_u8 = np.asarray(images_u8, dtype=np.uint8)
        outs = []
        for i in range(0, len(images_u8), batch_size):
            views, weights = tta_views(images_u8[i:i + batch_size], self.tta)
            stacked = np.ascontiguousarray(np.concatenate(views))  # (V * B, C, H, W)
            out = self.session.run(None, {INPUT_NAME: stacked})[0].reshape(len(views), len(views[0]), -1)
            outs.append(np.einsum("v,vnk->nk", np.asarray(weights, np.float32), out))  # (B, K)
        return np.concatenate(outs) if outs else np.zeros((0, len(self.classes)), np.float32)

    def predict_images(self, images_u8: np.ndarray, batch_size: int | str | None = "auto") -> np.ndarray:
        """(N, C, H, W) uint8 -> (N, K) temperature-scaled probabilities of the TTA-averaged logits."""
        return softmax(self.tta_logits(images_u8, self.batch_size(batch_size)), self.temperature)


def median_latency_ms(fn: Any, inputs: Iterable[Any], warmup: int = 3) -> float:
    """Median wall time of `fn(x)` over `inputs` (after `warmup` untimed calls on the first), in ms."""
    inputs = list(inputs)
    for _ in range(warmup):
        fn(inputs[0])
    times = []
    for x in inputs:
        t = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))
