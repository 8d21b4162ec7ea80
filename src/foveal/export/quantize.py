"""int8 static quantization of an exported ONNX model with ONNX Runtime's quantizer.

Calibration feeds real images of the run's training split through the float graph
(activation ranges by MinMax); weights are quantized per output channel. QDQ format is the
default because ORT fuses DequantizeLinear -> Conv/MatMul -> QuantizeLinear into integer
kernels on x86 and ARM alike; QOperator is kept as an option for the latency comparison.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..config import QuantConfig
from ..io import atomic_path
from .runtime import INPUT_NAME, ONNX_META_KEY

# Ops whose int8 kernels are both fast and accurate; LayerNorm/Softmax/GELU stay float (quantizing
# them costs ViTs accuracy for no speed on CPU).
QUANT_OPS = ["Conv", "MatMul", "Gemm"]


class _Reader:
    """onnxruntime.quantization CalibrationDataReader over a uint8 array, in batches."""

    def __init__(self, images_u8: np.ndarray, batch_size: int):
        self._batches: Iterator[np.ndarray] = iter([images_u8[i:i + batch_size]
                                                    for i in range(0, len(images_u8), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        b = next(self._batches, None)
        return None if b is None else {INPUT_NAME: np.ascontiguousarray(b, dtype=np.uint8)}


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calib_u8: np.ndarray,
                  settings: QuantConfig | None = None) -> Path:
    """Write the int8 version of `fp32_path` to `out_path`, calibrated on `calib_u8` (N, C, H, W)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    s = settings or QuantConfig()
    if len(calib_u8) == 0:
        raise ValueError("int8 quantization needs calibration images, and none were given")
    out_path = Path(out_path)
    reader = type("Reader", (_Reader, CalibrationDataReader), {})(calib_u8, s.batch_size)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[s.calibration]
    with tempfile.TemporaryDirectory() as td, atomic_path(out_path) as tmp:
        pre = Path(td) / "pre.onnx"
        # Shape inference + graph cleanup first, as ORT's quantization guide recommends.
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
        exclude = _end_nodes(pre) if s.float_ends else []
        quantize_static(str(pre), str(tmp), reader,
                        quant_format=QuantFormat.QDQ if s.format == "qdq" else QuantFormat.QOperator,
                        per_channel=s.per_channel, reduce_range=s.reduce_range, op_types_to_quantize=QUANT_OPS,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                        nodes_to_exclude=exclude)
    return out_path


def _end_nodes(path: Path) -> list[str]:
    """Names of the first and last Conv/MatMul/Gemm nodes (graph order is topological in ONNX).

    The first sees raw normalized pixels and the last produces the logits; both are small, so
    keeping them float costs little speed and removes most of int8's accuracy loss.
    """
    import onnx

    nodes = [n.name for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type in QUANT_OPS]
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
