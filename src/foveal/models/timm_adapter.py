"""`timm/<name>` models under foveal's model contract (optional: needs timm installed).

``create_model("timm/convnext_nano", ...)`` builds timm's model (no pretrained download: load
weights with ``pretrained=`` as for any model) and wraps it so training, export and
explanations see the usual contract. ``cam_layer`` is best effort: timm's last feature
module for CNNs, the last block for models with ``blocks`` (ViT-like, tokens).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import FovealModel


class TimmModel(FovealModel):
    """A timm model held as ``self.model``; contract methods forward to timm's own."""

    def __init__(self, model: nn.Module, num_classes: int, in_chans: int, img_size: int, drop_rate: float):
        super().__init__(num_classes, in_chans, img_size, drop_rate)
        self.model = model
        self.num_features = model.num_features
        self.num_prefix_tokens = getattr(model, "num_prefix_tokens", 0)
        self.classifier_name = "model." + _module_name(model, model.get_classifier())
        self.cam_layer = "model." + _cam_layer(model)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.model.forward_head(x, pre_logits=pre_logits)

    def get_classifier(self) -> nn.Module:
        return self.model.get_classifier()

    def reset_classifier(self, num_classes: int) -> None:
        self.model.reset_classifier(num_classes)
        self.classifier_name = "model." + _module_name(self.model, self.model.get_classifier())
        self.num_classes = num_classes

    def layer_ids(self) -> dict[str, int]:
        """timm's own parameter groups (`group_matcher`: stem, each block, head), so layer decay
        and gradual unfreezing see the network's depth rather than one backbone group."""
        from timm.models import group_parameters

        try:
            groups = group_parameters(self.model, self.model.group_matcher(coarse=False))
        except (AttributeError, NotImplementedError):  # a model without a group matcher
            return super().layer_ids()
        ids = {f"model.{n}": depth for depth, names in groups.items() for n in names}
        top = max(ids.values(), default=0)
        head = self.classifier_name + "."
        return {n: (top + 1 if n.startswith(head) else ids.get(n, top)) for n, _ in self.named_parameters()}

    def remap_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A timm state_dict (keys without our ``model.`` prefix) gets the prefix."""
        return {k if k.startswith("model.") else f"model.{k}": v for k, v in sd.items()}


def _module_name(root: nn.Module, target: nn.Module) -> str:
    return next(name for name, m in root.named_modules() if m is target)


def _cam_layer(model: nn.Module) -> str:
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Sequential) and len(blocks) and not hasattr(model, "feature_info"):
        return f"blocks.{len(blocks) - 1}"
    info = getattr(model, "feature_info", None)
    if info:
        last = info[-1] if isinstance(info, list) else info.get_dicts()[-1]
        return last["module"]
    return f"blocks.{len(blocks) - 1}" if isinstance(blocks, nn.Sequential) else ""


def create_timm_model(name: str, num_classes: int = 1000, in_chans: int = 3, img_size: int | None = None,
                      drop_rate: float = 0.0, drop_path_rate: float = 0.0, **kw: Any) -> TimmModel:
    """Build timm's `name` (randomly initialized) wrapped in the foveal contract.

    `img_size` goes to models that take it (ViT-like); CNNs accept any size anyway.
    """
    try:
        import timm
    except ImportError as e:
        raise ImportError(f"model 'timm/{name}' needs the timm package, which is not installed: "
                          f"`pip install timm`, or pick one of foveal's own models (`foveal models`)") from e
    args = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, drop_path_rate=drop_path_rate, **kw)
    try:
        model = timm.create_model(name, pretrained=False, **args, **({"img_size": img_size} if img_size else {}))
    except TypeError:  # this architecture takes no img_size
        model = timm.create_model(name, pretrained=False, **args)
    size = img_size or model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
    return TimmModel(model, num_classes, in_chans, size, drop_rate)
