"""ONNX export of a trained run, with its preprocessing folded into the graph.

Input contract of every exported graph: `images`, uint8, (N, C, H, W), exactly the tensor
`foveal.data.decode.load_image` returns (decoded, channel-converted, resized). The graph
casts to float, scales by 1/255 and normalizes with the run's mean/std, then runs the model;
output `logits`, float32 (N, K), before temperature scaling. Taking uint8 keeps the
normalization inside the file, so a client cannot get it wrong, and a batch is 4x smaller.
The model card (`ModelCard.portable`: class names, mean/std, size, resize rule, test-time views and
temperature) travels in the ONNX `metadata_props` (key `foveal`, JSON) and in a sidecar `<model>.onnx.json`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..card import ModelCard
from ..data.preprocess import Normalized
from ..io import atomic_path, write_json
from .runtime import INPUT_NAME, ONNX_META_KEY, OUTPUT_NAME, read_onnx_meta  # noqa: F401  (read_onnx_meta: re-exported)

OPSET = 17


def onnx_meta(card: ModelCard) -> dict[str, Any]:
    """What an ONNX-only predictor needs: the card without the training config, and the graph's contract."""
    # tta: the runtime applies the run's test-time views around the plain graph (the temperature was fitted on them)
    out = card.portable()
    out.update(input={"name": INPUT_NAME, "dtype": "uint8", "layout": "NCHW", "range": "0..255",
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


def export_onnx(model: nn.Module, card: ModelCard, path: str | Path) -> Path:
    """Write `model` behind its normalization (`Normalized`, uint8 in) to `path` (dynamic batch axis);
    returns the path."""
    path = Path(path)
    pre = card.preprocessing
    wrapped = Normalized(model.cpu().eval(), pre.mean, pre.std).eval()
    c, s = card.in_chans, pre.img_size
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
            raise ValueError(f"{card.model} at {s} px cannot be exported to ONNX: {first}. Train it at its "
                             "default input size (`foveal models` lists them) to export it") from None
    write_onnx_meta(path, onnx_meta(card), {"precision": "float32"})
    return path
