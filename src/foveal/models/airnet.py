"""AirNet: the compact VGG-like speedrun network of the public CIFAR-10 speedruns
(Page 2018; Jordan 2024, arXiv 2404.00498), written from the published description.

Layout: a patch-whitening conv (k x k with k = 2 for colour, 3 for grey; no padding, 2*k*k*C filters: the whitened patch
basis and its negation, fixed after `init_whitening`; only its bias trains, early on), GELU,
then three groups conv3 - maxpool2 - BN - GELU - conv3 - BN - GELU, a global max-pool and a
bias-free linear head whose logits are scaled by `1 / 9` (a temperature that keeps the
initial logits small, as in the speedruns). Batch norms have their scale frozen at 1 (only
the shift trains), which the speedruns found to be as good and cheaper.

Any channel count and input size works: the whitening basis is computed from the data
(`init_whitening(images)`), and the global max-pool replaces the fixed 3x3 pool of the
32-px original, so 28-px MNIST-like inputs (27 -> 13 -> 6 -> 3 px) and 16-px toys run.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FovealModel
from .registry import register_model


class FrozenScaleBN(nn.BatchNorm2d):
    """BatchNorm whose scale is fixed at 1; the shift is its only learned parameter."""

    def __init__(self, num_features: int, momentum: float = 0.6, eps: float = 1e-12):
        super().__init__(num_features, eps=eps, momentum=1 - momentum)
        self.weight.requires_grad_(False)


class ConvGroup(nn.Sequential):
    """conv3 - maxpool2 - BN - GELU - conv3 - BN - GELU: (B, c_in, H, W) -> (B, c_out, H/2, W/2)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding="same", bias=False), nn.MaxPool2d(2),
            FrozenScaleBN(c_out), nn.GELU(),
            nn.Conv2d(c_out, c_out, 3, padding="same", bias=False), FrozenScaleBN(c_out), nn.GELU(),
        )
        for conv in (self[0], self[4]):  # identity-like init of the first c_in filters (speedrun "dirac" init)
            w = conv.weight.data
            torch.nn.init.dirac_(w[:w.size(1)])


class AirNet(FovealModel):
    classifier_name = "head"
    cam_layer = "features.3"  # the last conv group's output, (B, widths[2], h, w)

    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size: int = 32, drop_rate: float = 0.0,
                 widths: tuple[int, int, int] = (64, 256, 256), whiten_kernel: int | None = None,
                 logit_scale: float = 1 / 9):
        super().__init__(num_classes, in_chans, img_size, drop_rate)
        # 2x2 patches for colour (12-d, as in the speedruns); 3x3 for grey, so the basis has 9 directions, not 4.
        k = whiten_kernel or (2 if in_chans > 1 else 3)
        whiten = nn.Conv2d(in_chans, 2 * k * k * in_chans, k, padding=0, bias=True)
        whiten.weight.requires_grad_(False)  # set by init_whitening; only the bias trains
        self.features = nn.Sequential(
            nn.Sequential(whiten, nn.GELU()),
            ConvGroup(whiten.out_channels, widths[0]),
            ConvGroup(widths[0], widths[1]),
            ConvGroup(widths[1], widths[2]),
        )
        self.num_features = widths[2]
        self.logit_scale = logit_scale
        self.head = nn.Linear(widths[2], num_classes, bias=False) if num_classes > 0 else nn.Identity()

    @property
    def whiten(self) -> nn.Conv2d:
        # Reached through `features` only: registering it twice would save the same tensor under two
        # names, which safetensors refuses (shared memory).
        return self.features[0][0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, widths[2], h, w)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # Global max-pool, (B, C); the logit scale is applied here so the head stays a plain linear
        # layer (head(x * s) == head(x) * s without a bias).
        x = x.amax(dim=(2, 3)) * self.logit_scale
        x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.head(x)

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh bias-free head for `num_classes` (0: identity), as the family is built."""
        device = next(self.parameters()).device
        self.head = nn.Linear(self.num_features, num_classes, bias=False).to(device) if num_classes > 0 else nn.Identity()
        self.num_classes = num_classes

    def init_from_data(self, images: torch.Tensor) -> None:
        self.init_whitening(images)

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the whitening filters from (N, C, H, W) float training images (normalized as in training).

        Every k x k patch is a point in C*k*k dimensions; the filters are the eigenvectors of the
        patch covariance scaled by 1/sqrt(eigenvalue + eps), plus their negations (so GELU
        passes both signs). The first conv then sees decorrelated, unit-variance patches.
        """
        k, c = self.whiten.kernel_size[0], self.whiten.in_channels
        if images.ndim != 4 or images.shape[1] != c:
            raise ValueError(f"init_whitening needs (N, {c}, H, W) images, got shape {tuple(images.shape)}")
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H', W', k, k)
        patches = patches.transpose(1, 3).reshape(-1, c * k * k).double()  # (N*H'*W', C*k*k)
        patches = patches - patches.mean(0)
        cov = patches.T @ patches / len(patches)
        eigval, eigvec = torch.linalg.eigh(cov)  # ascending
        eigval, eigvec = eigval.flip(0), eigvec.T.flip(0)  # (D,), (D, D): one filter per row
        filters = (eigvec / (eigval + eps).sqrt()[:, None]).view(-1, c, k, k)  # (D, C, k, k), patch order (C, kh, kw)
        w = torch.cat([filters, -filters]).to(self.whiten.weight)
        self.whiten.weight.copy_(w)


def _airnet(widths: tuple[int, int, int], chans: int, size: int, **kw) -> AirNet:
    """An AirNet of `widths`; `chans` and `size` are the variant's defaults of in_chans and img_size."""
    kw = {"num_classes": 10, "in_chans": chans, "img_size": size, **kw}
    kw.pop("drop_path_rate", None)  # no residual blocks
    return AirNet(widths=widths, **kw)


@register_model(family="airnet", default_img_size=32, min_img_size=16)
def airnet94(**kw):
    """The airbench94-sized net (widths 64/256/256; 2x2 whitening for colour): ~2M parameters."""
    return _airnet((64, 256, 256), 3, 32, **kw)


@register_model(family="airnet", default_img_size=28, min_img_size=16)
def airnet_mnist(**kw):
    """The airbench94-sized net meant for 1-channel 28-px MNIST / Fashion-MNIST (3x3 whitening: 18 filters)."""
    return _airnet((64, 256, 256), 1, 28, **kw)


@register_model(family="airnet", default_img_size=28, min_img_size=16)
def airnet_small(**kw):
    """Half the airbench94 widths (32/128/128): ~1/3 of its cost, for CPU-budget recipes (Fashion-MNIST in minutes)."""
    return _airnet((32, 128, 128), 1, 28, **kw)


@register_model(family="airnet", default_img_size=28, min_img_size=16)
def airnet_tiny(**kw):
    """A narrow variant (widths 16/32/32) for CPU tests and smoke runs."""
    return _airnet((16, 32, 32), 1, 28, **kw)
