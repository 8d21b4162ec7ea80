"""The model contract every architecture in foveal follows.

Code outside `foveal.models` touches a network only through this contract, so a new
family works in training, export, explanations and robustness at once:

- ``forward_features(x)``: (B, C, H, W) images -> features: a (B, C', h, w) map for CNNs,
  (B, N, D) tokens for transformers.
- ``forward_head(f, pre_logits=False)``: features -> (B, num_features) pooled vector, or
  (B, num_classes) logits.
- ``get_classifier()`` / ``reset_classifier(num_classes)``: the final linear layer, replaced
  for a new label set (transfer learning).
- ``cam_layer``: dotted name of the module whose output explanations hook (Grad-CAM):
  the last spatial feature map, or the last token block for transformers.
- ``classifier_name``: dotted name of the final linear layer, for weight loading.
- ``num_classes``, ``in_chans``, ``num_features``, ``img_size``.
"""

from __future__ import annotations

import torch
from torch import nn

# Inputs below this side (px) use each family's small-input stem (e.g. the CIFAR form of
# ResNet: 3x3 stride-1 stem, no max-pool), so 28-64 px images keep their resolution.
SMALL_INPUT_MAX = 96


def is_small_input(img_size: int) -> bool:
    """True when `img_size` should use a family's small-input stem."""
    return img_size < SMALL_INPUT_MAX


class FovealModel(nn.Module):
    """Base class: global-average-pool + dropout + linear head over a feature map.

    Families with another head (token pooling, MLP classifiers) override ``forward_head``
    and set ``classifier_name``.
    """

    cam_layer: str = ""
    classifier_name: str = "head"

    def __init__(self, num_classes: int, in_chans: int, img_size: int, drop_rate: float = 0.0):
        super().__init__()
        if num_classes < 0 or in_chans < 1:
            raise ValueError(f"num_classes={num_classes}, in_chans={in_chans}: need num_classes >= 0 and in_chans >= 1")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.img_size = img_size
        self.drop_rate = drop_rate
        self.num_features = 0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3)) if x.ndim == 4 else x  # (B, C, h, w) -> (B, C)
        x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def init_from_data(self, images: torch.Tensor) -> None:
        """Data-dependent initialization from (N, C, H, W) normalized training images; most families need none.

        The trainer calls it once on a fresh model (not when fine-tuning or resuming).
        """

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.classifier_name)

    def tokens_to_map(self, tokens: torch.Tensor, image_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, P + h*w, D) tokens (e.g. the ``cam_layer`` output of a transformer) -> (B, D, h, w) map.

        Drops the ``num_prefix_tokens`` leading tokens (class / register tokens) and lays the
        rest out row-major on the patch grid, whose aspect follows `image_hw` (square if None).
        Explanations use it to treat a token grid like a CNN feature map.
        """
        prefix = int(getattr(self, "num_prefix_tokens", 0))
        t = tokens[:, prefix:]  # (B, h*w, D)
        n = t.shape[1]
        ratio = image_hw[0] / image_hw[1] if image_hw else 1.0
        h = max(1, round((n * ratio) ** 0.5))
        while n % h:  # the nearest divisor: grids are exact, this only settles rounding
            h -= 1
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, n // h)

    def layer_ids(self) -> dict[str, int]:
        """Depth of every parameter: 0 for the stem, increasing toward the output, the classifier last.

        Layer-wise learning-rate decay and gradual unfreezing order parameters by it. The default
        (see `default_layer_ids`) fits families built as a stem, a sequence of blocks and a head;
        families laid out otherwise override it.
        """
        return default_layer_ids(self, self.classifier_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final linear layer with a fresh one for `num_classes` (0: identity)."""
        old = self.get_classifier()
        in_features = old.in_features if isinstance(old, nn.Linear) else self.num_features
        new = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()
        parent_name, _, leaf = self.classifier_name.rpartition(".")
        parent = self.get_submodule(parent_name) if parent_name else self
        setattr(parent, leaf, new.to(next(self.parameters()).device))
        self.num_classes = num_classes


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def transform_to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """(x * std + mean) * 2 - 1 per channel: ImageNet-normalized RGB -> [-1, 1]."""
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    return (x * std + mean - 0.5) / 0.5


class AuxLogitsModel(FovealModel):
    """A CNN with optional auxiliary classifiers on intermediate maps (GoogLeNet, Inception-v3).

    Subclasses set `aux_logits` and `transform_input` (map ImageNet-normalized input to the
    [-1, 1] range of torchvision's ported weights), define `_features(x, with_aux)` ->
    (features, [auxiliary logits]) and name the auxiliary heads' state_dict prefixes in
    `aux_prefixes`. `forward` returns the logits alone; `forward_aux` also the auxiliary ones,
    for the papers' weighted auxiliary loss.
    """

    aux_prefixes: tuple[str, ...] = ()
    aux_logits: bool = False
    transform_input: bool = False

    def _features(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        raise NotImplementedError

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return transform_to_unit_range(x) if self.transform_input else x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(self._input(x), with_aux=False)[0]

    def forward_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits, [auxiliary logits, shallowest first]); the list is empty without auxiliary heads."""
        feats, aux = self._features(self._input(x), with_aux=True)
        return self.forward_head(feats), aux

    def init_normal(self, std: float) -> None:
        """Convolution and linear weights ~ N(0, std^2), the papers' init."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                # trunc_normal_ with its +-2 bounds never truncates at this std; normal_ is ~10x faster
                nn.init.normal_(m.weight, std=std)

    def remap_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Drop the auxiliary heads' tensors when this model has none (they only serve training)."""
        if self.aux_logits:
            return sd
        return {k: v for k, v in sd.items() if not k.startswith(self.aux_prefixes)}


def needs_data_init(model: nn.Module) -> bool:
    """Whether `model` overrides `FovealModel.init_from_data` (so the Trainer must give it images)."""
    fn = getattr(type(model), "init_from_data", None)
    return fn is not None and fn is not FovealModel.init_from_data


def default_layer_ids(model: nn.Module, classifier_name: str = "head") -> dict[str, int]:
    """Parameter name -> depth, in registration order of the top-level children.

    A top-level `nn.Sequential` / `nn.ModuleList` (ResNet's stages, a ViT's `blocks`, LeNet's
    `features`) counts one depth per item, so a deep stack is not one flat group; every
    parameter of the classifier (`classifier_name`) gets the largest depth.
    """
    children = dict(model.named_children())
    group_of: dict[str, int] = {}
    ids: dict[str, int] = {}
    head = classifier_name + "."
    for name, _ in model.named_parameters():
        if name.startswith(head):
            continue
        parts = name.split(".")
        container = children.get(parts[0])
        key = ".".join(parts[:2]) if isinstance(container, (nn.Sequential, nn.ModuleList)) and len(parts) > 2 else parts[0]
        ids[name] = group_of.setdefault(key, len(group_of))
    top = len(group_of)
    ids.update({name: top for name, _ in model.named_parameters() if name.startswith(head)})
    return ids


def make_head(num_features: int, num_classes: int) -> nn.Module:
    """The final linear layer, or identity for feature extraction (num_classes=0)."""
    return nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()
