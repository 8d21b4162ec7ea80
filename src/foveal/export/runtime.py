"""Running an exported model with ONNX Runtime: the predictor used by `predict`, `serve` and `bench`.

Nothing here imports torch (the inference install has none); images are read by
`foveal.data.decode.read_image`, the decoder behind training and `Predictor` too, so an
exported model sees exactly the pixels the eager one did.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

META_KEY = "foveal"  # key of our JSON metadata in the ONNX metadata_props
INPUT_NAME, OUTPUT_NAME = "images", "logits"


def read_onnx_meta(path: str | Path) -> dict[str, Any]:
    """Metadata of an exported model, read through onnxruntime (no torch, no onnx package)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return _meta_from_session(sess, path)


def _meta_from_session(sess: Any, path: str | Path) -> dict[str, Any]:
    raw = sess.get_modelmeta().custom_metadata_map.get(META_KEY)
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


def topk_records(probs: np.ndarray, classes: list[str], k: int) -> list[dict[str, Any]]:
    """Per row: {'class': best, 'top': [{'class', 'prob'}...]} in decreasing probability."""
    k = min(k, len(classes))
    idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    out = []
    for row, ids in zip(probs, idx):
        top = [{"class": classes[i], "prob": float(row[i])} for i in ids]
        out.append({"class": top[0]["class"], "top": top})
    return out


class OnnxPredictor:
    """An exported model and its metadata; same `predict` records as `engine.inference.Predictor`."""

    def __init__(self, session: Any, meta: dict[str, Any]):
        self.session, self.meta = session, meta
        self.classes: list[str] = list(meta["classes"])
        self.temperature = float(meta.get("temperature", 1.0))

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> "OnnxPredictor":
        sess = make_session(path, threads)
        return cls(sess, _meta_from_session(sess, path))

    def read_image(self, path: str | Path, max_pixels: int = 64_000_000) -> np.ndarray:
        """(C, H, W) uint8 for one file, by the training/`Predictor` decoder; raises DecodeError."""
        from ..data.decode import read_image

        m = self.meta
        return read_image(path, m["img_size"], m["in_chans"], m.get("resize", "squash"), max_pixels)

    def logits(self, images_u8: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, C, H, W) uint8 -> (N, K) float32 logits, run in chunks of `batch_size`."""
        images_u8 = np.ascontiguousarray(images_u8, dtype=np.uint8)
        outs = [self.session.run(None, {INPUT_NAME: images_u8[i:i + batch_size]})[0]
                for i in range(0, len(images_u8), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, len(self.classes)), np.float32)

    def probabilities(self, images_u8: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return softmax(self.logits(images_u8, batch_size), self.temperature)

    def predict(self, inputs: Sequence[str | Path], topk: int = 5, batch_size: int = 64) -> list[dict[str, Any]]:
        """One record per image file: path and top-k; unreadable files get an 'error'."""
        from ..data.decode import DecodeError, list_images

        records: list[dict[str, Any]] = []
        good, arrays = [], []
        for p in list_images(inputs):
            try:
                arrays.append(self.read_image(p))
                good.append(len(records))
                records.append({"path": str(p)})
            except DecodeError as e:
                records.append({"path": str(p), "error": str(e)})
        if arrays:
            for r, rec in zip(good, topk_records(self.probabilities(np.stack(arrays), batch_size), self.classes, topk)):
                records[r].update(rec)
        return records


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
