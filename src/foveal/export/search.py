"""Choosing how to quantize a model: its calibration method and the layers it keeps in float.

Both choices are made on held-out images, never on the test split the parity check reports: the
run's validation split, or else training images that were not used for calibration. Every
candidate is scored against the float32 graph on those images by (accuracy, top-1 agreement,
-mean squared logit difference), compared in that order, so that on a small slice where
accuracies tie the candidate nearer the float model still wins.

1. Calibration: MinMax, Percentile (99.999th) and Entropy activation ranges, each measured once on
   the calibration images (weights per output channel, as `QuantConfig.per_channel` says; ORT's
   activations are per tensor); the best-scoring method is kept.
2. Sensitivity: each quantizable layer is quantized alone (the rest float) with the chosen ranges.
   Layers whose int8 alone loses held-out accuracy or flips a top-1 answer are kept in float, worst
   first; if the whole model still misses the parity limits on the held-out images, more layers
   follow in the same order, up to `QuantConfig.max_float_nodes` in all.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..config import ParityLimits, QuantConfig
from .quantize import METHODS, calibration_batch, end_nodes, prepare, quantizable_nodes, quantize_prepared
from .runtime import INPUT_NAME, make_session


@dataclass
class Holdout:
    """The held-out images the choices are scored on, and where they come from (saved in parity.json)."""

    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) class indices
    source: str  # e.g. "val split"


def graph_logits(path: Path, images_u8: np.ndarray, threads: Optional[int] = None, batch: int = 32) -> np.ndarray:
    """(N, K) logits of the ONNX graph at `path` (no metadata needed) on uint8 images."""
    sess = make_session(path, threads)
    return np.concatenate([sess.run(None, {INPUT_NAME: np.ascontiguousarray(images_u8[i:i + batch])})[0]
                           for i in range(0, len(images_u8), batch)])


def score(logits: np.ndarray, ref: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, top-1 agreement with the float logits `ref`, and mean squared logit difference."""
    return {"accuracy": float((logits.argmax(1) == labels).mean()),
            "top1_agreement": float((logits.argmax(1) == ref.argmax(1)).mean()),
            "mean_sq_logit_diff": float(((logits - ref) ** 2).mean())}


def rank_key(s: dict[str, float]) -> tuple[float, float, float]:
    """Larger is better: accuracy first, then agreement with float, then closeness of the logits."""
    return s["accuracy"], s["top1_agreement"], -s["mean_sq_logit_diff"]


def meets(s: dict[str, float], base_accuracy: float, limits: ParityLimits) -> bool:
    """Whether held-out scores `s` are within the parity limits of the float model's accuracy."""
    return (100.0 * (base_accuracy - s["accuracy"]) <= limits.max_int8_drop
            and s["top1_agreement"] >= limits.min_int8_agreement)


class _Search:
    """One prepared graph, its held-out float logits and a cache of activation ranges per method."""

    def __init__(self, fp32_path: Path, workdir: Path, calib_u8: np.ndarray, hold: Holdout,
                 settings: QuantConfig, threads: Optional[int]):
        self.dir, self.calib, self.hold, self.s, self.threads = workdir, calib_u8, hold, settings, threads
        self.pre = prepare(fp32_path, workdir / "pre.onnx")
        self.ref = graph_logits(self.pre, hold.images, threads)
        self.base = score(self.ref, self.ref, hold.labels)
        self.ends = end_nodes(self.pre) if settings.float_ends else []

    def build(self, out: Path, method: str, floats: list[str], only: Optional[list[str]] = None) -> Path:
        return quantize_prepared(self.pre, out, self.s, method, self.calib, self.ends + floats,
                                 self.dir / f"ranges.{method}.json", only)

    def trial(self, method: str, floats: list[str], only: Optional[list[str]] = None) -> dict[str, float]:
        path = self.build(self.dir / "trial.onnx", method, floats, only)
        return score(graph_logits(path, self.hold.images, self.threads), self.ref, self.hold.labels)


def search_int8(fp32_path: str | Path, out_path: str | Path, calib_u8: np.ndarray, hold: Holdout,
                settings: QuantConfig, limits: ParityLimits, threads: Optional[int] = None) -> dict[str, Any]:
    """Write the int8 model chosen on `hold` to `out_path`; returns every choice and its scores."""
    if len(hold.images) == 0:
        raise ValueError(f"int8 search needs held-out images, and the {hold.source} has none")
    with tempfile.TemporaryDirectory() as td:
        sr = _Search(Path(fp32_path), Path(td), calib_u8, hold, settings, threads)
        methods = list(METHODS) if settings.calibration == "auto" else [settings.calibration]
        tried = {m: sr.trial(m, []) for m in methods}
        method = max(methods, key=lambda m: rank_key(tried[m]))  # ties: the earlier (MinMax first)
        floats, sensitivity = _keep_float(sr, method, tried[method], limits)
        sr.build(Path(out_path), method, floats)
    return {"holdout": {"source": hold.source, "images": int(len(hold.images)), "float32": sr.base},
            "calibration": {"images": int(len(calib_u8)), "batch": calibration_batch(len(calib_u8), settings.batch_size), "chosen": method, "tried": tried,
                            "per_channel_weights": settings.per_channel},
            "float_nodes": {"ends": sr.ends, "sensitive": floats}, "sensitivity": sensitivity,
            "holdout_int8": sensitivity["final"] if sensitivity else tried[method]}


def _keep_float(sr: _Search, method: str, whole: dict[str, float], limits: ParityLimits
                ) -> tuple[list[str], Optional[dict[str, Any]]]:
    """The layers kept in float after the per-layer sensitivity pass, and the pass's record."""
    cap = sr.s.max_float_nodes
    if cap <= 0:
        return [], None
    nodes = [n for n in quantizable_nodes(sr.pre) if n not in sr.ends]
    alone = {n: sr.trial(method, [], only=[n]) for n in nodes}
    ranked = sorted(nodes, key=lambda n: rank_key(alone[n]))  # the costliest first
    base = sr.base["accuracy"]
    floats = [n for n in ranked if alone[n]["accuracy"] < base or alone[n]["top1_agreement"] < 1.0][:cap]
    current = sr.trial(method, floats) if floats else whole
    for n in ranked:
        if len(floats) >= cap or meets(current, base, limits):
            break
        if n not in floats:
            floats.append(n)
            current = sr.trial(method, floats)
    return floats, {"alone": alone, "ranked": ranked, "final": current,
                    "meets_limits_on_holdout": meets(current, base, limits)}
