"""The model card: everything a trained model's weights need to be used, saved with them.

As torchvision's `Weights` (meta + `transforms()`) and timm's `pretrained_cfg`, one typed record
says what the model is (architecture, classes, input channels), how an image becomes its input
(`Preprocessing`: size, resize rule, crop fraction, mean/std) and how its outputs become predictions
(test-time views, softmax temperature). It is the JSON inside every foveal safetensors file and
every exported ONNX model: `to_dict` writes the keys foveal has always written (so older versions
read new files) and `from_dict` reads them back, files written before the card existed included.
This module is the only one that reads that JSON by key; everything else reads attributes.

Torch-free: the inference install (ONNX Runtime, no torch) reads the cards of exported models.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional

WEIGHTS_FORMAT = "foveal-weights/1"  # a foveal safetensors file (run folders' best/last, Classifier.save)
ONNX_FORMAT = "foveal-onnx/1"  # an exported model (metadata_props and its .onnx.json sidecar)
# The keys an exported model carries: the card without the training config (temperature and format added)
_PORTABLE = ("model", "classes", "in_chans", "img_size", "resize", "crop_pct", "mean", "std", "tta", "foveal_version")
_PRE_KEYS = ("img_size", "resize", "crop_pct", "mean", "std")  # Preprocessing's fields as stored, flat


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model's input: the eval transform of torchvision's `Weights.transforms()`
    and timm's `pretrained_cfg` (resize, centre crop, normalize), for foveal's weights and published ones."""

    mean: tuple[float, ...]  # per channel, in [0, 1] pixel units
    std: tuple[float, ...]
    img_size: int  # px: the square input side
    crop_pct: float = 1.0  # 'crop': the centre square's side as a fraction of the shorter side
    resize: Literal["squash", "crop"] = "squash"  # squash to img_size, or shorter side + centre crop
    interpolation: str = "bilinear"  # the publisher's resampling, for the record (foveal's decoder has its own)

    def __post_init__(self) -> None:  # JSON and configs hand lists; a frozen card holds tuples
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @classmethod
    def from_timm(cls, cfg: Mapping[str, Any]) -> Optional["Preprocessing"]:
        """What timm's `pretrained_cfg` (as a dict) publishes for its weights; None when it gives no mean/std.
        Its eval transform: shorter side to size / crop_pct, centre crop (0.875 when the cfg names none)."""
        if not cfg.get("mean") or not cfg.get("std"):
            return None
        size = cfg.get("input_size") or (3, 224, 224)
        crop_pct = float(cfg.get("test_crop_pct") or cfg.get("crop_pct") or 0.875)
        return cls(cfg["mean"], cfg["std"], int(size[-1]), crop_pct, "crop", str(cfg.get("interpolation") or "bicubic"))


@dataclass(frozen=True)
class ModelCard:
    """What a trained model is and how to use it; `foveal.training.checkpoint` saves one with the weights."""

    model: str  # registered model name (foveal.models)
    classes: tuple[str, ...]  # output index -> class name; () for a backbone without a classifier (pretraining)
    in_chans: int
    preprocessing: Preprocessing
    tta: tuple[str, ...] = ()  # test-time views predictions average (foveal.training.tta)
    temperature: float = 1.0  # softmax temperature fitted on the validation split; 1.0: not calibrated
    epoch: Optional[int] = None  # the training epoch of these weights
    config: Mapping[str, Any] = field(default_factory=dict)  # the run's RunConfig as saved (config.to_dict)
    foveal_version: str = "?"
    torch_version: str = "?"
    extra: Mapping[str, Any] = field(default_factory=dict)  # any other key, kept as read (ssl, precision...)

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "tta", tuple(self.tta))

    @property
    def data_source(self) -> Optional[str]:
        """The data the run trained on (a dataset name, folder or CSV), from its saved config."""
        return self.config.get("data", {}).get("source")

    @property
    def seed(self) -> Optional[int]:
        """The run's seed, which also fixed its splits; None when the card has no training config."""
        seed = self.config.get("train", {}).get("seed")
        return None if seed is None else int(seed)

    def data_config(self) -> Any:
        """The run's DataConfig (typed, checked) as saved with the weights."""
        from .config import DataConfig, from_dict

        return from_dict(self.config.get("data", {}), DataConfig)

    def model_kwargs(self) -> dict[str, Any]:
        """The saved model settings `create_model` takes besides name, classes, channels and size."""
        saved = self.config.get("model", {})
        return {k: saved[k] for k in ("drop_rate", "drop_path_rate") if k in saved}

    def replace(self, **changes: Any) -> "ModelCard":
        """A copy with `changes` (fields of the card or of its preprocessing)."""
        pre = {k: changes.pop(k) for k in list(changes) if k in _PRE_KEYS}
        if pre:
            changes["preprocessing"] = dataclasses.replace(self.preprocessing, **pre)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON stored with the weights, keys as foveal has always written them."""
        p = self.preprocessing
        out: dict[str, Any] = {
            "format": WEIGHTS_FORMAT, "foveal_version": self.foveal_version, "torch_version": self.torch_version,
            "model": self.model, "classes": list(self.classes), "in_chans": self.in_chans, "img_size": p.img_size,
            "resize": p.resize, "crop_pct": p.crop_pct, "mean": list(p.mean), "std": list(p.std),
            "config": dict(self.config), "tta": list(self.tta)}
        if self.epoch is not None:
            out["epoch"] = self.epoch
        out["temperature"] = self.temperature
        return {**out, **self.extra}

    def portable(self) -> dict[str, Any]:
        """What an exported model carries: the card without its training config, as ONNX metadata."""
        full = self.to_dict()
        return {**{k: full[k] for k in _PORTABLE}, "format": ONNX_FORMAT, "temperature": self.temperature}

    def public(self) -> dict[str, Any]:
        """The fields a client of the HTTP server sees (`GET /metadata`)."""
        full = self.to_dict()
        return {k: full[k] for k in _PORTABLE[:-1] + ("temperature",)}

    @staticmethod
    def describes(d: Mapping[str, Any]) -> bool:
        """Whether metadata `d` (a safetensors header's or an ONNX model's) is a foveal model card."""
        return d.get("format") in (WEIGHTS_FORMAT, ONNX_FORMAT)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelCard":
        """The card in metadata `d`, as any foveal version wrote it (keys added since default: no test-time
        views, temperature 1, crop fraction 1, 'squash'); keys the card does not know go to `extra`."""
        if not cls.describes(d):
            raise ValueError(f"not a foveal model card (format {d.get('format')!r}, keys {sorted(d)[:8]})")
        pre = Preprocessing(d["mean"], d["std"], int(d["img_size"]), float(d.get("crop_pct") or 1.0),
                            d.get("resize") or "squash")
        known = {"format", "foveal_version", "torch_version", "model", "classes", "in_chans", "config", "tta",
                 "epoch", "temperature", *_PRE_KEYS}
        return cls(d["model"], tuple(d["classes"]), int(d["in_chans"]), pre, tuple(d.get("tta") or ()),
                   float(d.get("temperature", 1.0)), d.get("epoch"), dict(d.get("config") or {}),
                   str(d.get("foveal_version", "?")), str(d.get("torch_version", "?")),
                   {k: v for k, v in d.items() if k not in known})
