"""Pretrained weights by name, with the preprocessing they were trained with.

`--pretrained` takes a file or run folder, or a name:

- ``imagenet``: the architecture's default ImageNet weights: torchvision's ``DEFAULT`` weights for
  foveal models torchvision also has (``resnet18``, ``mobilenet_v3_large``...; the key names are
  mapped onto foveal's by each family's `remap_state_dict`), timm's default pretrained tag for
  ``timm/<name>`` models;
- ``tv:<arch>.<WEIGHTS>``, e.g. ``tv:resnet50.IMAGENET1K_V2``: a named torchvision weight;
- ``hf-hub:<repo>``, e.g. ``hf-hub:timm/convnext_tiny.in12k_ft_in1k``: a timm repository on the hub.

Loading never runs pickled code. Hub weights come as safetensors (`huggingface_hub`, cached under
``$HF_HOME``, honouring ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT``). torchvision publishes pickles
(``.pth``): the file is downloaded to ``$TORCH_HOME/hub/checkpoints`` (torch.hub's own cache), its
SHA-256 checked against the prefix in its published name *before* it is read, then read with
``torch.load(weights_only=True)`` (tensors and plain containers only) on a torch that has the
CVE-2025-32434 fix (2.6+), converted once to safetensors beside it, and only that is loaded. An
older torch is refused with the command that converts the file elsewhere.

``FOVEAL_WEIGHTS_MIRROR`` (a base URL) replaces torchvision's download host: for air-gapped
mirrors, and for the tests, which serve weights from 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..card import ModelCard, Preprocessing  # Preprocessing: re-exported, the type `resolve` returns
from ..io import sha256_file

TV_HOST = "https://download.pytorch.org/"
FOVEAL_META = "the foveal weights' metadata"  # `file_preprocessing`'s origin for foveal runs
# foveal model name -> torchvision's, where they differ (the state_dicts map: tests/models/test_torchvision_parity.py)
TV_NAMES = {"mobilenetv2": "mobilenet_v2", "mobilenetv3_small": "mobilenet_v3_small",
            "mobilenetv3_large": "mobilenet_v3_large", "vit_base_patch16_224": "vit_b_16", "vit_base": "vit_b_16"}


@dataclass
class ResolvedWeights:
    path: Path  # a safetensors file
    origin: str  # where it came from, for the run's config and report
    preprocessing: Optional[Preprocessing] = None
    details: dict[str, Any] = field(default_factory=dict)


class WeightsUnavailable(FileNotFoundError):
    """Named weights could not be fetched (offline, no network, not published); says what to fetch and where."""


class WeightsCorrupted(ValueError):
    """A downloaded file failed its hash check or could not be read safely; nothing was loaded."""


def is_weights_name(source: str) -> bool:
    return source == "imagenet" or source.startswith(("tv:", "hf-hub:"))


def resolve(source: str, model_name: str) -> ResolvedWeights:
    """The safetensors file (downloaded and verified if needed) and preprocessing of `source` for `model_name`."""
    if source.startswith("hf-hub:"):
        return _from_hub(source.removeprefix("hf-hub:"))
    if source.startswith("tv:"):
        arch, _, tag = source.removeprefix("tv:").partition(".")
        return _from_torchvision(arch, tag or "DEFAULT")
    if model_name.startswith("timm/"):
        return _timm_default(model_name.removeprefix("timm/"))
    return _from_torchvision(TV_NAMES.get(model_name, model_name), "DEFAULT")


def file_preprocessing(path: str | Path, model_name: str) -> Optional[tuple[Preprocessing, str]]:
    """The preprocessing of a weights file or run folder, and where it was read from: a foveal
    checkpoint's metadata; for a plain state_dict (no metadata), the published preprocessing of the
    architecture's ImageNet weights (timm's pretrained_cfg for timm/ models, torchvision's transforms
    for the others), which is what such a file almost always holds. None when nothing is known."""
    from ..io import read_meta
    from .weights import resolve_weights_path

    try:
        meta = read_meta(resolve_weights_path(path))
    except (FileNotFoundError, ValueError):
        return None  # load_for_finetune reports the file's problems with full context
    if ModelCard.describes(meta):
        return ModelCard.from_dict(meta).preprocessing, FOVEAL_META
    if model_name.startswith("timm/"):
        try:
            import timm

            cfg = timm.models.get_pretrained_cfg(model_name.removeprefix("timm/"))
        except ImportError:
            cfg = None
        p = Preprocessing.from_timm(cfg.to_dict()) if cfg is not None else None
        return (p, f"timm's pretrained_cfg of {model_name.removeprefix('timm/')}") if p else None
    try:
        w = _tv_weights(TV_NAMES.get(model_name, model_name), "DEFAULT")
    except (WeightsUnavailable, ImportError):
        return None
    return _tv_preprocessing(w), f"torchvision's {w.name} transforms of {model_name}"


# ---- torchvision ------------------------------------------------------------------------------

def _tv_weights(arch: str, tag: str) -> Any:
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        raise WeightsUnavailable(f"torchvision publishes no weights for '{arch}'; for timm's, use --model timm/<name> "
                                 "with --pretrained imagenet, or pass a safetensors file") from None
    try:
        return enum.DEFAULT if tag == "DEFAULT" else enum[tag]
    except KeyError:
        raise WeightsUnavailable(f"torchvision has no weights '{tag}' for '{arch}' (it has: "
                                 f"{', '.join(w.name for w in enum)})") from None


def _tv_preprocessing(w: Any) -> Preprocessing:
    t = w.transforms()
    crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    interpolation = str(getattr(t.interpolation, "value", t.interpolation))
    return Preprocessing(t.mean, t.std, crop, crop / resize, "crop", interpolation)


def _from_torchvision(arch: str, tag: str) -> ResolvedWeights:
    w = _tv_weights(arch, tag)
    url = w.url
    mirror = os.environ.get("FOVEAL_WEIGHTS_MIRROR")
    if mirror and url.startswith(TV_HOST):
        url = mirror.rstrip("/") + "/" + url[len(TV_HOST):]
    pth = download_verified(url, _torch_cache() / Path(w.url).name)
    return ResolvedWeights(pth_to_safetensors(pth), f"torchvision {arch}.{w.name} ({w.url})", _tv_preprocessing(w),
                           {"hash_checked": True})


def _torch_cache() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _hash_prefix(name: str) -> str:
    """torchvision names files <arch>-<first hex digits of their SHA-256>.pth."""
    stem = Path(name).name.split(".")[0]
    prefix = stem.rsplit("-", 1)[-1] if "-" in stem else ""
    if len(prefix) < 8 or any(c not in "0123456789abcdef" for c in prefix):
        raise WeightsCorrupted(f"'{name}' carries no hash in its name, so it cannot be verified; refusing to read it")
    return prefix


def download_verified(url: str, dest: Path) -> Path:
    """`dest` if it is there and its hash checks, else `url` downloaded to it and checked first.

    A file that fails the check is deleted (the cached copy as well) and nothing is returned."""
    prefix = _hash_prefix(dest.name)
    if dest.is_file():
        if sha256_file(dest).startswith(prefix):
            return dest
        dest.unlink()  # a corrupt cached copy: fetch it again
    if _offline():
        raise WeightsUnavailable(f"offline (HF_HUB_OFFLINE) and '{dest.name}' is not cached: download {url} on a "
                                 f"connected machine and put it at {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)
    except (urllib.error.URLError, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise WeightsUnavailable(f"cannot download {url} ({e}); fetch it on a connected machine and put it at "
                                 f"{dest}") from None
    got = sha256_file(tmp)
    if not got.startswith(prefix):
        tmp.unlink()
        raise WeightsCorrupted(f"{url}: SHA-256 {got[:16]}... does not match the {prefix} in its name (truncated or "
                               "tampered download); nothing was loaded")
    os.replace(tmp, dest)
    return dest


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def pth_to_safetensors(pth: Path) -> Path:
    """The safetensors copy of a hash-verified torchvision .pth (made once, then reused)."""
    out = pth.with_suffix(".safetensors")
    if out.is_file():
        return out
    import torch

    if tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) < (2, 6):
        raise WeightsCorrupted(f"reading '{pth}' needs torch >= 2.6 (CVE-2025-32434 fixed its weights_only loader); "
                               f"this is torch {torch.__version__}. Convert it on a newer torch with `foveal convert "
                               f"{pth} {out}`, or upgrade")
    try:
        obj = torch.load(pth, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses any object that is not a tensor or a plain container
        raise WeightsCorrupted(f"'{pth}' is not a plain state_dict ({type(e).__name__}: {str(e)[:200]}); "
                               "refusing it, nothing was loaded") from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsCorrupted(f"'{pth}' does not hold a state_dict (a mapping of names to tensors)")
    from ..io import save_tensors

    save_tensors(out, obj, {"converted_from": pth.name, "sha256": sha256_file(pth)})
    return out


# ---- timm / the Hugging Face hub ----------------------------------------------------------------

def _timm_default(name: str) -> ResolvedWeights:
    try:
        import timm
    except ImportError as e:
        raise ImportError("timm/ models need the timm package: `pip install timm`") from e
    cfg = timm.models.get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        raise WeightsUnavailable(f"timm publishes no hub weights for '{name}' (try `timm.list_pretrained('{name}*')` "
                                 "and --pretrained hf-hub:timm/<name>.<tag>)")
    return _from_hub(repo, cfg.to_dict())


def _hub_file(repo: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, endpoint=os.environ.get("HF_ENDPOINT") or None,
                                    local_files_only=_offline()))
    except Exception as e:  # offline, no network, missing repo or file: one clear message
        hint = ("offline (HF_HUB_OFFLINE) and not cached" if _offline() else f"{type(e).__name__}: {str(e)[:300]}")
        raise WeightsUnavailable(f"cannot fetch '{filename}' of hub repository '{repo}' ({hint}); on a connected "
                                 f"machine run `huggingface-cli download {repo} {filename}` with the same HF_HOME, "
                                 "or download it and pass --pretrained FILE.safetensors") from None


def _from_hub(repo: str, pretrained_cfg: Optional[dict] = None) -> ResolvedWeights:
    path = _hub_file(repo, "model.safetensors")
    if pretrained_cfg is None:
        import json

        try:
            pretrained_cfg = json.loads(_hub_file(repo, "config.json").read_text()).get("pretrained_cfg", {})
        except (WeightsUnavailable, ValueError):
            pretrained_cfg = {}
    return ResolvedWeights(path, f"hub {repo}", Preprocessing.from_timm(pretrained_cfg))
