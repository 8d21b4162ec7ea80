"""int8 static quantization of an exported ONNX model with ONNX Runtime's quantizer.

Calibration feeds real images of the run's training split through the float graph to measure
activation ranges (MinMax, Percentile or Entropy); weights are quantized per output channel. QDQ
format is the default because ORT fuses DequantizeLinear -> Conv/MatMul -> QuantizeLinear into
integer kernels on x86 and ARM alike; QOperator is kept as an option for the latency comparison.
`export/search.py` chooses the method and the nodes left in float; this module quantizes once.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from ..config import QuantConfig
from ..io import atomic_path
from .runtime import INPUT_NAME, ONNX_META_KEY

# Ops whose int8 kernels are both fast and accurate; LayerNorm/Softmax/GELU stay float (quantizing
# them costs ViTs accuracy for no speed on CPU).
QUANT_OPS = ["Conv", "MatMul", "Gemm"]
METHODS = ("minmax", "percentile", "entropy")  # the calibration methods 'auto' tries, in this order


def calibration_batch(n: int, batch_size: int) -> int:
    """The largest batch size up to `batch_size` that divides `n` calibration images into equal batches."""
    return next(b for b in range(min(batch_size, max(n, 1)), 0, -1) if n % b == 0)


class _Reader:
    """onnxruntime.quantization CalibrationDataReader over a uint8 array, in batches of one size.

    One size (`calibration_batch`) because ORT's histogram calibrators (Entropy, Percentile) stack the
    batches' outputs and fail on a short last batch.
    """

    def __init__(self, images_u8: np.ndarray, batch_size: int):
        b = calibration_batch(len(images_u8), batch_size)
        self._batches: Iterator[np.ndarray] = iter([images_u8[i:i + b] for i in range(0, len(images_u8), b)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        b = next(self._batches, None)
        return None if b is None else {INPUT_NAME: np.ascontiguousarray(b, dtype=np.uint8)}


def prepare(fp32_path: str | Path, out_path: str | Path) -> Path:
    """Shape inference and graph cleanup of `fp32_path` into `out_path`, as ORT's quantization guide
    recommends before quantizing (done once, however many int8 variants are built from it)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=False)
    return Path(out_path)


def quantize_prepared(pre: Path, out_path: str | Path, settings: QuantConfig, method: str,
                      calib_u8: Optional[np.ndarray] = None, exclude: Sequence[str] = (),
                      cache: Optional[Path] = None, only: Optional[Sequence[str]] = None) -> Path:
    """int8 of the prepared graph `pre` with activation ranges from `method`, nodes `exclude` in float
    (and, when `only` is given, every node but those).

    `cache` is a file of activation ranges: measured on `calib_u8` and written there when it does not
    exist, read back when it does, so variants that differ only in `exclude` calibrate once (the
    ranges do not depend on which nodes are quantized).
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    if method not in METHODS:
        raise ValueError(f"calibration method '{method}' is not one of {', '.join(METHODS)}")
    have_cache = cache is not None and cache.is_file()
    if not have_cache and (calib_u8 is None or len(calib_u8) == 0):
        raise ValueError("int8 quantization needs calibration images, and none were given")
    reader = None if have_cache else type("Reader", (_Reader, CalibrationDataReader), {})(calib_u8, settings.batch_size)
    out_path = Path(out_path)
    # ORT's histogram calibrators print their progress to stdout, which would break `foveal export --json`
    with atomic_path(out_path) as tmp, contextlib.redirect_stdout(io.StringIO()):
        quantize_static(str(pre), str(tmp), reader,
                        quant_format=QuantFormat.QDQ if settings.format == "qdq" else QuantFormat.QOperator,
                        per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                        op_types_to_quantize=QUANT_OPS, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                          "percentile": CalibrationMethod.Percentile}[method],
                        nodes_to_quantize=None if only is None else list(only), nodes_to_exclude=list(exclude),
                        calibration_cache_path=cache)
    return out_path


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calib_u8: np.ndarray,
                  settings: QuantConfig | None = None) -> Path:
    """Write the int8 version of `fp32_path` to `out_path`, calibrated on `calib_u8` (N, C, H, W) by the
    one method `settings.calibration` names (choosing among methods needs held-out images: search.py)."""
    s = settings or QuantConfig(calibration="minmax")
    if s.calibration not in METHODS:
        raise ValueError(f"quantize_int8 takes one calibration method ({', '.join(METHODS)}), not "
                         f"'{s.calibration}'; 'auto' is chosen on held-out images by foveal.export.search")
    with tempfile.TemporaryDirectory() as td:
        pre = prepare(fp32_path, Path(td) / "pre.onnx")
        return quantize_prepared(pre, out_path, s, s.calibration, calib_u8, end_nodes(pre) if s.float_ends else [])


def quantizable_nodes(path: Path) -> list[str]:
    """Names of the Conv/MatMul/Gemm nodes of the graph at `path`, in graph (topological) order."""
    import onnx

    return [n.name for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type in QUANT_OPS]


def end_nodes(path: Path) -> list[str]:
    """Names of the first and last Conv/MatMul/Gemm nodes.

    The first sees raw normalized pixels and the last produces the logits; both are small, so
    keeping them float costs little speed and removes most of int8's accuracy loss.
    """
    nodes = quantizable_nodes(path)
    return sorted({nodes[0], nodes[-1]}) if nodes else []


def copy_meta(src: str | Path, dst: str | Path, extra: dict[str, Any]) -> None:
    """Carry the foveal metadata of `src` over to `dst` (the quantizer drops metadata_props)."""
    import json

    import onnx

    from .onnx_export import write_onnx_meta

    m = onnx.load(str(src), load_external_data=False)
    raw = next((p.value for p in m.metadata_props if p.key == ONNX_META_KEY), None)
    if raw is None:
        raise ValueError(f"'{src}' has no foveal metadata")
    write_onnx_meta(Path(dst), json.loads(raw), extra)
