"""Converting a trusted pickle checkpoint (.pth/.pt) into safetensors, once, on request.

foveal never unpickles when loading weights; this explicit conversion is the one place a
pickle file is read, with torch's restricted `weights_only=True` unpickler (tensors and
plain containers only), for files the user downloaded from a source they trust.
"""

from __future__ import annotations

import argparse
import contextlib
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from ..io import UnsafeFileError, save_tensors

# Besides tensors and plain containers, the restricted unpickler may build these: the `args`
# that torchvision's and timm's training scripts save beside the weights. A Namespace is rebuilt
# by setting attributes (no constructor runs), and its values go through the same restrictions.
_ALLOWED_GLOBALS = [argparse.Namespace]


def _unpickle(src: Path) -> Any:
    """torch.load with weights_only=True. Raises, naming the file: FileNotFoundError when missing,
    UnsafeFileError (a ValueError) when the restricted unpickler refuses it, ValueError when unreadable."""
    if not src.is_file():
        raise FileNotFoundError(f"checkpoint '{src}' does not exist")
    if not hasattr(torch.serialization, "safe_globals"):  # torch 2.4: only the process-wide allow list
        torch.serialization.add_safe_globals(_ALLOWED_GLOBALS)
    allowed = getattr(torch.serialization, "safe_globals", lambda _: contextlib.nullcontext())(_ALLOWED_GLOBALS)
    try:
        with allowed:
            return torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "weights only load failed" not in msg.lower():
            raise ValueError(f"'{src}' is not a readable torch checkpoint: {msg}") from None
        # torch's own message advises weights_only=False, which is what this refusal exists to avoid
        found = re.search(r"GLOBAL ([\w.]+)", msg)
        if found:
            raise UnsafeFileError(
                f"refusing to convert '{src}': it refers to `{found.group(1)}`, and unpickling it could run "
                "arbitrary code, so it was not loaded. Only tensors and plain containers are read; in code you "
                "trust, load the checkpoint and save its weights alone (`torch.save(model.state_dict(), "
                "'weights.pth')`), then convert that file.") from None
        raise UnsafeFileError(
            f"refusing to convert '{src}': torch's restricted unpickler cannot read it ({_detail(msg)}); it is "
            "not a torch checkpoint, or it holds more than tensors and plain containers, which foveal does "
            "not unpickle.") from None
    except Exception as e:  # a corrupt or non-torch file surfaces as KeyError, RuntimeError, EOFError...
        raise ValueError(f"'{src}' is not a readable torch checkpoint ({type(e).__name__}: {e})") from None


def _detail(msg: str) -> str:
    """The specific reason inside torch's weights-only error, without its surrounding advice."""
    tail = msg.split("WeightsUnpickler error:")[-1].split("Check the documentation")[0]
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip() and "weights_only" not in ln]
    return " ".join(lines)[:300] or "no reason given"


def convert_checkpoint(src: str | Path, dst: str | Path) -> int:
    """Write the state_dict inside `src` to `dst` (safetensors); returns the tensor count.

    Accepts a bare state_dict or one nested under 'state_dict' / 'model' / 'module'
    (timm/torchvision/Lightning habits); strips a 'module.' prefix left by DataParallel.
    Refuses (UnsafeFileError, before anything in the file runs) a pickle that refers to
    anything beyond tensors, plain containers and an argparse.Namespace.
    """
    obj = _unpickle(Path(src))
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"'{src}' does not hold a state_dict (a mapping of names to tensors)")
    sd = {k.removeprefix("module."): v for k, v in obj.items()}
    save_tensors(dst, sd, {"converted_from": Path(src).name})
    return len(sd)
