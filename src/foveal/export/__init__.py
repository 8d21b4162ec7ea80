"""Export: ONNX (preprocessing inside the graph) and int8, each checked against eager PyTorch.

`runtime` (ONNX Runtime predictor) needs only numpy/Pillow/onnxruntime; `parity` (export and
its check) needs torch. Import the submodule you need; nothing is imported here so the light
inference install can use `foveal.export.runtime`.
"""
