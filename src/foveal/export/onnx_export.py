"""ONNX export of a trained run, with its preprocessing folded into the graph.

Input contract of every exported graph: `images`, uint8, (N, C, H, W), exactly the tensor
`foveal.data.decode.load_image` returns (decoded, channel-converted, resized). The graph
casts to float, scales by 1/255 and normalizes with the run's mean/std, then runs the model;
output `logits`, float32 (N, K), before temperature scaling. Taking uint8 keeps the
normalization inside the file, so a client cannot get it wrong, and a batch is 4x smaller.
Class names, mean/std, size, resize rule and temperature travel in the ONNX
`metadata_props` (key `foveal`, JSON) and in a sidecar `<model>.onnx.json`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.loader import normalize_u8
from ..io import atomic_path, write_json
from .runtime import INPUT_NAME, ONNX_META_KEY, OUTPUT_NAME, read_onnx_meta  # noqa: F401  (read_onnx_meta: re-exported)

OPSET = 17


class Preprocessed(nn.Module):
    """uint8 images -> logits: the run's normalization followed by the model.

    The arithmetic is `normalize_u8`'s, the one `Predictor.probabilities` uses, so the eager
    reference and the graph see identical floats.
    """

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) uint8 -> (N, K)
        return self.model(normalize_u8(images, self.mean, self.std)).float()


def onnx_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The subset of run metadata an ONNX-only predictor needs (no training config)."""
    # tta: the runtime applies the run's test-time views around the plain graph (the temperature was fitted on them)
    keys = ("model", "classes", "in_chans", "img_size", "resize", "crop_pct", "mean", "std", "tta", "foveal_version")
    out = {k: meta[k] for k in keys if k in meta}
    out.update(format="foveal-onnx/1", temperature=float(meta.get("temperature", 1.0)),
               input={"name": INPUT_NAME, "dtype": "uint8", "layout": "NCHW", "range": "0..255",
                      "normalization": "inside the graph"},
               output={"name": OUTPUT_NAME, "meaning": "logits before temperature"})
    return out


def write_onnx_meta(path: Path, meta: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Store `meta` (+extra) in the model's metadata_props and in the sidecar `<path>.json`."""
    import onnx

    m = onnx.load(str(path))
    full = {**meta, **(extra or {})}
    del m.metadata_props[:]
    entry = m.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, json.dumps(full)
    with atomic_path(path) as tmp:
        onnx.save(m, str(tmp))
    write_json(path.with_name(path.name + ".json"), full)


def export_onnx(model: nn.Module, meta: dict[str, Any], path: str | Path) -> Path:
    """Write `model` with folded preprocessing to `path` (dynamic batch axis); returns the path."""
    path = Path(path)
    wrapped = Preprocessed(model.cpu().eval(), meta["mean"], meta["std"]).eval()
    c, s = int(meta["in_chans"]), int(meta["img_size"])
    example = torch.zeros(2, c, s, s, dtype=torch.uint8)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # The dynamo exporter needs onnxscript, which the light install lacks; the TorchScript
        # exporter handles every model in the zoo and warns about its deprecation and traces.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(wrapped, (example,), str(tmp), dynamo=False, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=OPSET, do_constant_folding=True,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        except torch.onnx.errors.OnnxExporterError as e:  # e.g. an adaptive pool that upsamples (LeNet-5 < 28 px)
            first = str(e).split(". ")[0]
            raise ValueError(f"{meta.get('model')} at {s} px cannot be exported to ONNX: {first}. Train it at its "
                             "default input size (`foveal models` lists them) to export it") from None
    write_onnx_meta(path, onnx_meta(meta), {"precision": "float32"})
    return path
