"""Converting a trusted pickle checkpoint (.pth/.pt) into safetensors, once, on request.

foveal never unpickles when loading weights; this explicit conversion is the one place a
pickle file is read, with torch's restricted `weights_only=True` unpickler (tensors and
plain containers only), for files the user downloaded from a source they trust.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..io import save_tensors


def convert_checkpoint(src: str | Path, dst: str | Path) -> int:
    """Write the state_dict inside `src` to `dst` (safetensors); returns the tensor count.

    Accepts a bare state_dict or one nested under 'state_dict' / 'model' / 'module'
    (timm/torchvision/Lightning habits); strips a 'module.' prefix left by DataParallel.
    """
    obj = torch.load(src, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"'{src}' does not hold a state_dict (a mapping of names to tensors)")
    sd = {k.removeprefix("module."): v for k, v in obj.items()}
    save_tensors(dst, sd, {"converted_from": Path(src).name})
    return len(sd)
